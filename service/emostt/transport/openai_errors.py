"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, with its HTTP status.

``message`` goes to the client as is: it never holds exception text from inside the server
(details are logged where the failure happens). Statuses and types follow OpenAI's API: 400/401/404/413
``invalid_request_error`` (401 with code ``invalid_api_key``, as OpenAI answers a bad key; a field
over its bound is 400 ``string_above_max_length`` naming that field, as OpenAI names it), 408
``invalid_request_error`` for an upload too slow or too long (OpenAI's SDKs retry 408), 429
``requests`` / ``rate_limit_exceeded`` or ``too_many_uploads``, 500/503 ``server_error``. 429 and 503
carry Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.responses import JSONResponse

from emostt.errors import EmosttError

RETRY_AFTER_S = 1


@dataclass
class OpenAIError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    # emostt_file_requests_total{outcome}
    outcome: str = "invalid_request"
    retry_after_s: int | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, close: bool = False) -> JSONResponse:
        """``close``: the request body was not read to its end, so the connection closes after this
        answer (``Connection: close``) instead of discarding whatever the client still sends: a
        client trickling the rest of a refused body would otherwise hold its socket for ever."""
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}
        if close:
            headers["Connection"] = "close"
        return JSONResponse(self.body(), status_code=self.status, headers=headers or None)


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, code=code, param=param)


def unauthorized(message: str) -> OpenAIError:
    return OpenAIError(401, message, code="invalid_api_key", outcome="unauthorized")


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404, f"The model {model!r} does not exist on this server", code="model_not_found", param="model"
    )


def too_large(limit_bytes: int) -> OpenAIError:
    """The ``file`` part grew past ``max_file_bytes`` while it was read."""
    return OpenAIError(
        413,
        f"The file is larger than this server accepts ({limit_bytes} bytes)",
        code="file_too_large",
        param="file",
        outcome="too_large",
    )


def request_too_large(limit_bytes: int) -> OpenAIError:
    """The whole body (its declared Content-Length, or the bytes counted) is over the limit: which
    part is large is not known, so no ``param`` (as OpenAI answers an oversized body)."""
    return OpenAIError(
        413,
        f"The request body is larger than this server accepts ({limit_bytes} bytes)",
        code="request_too_large",
        outcome="too_large",
    )


def field_too_long(name: str, limit_bytes: int) -> OpenAIError:
    shown = name if len(name) <= 64 else name[:64] + "..."
    if name == "file":
        message = "'file' must be a file part (with a filename), e.g. curl -F file=@audio.wav"
    else:
        message = f"Invalid '{shown}': string too long. Expected at most {limit_bytes} bytes."
    return OpenAIError(400, message, code="string_above_max_length", param=shown)


def upload_too_slow(min_bytes_per_s: int, window_s: float) -> OpenAIError:
    return OpenAIError(
        408,
        f"The upload is too slow: less than {min_bytes_per_s} bytes/s arrived over {window_s:g} s",
        code="upload_too_slow",
        param="file",
        outcome="upload_timeout",
    )


def upload_timeout(timeout_s: float) -> OpenAIError:
    return OpenAIError(
        408,
        f"The upload did not finish within {timeout_s:g} s",
        code="upload_timeout",
        param="file",
        outcome="upload_timeout",
    )


def too_many_uploads(limit: int) -> OpenAIError:
    return OpenAIError(
        429,
        f"{limit} uploads are already being received by this server; retry later",
        type="requests",
        code="too_many_uploads",
        outcome="rate_limited",
        retry_after_s=RETRY_AFTER_S,
    )


def rate_limited(running: int) -> OpenAIError:
    return OpenAIError(
        429,
        f"{running} file transcriptions are already running on this server; retry later",
        type="requests",
        code="rate_limit_exceeded",
        outcome="rate_limited",
        retry_after_s=RETRY_AFTER_S,
    )


def unavailable(code: str, message: str) -> OpenAIError:
    """503: overloaded (live sessions' finals already wait), not ready, or shutting down."""
    return OpenAIError(
        503,
        message,
        type="server_error",
        code=code,
        outcome="overloaded" if code == "overloaded" else "not_ready",
        retry_after_s=RETRY_AFTER_S,
    )


def from_emostt_error(exc: EmosttError) -> OpenAIError:
    """A failure while transcribing: retryable ones (overload, shutdown, a failing engine) are 503
    with Retry-After; the rest 500."""
    if exc.code == "overloaded":
        return unavailable("overloaded", "the server is at capacity; retry later")
    if exc.code == "shutting_down":
        return unavailable("shutting_down", "the server is shutting down; retry on another replica")
    message = "the audio could not be transcribed" + ("; retry later" if exc.retryable else "")
    return OpenAIError(
        503 if exc.retryable else 500,
        message,
        type="server_error",
        code=exc.code,
        outcome="failed",
        retry_after_s=RETRY_AFTER_S if exc.retryable else None,
    )
