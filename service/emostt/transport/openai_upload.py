"""The multipart body of ``POST /v1/audio/transcriptions``, read within the size limit.

The limit is enforced while reading, not after: a declared Content-Length over it is refused
before a byte is read, and the bytes actually received are counted as they arrive (a chunked
upload, or a client whose header lies), so at most the limit is ever read. Starlette spools the
file part (in memory up to 1 MiB, then in a temporary file); the caller closes the form.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from emostt.transport.openai_errors import invalid_request, too_large

# The form's other fields and the multipart boundaries, on top of the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 16 * 1024
MAX_FIELDS = 64


@dataclass
class _Counter:
    limit: int
    seen: int = 0
    exceeded: bool = False


async def read_form(request: Request, max_file_bytes: int) -> tuple[FormData, UploadFile]:
    """The form and its ``file`` part. ``OpenAIError``: 413 over the limit, 400 for a body that is
    not a multipart form with one file. Starlette's ``ClientDisconnect`` passes through."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise invalid_request("the request body must be multipart/form-data with a 'file' part")
    counter = _Counter(max_file_bytes + FORM_OVERHEAD_BYTES)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > counter.limit:
        raise too_large(max_file_bytes)
    parser = MultiPartParser(
        request.headers,
        _limited(request, counter),
        max_files=1,
        max_fields=MAX_FIELDS,
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if counter.exceeded:
            raise too_large(max_file_bytes) from None
        raise invalid_request(f"malformed multipart body: {exc.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise invalid_request("a 'file' part with the audio is required", param="file")
    if upload.size is not None and upload.size > max_file_bytes:
        await form.close()
        raise too_large(max_file_bytes)
    return form, upload


async def _limited(request: Request, counter: _Counter) -> AsyncGenerator[bytes, None]:
    async for chunk in request.stream():
        counter.seen += len(chunk)
        if counter.seen > counter.limit:
            counter.exceeded = True
            # The parser closes the parts it spooled when it sees its own exception type.
            raise MultiPartException("request body too large")
        yield chunk
