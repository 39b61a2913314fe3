"""One exception hierarchy for everything glmv raises on purpose.

The server maps these to OpenAI-style error bodies (``http_status`` and ``code``), so every message says what
was wrong and what to do about it.
"""


class GlmvError(Exception):
    """Base class of every error glmv raises deliberately."""

    http_status = 500
    code = "internal_error"


class ConfigError(GlmvError):
    """config.json (or another config file) is missing a field, has a bad value, or names an unknown model."""

    http_status = 400
    code = "invalid_config"


class CheckpointError(GlmvError):
    """A checkpoint directory or file is missing, corrupt, truncated, or does not match the model."""

    http_status = 400
    code = "invalid_checkpoint"


class InputError(GlmvError):
    """A request's input (messages, media, sampling parameters) is malformed, unsafe or over a limit."""

    http_status = 400
    code = "invalid_request_error"


class MediaTooLargeError(InputError):
    """Media over a byte, pixel, frame or duration limit."""

    http_status = 413
    code = "media_too_large"


class ContextLengthError(InputError):
    """The prompt (plus the requested tokens) does not fit the model's context."""

    code = "context_length_exceeded"
