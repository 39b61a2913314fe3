"""glmv: run, serve, use and train the GLM-V family of vision-language models.

Public API (imported lazily so ``import glmv`` stays cheap):
    load_model, save_model       glmv.weights
    Processor                    glmv.inputs.processor
    LLM, SamplingParams          glmv.engine
    ImagePipeline                glmv.image.pipeline (GLM-Image; its DiT side needs the `image` extra)
    GlmvError and subclasses     glmv.errors
"""

from importlib import import_module

from glmv.errors import (
    CheckpointError,
    ConfigError,
    ContextLengthError,
    GlmvError,
    InputError,
    MediaTooLargeError,
)

__version__ = "0.1.0"

_LAZY = {
    "load_model": "glmv.weights",
    "save_model": "glmv.weights",
    "GlmvConfig": "glmv.config",
    "Processor": "glmv.inputs.processor",
    "LLM": "glmv.engine.llm",
    "SamplingParams": "glmv.engine.sampling",
    "ImagePipeline": "glmv.image.pipeline",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glmv' has no attribute {name!r}")


__all__ = [
    "CheckpointError", "ConfigError", "ContextLengthError", "GlmvError", "InputError", "MediaTooLargeError",
    *_LAZY,
]
