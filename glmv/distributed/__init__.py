"""Multi-process glmv on torch.distributed's own engine: DeviceMesh, DTensor, tensor-parallel styles, FSDP2
(`fully_shard`) and distributed checkpoints (DCP). Nothing in glmv imports this package; it is applied to a loaded
model from outside (docs/scale.md; distributed_wiring.diff wires it into LLM, the CLI and `glmv train`).

    glmv.distributed.launch    process groups: `init_from_env` (torchrun), `spawn` (local processes, tests)
    glmv.distributed.parallel  inference: tensor-parallel attention / MLPs / vocabulary, expert-parallel experts
    glmv.distributed.serving   the engine over a sharded model: a driver process and its worker processes
    glmv.distributed.fsdp      training: FSDP2 per decoder layer, the data-parallel step, DCP save / resume,
                               export to one Hugging Face checkpoint
    glmv.distributed.trainer   the recipe Trainer over FSDP2 (what `torchrun ... glmv train` runs)
    glmv.distributed.scale     docs/scale.md's arithmetic (`python -m glmv.distributed.scale`)
    glmv.distributed.testing   the multi-process checks tests/distributed spawns
"""
