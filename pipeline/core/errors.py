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
MESSAGE_CHARS = 450  # of a foreign exception's message, in one line


def one_line(exc: BaseException) -> str:
    """The line a user sees for any exception: a PipelineError's own message; for anything else (a runtime's or a
    tool's own error, a bug) the exception type (with its package where that is not Python's) and its message on
    one line. Runtimes put the cause last (OpenVINO: "Exception from src/inference/src/cpp/core.cpp:84:" then the
    check that failed, then the parse error), so the lines are joined and a long message keeps its head and tail."""
    if isinstance(exc, PipelineError):
        return str(exc)
    origin = type(exc).__module__.partition(".")[0]
    kind = type(exc).__name__ if origin == "builtins" else f"{origin} {type(exc).__name__}"
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or "no message"
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS // 3] + " … " + text[-(MESSAGE_CHARS * 2 // 3):]
    return f"{kind}: {text}"


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
