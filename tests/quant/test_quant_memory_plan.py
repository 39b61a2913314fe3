"""`LLM(memory=...)` / `--memory`: the plan glmv.plan computes is what the loader applies."""

from __future__ import annotations

import pytest
import torch

from glmv import LLM, SamplingParams
from glmv.errors import ConfigError
from glmv.quant.modules import QuantExperts, QuantLinear
from glmv.testing.tiny_checkpoint import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("plan") / "m", "glm4v_moe")


def test_a_budget_that_holds_the_model_loads_it_in_bf16_with_the_planned_kv_cache(tiny):
    llm = LLM(tiny, memory="2GiB", progress=False)
    assert llm.model.dtype == torch.bfloat16  # the plan's dtype, not the CPU default (fp32)
    assert not any(isinstance(m, (QuantLinear, QuantExperts)) for m in llm.model.modules())
    out = llm.generate([[10, 11, 12]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 3


def test_a_budget_nothing_fits_names_what_was_tried(tiny):
    with pytest.raises(ConfigError, match="does not fit") as e:
        LLM(tiny, memory="512MiB", progress=False)
    assert "bf16" in str(e.value)


def test_the_plans_formats_are_what_load_model_applies(tiny):
    """The quantise/offload part of a plan, as an 80 GB GPU's plan for GLM-4.5V would give it, applied to the tiny
    checkpoint through the same load_kwargs."""
    from glmv.config import GlmvConfig
    from glmv.plan import plan_memory
    from glmv.weights import load_model

    plan = plan_memory(GlmvConfig.from_pretrained(tiny), "cpu", 2 * 2**30)
    plan.formats.update(routed_experts="int4", attention="int8")
    plan.offload_layers = [1]
    model = load_model(tiny, progress=False, **plan.load_kwargs())
    assert isinstance(model.language_model.layers[1].mlp.experts, QuantExperts)
    assert isinstance(model.language_model.layers[0].self_attn.q_proj, QuantLinear)
    assert not isinstance(model.language_model.layers[0].mlp.down_proj, QuantLinear)
