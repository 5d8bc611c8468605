"""The multipart body of ``POST /v1/audio/transcriptions``, read within its bounds and deadlines.

Why this shape (docs/openai.md, "Uploads"): a body arrives at the client's pace, which the server
does not control. So nothing scarce is held while it arrives:

- **No transcription slot while reading.** ``max_file_requests`` bounds transcriptions, which cost
  compute; the slot is taken by the caller once the whole body is in (transport/openai_rest.py).
  Slow uploads therefore never make other requests wait or get 429 for a slot.
- **A separate, generous bound on bodies being read** (``max_file_uploads``, 64): each holds a
  socket and up to 1 MiB of memory (then a temporary file); beyond it a request is refused with
  429 ``too_many_uploads`` before a byte of its body is read.
- **Deadlines while reading.** The whole body within ``file_upload_timeout_s`` (300 s), and after a
  first window of grace, at least ``file_upload_min_bytes_per_s`` (16 KiB/s) over each
  ``file_upload_rate_window_s`` (10 s): otherwise 408 ``upload_too_slow`` / ``upload_timeout``.
  A client sending one byte every few seconds (slowloris) is gone after two windows.
- **Bounds while reading, never after.** Every text field has its own bound (400
  ``string_above_max_length``, ``param`` naming that field: a 10 MB ``model`` is refused after
  256 bytes, not buffered), the ``file`` part is cut at ``max_file_bytes`` (413, ``param:
  "file"``), and the bytes actually received are counted as they arrive (a chunked upload, or a
  header that lies). A declared Content-Length over the limit reads only the fields before the
  file, to name the part at fault: 413 ``file`` as soon as the file part starts, 400 naming a
  field over its bound, 413 with no ``param`` when the form ends without a file.

Any refusal before the body's end closes the connection (``OpenAIError.response(close=True)``).
Starlette's parser spools the file part (memory up to 1 MiB, then a temporary file) and closes it
on any failure; the caller closes the form.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from fastapi import Request
from prometheus_client import Gauge
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from emostt.config import Settings
from emostt.observability import metrics
from emostt.transport.openai_errors import (
    OpenAIError,
    field_too_long,
    invalid_request,
    request_too_large,
    too_large,
    too_many_uploads,
    upload_timeout,
    upload_too_slow,
)

# The form's fields, their headers and the boundaries, on top of the file itself.
FORM_OVERHEAD_BYTES = 1024 * 1024
MAX_FIELDS = 64
MAX_PART_HEADER_BYTES = 8 * 1024
# Each text field's bound in bytes (UTF-8): the fields OpenAI's endpoint takes, each generous for
# its values. A field this server does not know (OpenAI adds some) is ignored, within OTHER_FIELD_BYTES.
FIELD_BYTES = {
    "model": 256,
    "language": 64,
    "prompt": 16 * 1024,
    "response_format": 32,
    "temperature": 32,
    "stream": 16,
    "timestamp_granularities[]": 16,
    "timestamp_granularities": 16,
    "include[]": 64,
    "chunking_strategy": 4 * 1024,
    "file": 0,  # the audio comes as a file part; as a text field it is refused at once
}
OTHER_FIELD_BYTES = 1024


@dataclass
class Bound:
    """At most ``limit`` held at once (event loop only: no lock); ``gauge`` follows the count."""

    limit: int
    gauge: Gauge | None = None
    running: int = 0

    @property
    def full(self) -> bool:
        return self.running >= self.limit

    def acquire(self) -> bool:
        if self.full:
            return False
        self._set(self.running + 1)
        return True

    def release(self) -> None:
        self._set(self.running - 1)

    def _set(self, running: int) -> None:
        self.running = running
        if self.gauge is not None:
            self.gauge.set(running)


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    timeout_s: float
    min_bytes_per_s: int
    window_s: float

    @classmethod
    def of(cls, settings: Settings) -> UploadLimits:
        return cls(
            settings.max_file_bytes,
            settings.file_upload_timeout_s,
            settings.file_upload_min_bytes_per_s,
            settings.file_upload_rate_window_s,
        )

    @property
    def max_body_bytes(self) -> int:
        return self.max_file_bytes + FORM_OVERHEAD_BYTES


class _Refused(MultiPartException):
    """Raised inside the parser (its callbacks or its stream) to end the read with ``error``."""

    def __init__(self, error: OpenAIError, reason: str) -> None:
        super().__init__(error.message)
        self.error = error
        metrics.FILE_UPLOADS_REFUSED.labels(reason).inc()  # emostt_file_uploads_refused_total


async def read_form(request: Request, limits: UploadLimits, uploads: Bound) -> tuple[FormData, UploadFile]:
    """The form and its ``file`` part, read within ``limits`` while holding one of ``uploads``.
    ``OpenAIError``: 413 over a size limit, 400 for a field over its bound or a body that is not a
    multipart form with one file, 408 too slow, 429 too many bodies being read. Starlette's
    ``ClientDisconnect`` passes through."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise invalid_request("the request body must be multipart/form-data with a 'file' part")
    declared = request.headers.get("content-length", "")
    over = declared.isdigit() and int(declared) > limits.max_body_bytes
    if not uploads.acquire():
        metrics.FILE_UPLOADS_REFUSED.labels("too_many_uploads").inc()
        raise too_many_uploads(uploads.limit)
    try:
        async with contextlib.aclosing(_body(request.receive, limits)) as body:
            form = await _BoundedParser(request.headers, body, limits, over).parse()
    except _Refused as exc:
        raise exc.error from None
    except MultiPartException as exc:
        raise invalid_request(f"malformed multipart body: {exc.message}") from None
    finally:
        uploads.release()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise invalid_request("a 'file' part with the audio is required", param="file")
    return form, upload


async def _body(receive: Receive, limits: UploadLimits) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive, within the size limit and the deadlines. The deadlines are
    checked on a timer, not only when a chunk comes: a client that sends nothing is refused too.
    (Cancelling a pending ``receive()`` is safe: uvicorn keeps what arrives for the next call.)"""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + limits.timeout_s
    window_at, window_seen = started, 0  # the current rate window: when it began, bytes seen then
    check_at = started + limits.window_s  # the first window is grace: no rate before its end
    in_grace, seen = True, 0
    while True:
        wake = min(deadline, check_at) if limits.min_bytes_per_s else deadline
        try:
            async with asyncio.timeout_at(wake):
                message = await receive()
        except TimeoutError:
            message = None
        now = loop.time()
        if message is not None:
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limits.max_body_bytes:
                raise _Refused(request_too_large(limits.max_body_bytes), "too_large")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
        if now >= deadline:
            raise _Refused(upload_timeout(limits.timeout_s), "timeout")
        if limits.min_bytes_per_s and now >= check_at:
            # Measured over the time that actually passed (a busy loop may check late).
            if not in_grace and seen - window_seen < limits.min_bytes_per_s * (now - window_at):
                raise _Refused(upload_too_slow(limits.min_bytes_per_s, limits.window_s), "too_slow")
            in_grace, window_at, window_seen, check_at = False, now, seen, now + limits.window_s


class _BoundedParser(MultiPartParser):
    """Starlette's parser with a bound per field (its own ``param`` in the error), on the file
    part's size, and on each part's headers, all checked as the bytes arrive. ``over``: the
    declared length is over the limit, so the body is refused at the file part or the form's end."""

    def __init__(
        self, headers: Headers, stream: AsyncGenerator[bytes, None], limits: UploadLimits, over: bool
    ) -> None:
        biggest = max(*FIELD_BYTES.values(), OTHER_FIELD_BYTES)
        super().__init__(headers, stream, max_files=1, max_fields=MAX_FIELDS, max_part_size=biggest)
        self._limits = limits
        self._over = over
        self._file_bytes = 0
        self._header_bytes = 0

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        if self._over and self._current_part.file is not None:
            raise _Refused(too_large(self._limits.max_file_bytes), "too_large")

    def on_end(self) -> None:
        if self._over:  # a form without a file, declared larger than any form may be
            raise _Refused(request_too_large(self._limits.max_body_bytes), "too_large")

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._header_bytes = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        super().on_header_field(data, start, end)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        super().on_header_value(data, start, end)

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            error = invalid_request(f"a part's headers are longer than {MAX_PART_HEADER_BYTES} bytes")
            raise _Refused(error, "field_too_large")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current_part  # Starlette's; tests/integration/test_openai_rest_uploads.py pins it
        if part.file is None:
            limit = FIELD_BYTES.get(part.field_name, OTHER_FIELD_BYTES)
            if len(part.data) + end - start > limit:
                raise _Refused(field_too_long(part.field_name, limit), "field_too_large")
        else:
            self._file_bytes += end - start
            if self._file_bytes > self._limits.max_file_bytes:
                raise _Refused(too_large(self._limits.max_file_bytes), "too_large")
        super().on_part_data(data, start, end)
