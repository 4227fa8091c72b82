"""Exceptions whose message is the one line a user sees: what is wrong and what to do."""


class PipelineError(Exception):
    """Base class: stage entry points print `error: <message>` and exit non-zero."""


class ConfigError(PipelineError):
    """A config value is unknown, out of range or inconsistent; the message names the key."""


class InputError(PipelineError):
    """A user-supplied file (checkpoint, ONNX) is missing, corrupt or does not fit the variant."""


class RuntimeMissingError(PipelineError):
    """A backend's runtime package is not installed or its hardware is absent."""


class VerificationError(PipelineError):
    """An artifact's outputs breached a tolerance against the PyTorch reference."""
