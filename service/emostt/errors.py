"""Named errors, and the one place that maps them to wire error codes and close codes."""

from __future__ import annotations

from typing import Any, Protocol


class EmosttError(Exception):
    """Base class: ``code`` is the stable machine-readable error code sent to clients."""

    code = "internal_error"
    retryable = False


class ModelLoadError(EmosttError):
    """The model could not be loaded; the message says what to pass instead."""

    code = "model_load_failed"


class InvalidAudioError(EmosttError):
    """Audio that cannot be decoded or is not usable (empty, wrong shape, unreadable file)."""

    code = "invalid_audio"


class InferenceError(EmosttError):
    """The engine failed on a batch."""

    code = "inference_failed"
    retryable = True


class OutOfMemoryError(InferenceError):
    """The device ran out of memory; the batch may succeed when split."""

    code = "out_of_memory"


class ProtocolError(EmosttError):
    """A client message the protocol does not accept; the session goes on."""

    code = "invalid_message"


class UnknownMessageError(ProtocolError):
    code = "unknown_message_type"


class InvalidConfigError(ProtocolError):
    code = "invalid_config"


class _HasErrors(Protocol):
    def errors(self) -> list[Any]: ...


def validation_problem_list(exc: _HasErrors, root: str, *, prefixed: bool = False) -> list[tuple[str, str]]:
    """``(path, problem)`` for each problem of a pydantic ValidationError, never the value (a
    setting may be a secret).

    ``root`` names the object: the path of a problem with the whole of it, and the first part of
    every path when ``prefixed`` (``session_defaults.vad.threshold``). The one reading of a refused
    config for clients, settings and logs.
    """
    problems = []
    for error in exc.errors():
        path = ".".join([*([root] if prefixed else []), *map(str, error["loc"])]) or root
        problems.append((path, str(error["msg"]).removeprefix("Value error, ")))
    return problems


def validation_problems(exc: _HasErrors, root: str, *, prefixed: bool = False) -> str:
    """``<path>: <problem>; ...``: ``validation_problem_list`` as one line."""
    return "; ".join(
        f"{path}: {problem}" for path, problem in validation_problem_list(exc, root, prefixed=prefixed)
    )
