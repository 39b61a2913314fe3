"""A decode step reads no device values inside the model (G2 compiles / graph-captures it): the runner prepares
every tensor on the host, the paged cache gives its mask, the MoE runs grouped GEMMs from device offsets.
Checked by making every host read of a tensor raise while the model runs a one-token step."""

from __future__ import annotations

import contextlib

import pytest
import torch

from glmv import LLM, SamplingParams
from glmv.testing.tiny_checkpoint import make_tiny_model_dir

HOST_READS = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy")


@contextlib.contextmanager
def no_host_reads():
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def refuse(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"the model read a device value: Tensor.{name}")
        return read

    for name in HOST_READS:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_decode_steps_read_no_device_values(tmp_path, monkeypatch, backend):
    llm = LLM(make_tiny_model_dir(tmp_path / "tiny"), progress=False, attention_backend=backend,
              kv_cache_memory="1MiB")
    forward, decode_steps = llm.model.forward, []

    def guarded(input_ids, *args, **kwargs):
        if input_ids.shape[1] > 1:  # prefill: media placeholders are counted against features there
            return forward(input_ids, *args, **kwargs)
        decode_steps.append(input_ids.shape[0])
        with no_host_reads():
            return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(llm.model, "forward", guarded)
    conversations = [[{"role": "user", "content": "Hello there"}], [{"role": "user", "content": "How are you?"}]]
    out = llm.chat(conversations, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert [len(o.outputs[0].token_ids) for o in out] == [4, 4] and decode_steps and max(decode_steps) == 2
