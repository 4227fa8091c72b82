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


# Set to 1 to get the traceback of an unexpected error instead of its one line (for a bug report).
DEBUG_ENV = "PIPELINE_DEBUG"


def one_line(exc: BaseException) -> str:
    """The line a user sees for any exception: a PipelineError's own message; for anything else (a runtime's or a
    tool's own error, a bug) the package that raised it, the exception type and the first line of its message,
    e.g. "onnxruntime InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model ... failed"."""
    if isinstance(exc, PipelineError):
        return str(exc)
    origin = type(exc).__module__.partition(".")[0]
    kind = type(exc).__name__ if origin == "builtins" else f"{origin} {type(exc).__name__}"
    text = str(exc).strip()
    first = text.splitlines()[0][:300] if text else "no message"
    return f"{kind}: {first}"


def fail(exc: Exception) -> int:
    """What every entry point does with an error that ends it: print `error: <one line>` (`one_line`) to stderr
    and return exit code 1. With PIPELINE_DEBUG=1 an exception that is not a PipelineError is re-raised instead,
    traceback and all, for a bug report."""
    import os
    import sys

    if os.environ.get(DEBUG_ENV) == "1" and not isinstance(exc, PipelineError):
        raise exc
    print(f"error: {one_line(exc)}", file=sys.stderr)
    return 1
