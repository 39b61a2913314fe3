"""--compile / --no-compile / --compile-mode: what LLM(...) receives from each command's flags (a server compiles by
default, one-off commands do not; --compile-mode max-autotune compiles)."""

from __future__ import annotations

import pytest
import torch

from glmv.cli import build_parser
from glmv.commands._common import engine_kwargs
from glmv.errors import InputError


def compile_kwargs(*argv: str) -> tuple[bool, str]:
    threads = ["--threads", str(torch.get_num_threads())]  # engine_kwargs applies it: keep the test's own
    kwargs = engine_kwargs(build_parser().parse_args([*argv, *threads]))
    return kwargs["compile"], kwargs["compile_mode"]


@pytest.mark.parametrize("argv, want", [
    (["serve"], (True, "default")),
    (["serve", "--no-compile"], (False, "default")),
    (["serve", "--compile-mode", "max-autotune"], (True, "max-autotune")),
    (["run", "hi"], (False, "default")),
    (["run", "--compile", "hi"], (True, "default")),
    (["run", "--compile-mode", "max-autotune", "hi"], (True, "max-autotune")),
    (["run", "--compile", "--compile-mode", "default", "hi"], (True, "default")),
])
def test_compile_flags(argv, want):
    assert compile_kwargs(*argv) == want


def test_no_compile_with_a_compile_mode_is_refused():
    with pytest.raises(InputError, match="--compile-mode compiles the decode step"):
        compile_kwargs("serve", "--no-compile", "--compile-mode", "max-autotune")
