"""Where a model comes from: a checkpoint directory, or the bundled nano GLM-V when none is named."""

from __future__ import annotations

from pathlib import Path

from glmv.errors import ConfigError

BUNDLED = Path(__file__).parent / "assets" / "nano"


def resolve_model_path(model: str | Path | None) -> Path:
    """A local checkpoint directory for `model` (None or "nano": the bundled model). Never downloads."""
    if model is None or str(model) == "nano":
        if (BUNDLED / "config.json").is_file():
            return BUNDLED
        raise ConfigError(
            "no model given and the bundled nano GLM-V is not installed in this copy of glmv; "
            "pass a checkpoint directory (config.json + *.safetensors + tokenizer.json), e.g. --model /path/to/GLM-4.5V"
        )
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"model {str(model)!r} is not a local directory; glmv loads checkpoints from disk only "
            "(download the Hugging Face repository first and pass its path)"
        )
    return path
