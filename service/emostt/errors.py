"""Named errors, and the one place that maps them to wire error codes and close codes."""

from __future__ import annotations


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
