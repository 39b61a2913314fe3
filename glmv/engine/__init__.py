"""Generation: sampling parameters and sampler, the batched decode loop, streaming detokenization, stop strings,
and vLLM-shaped outputs with GLM-V's reasoning / boxed-answer / box parsing. Import the submodules directly."""
