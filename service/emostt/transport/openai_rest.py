"""OpenAI-compatible REST: ``GET /v1/models[/{id}]`` and ``POST /v1/audio/transcriptions``.

Thin, like every transport: it checks the caller and the server's load, reads the upload, and
translates between OpenAI's formats and ``emostt.files`` (decode, VAD segments, the shared
batcher, aggregation). docs/openai.md is the reference.

Checks run cheapest first. Before the body is read: the API key (401), readiness (503), the
live sessions' load (503: their finals already wait), whether a transcription slot is free now
(429: a client need not upload a file only to be refused), a place among the bodies being read
(429 ``too_many_uploads``, ``max_file_uploads``). Then the body, within its size limits (413), its
fields' bounds (400) and its deadlines (408): transport/openai_upload.py. Only once the body is in
is a transcription slot taken (``max_file_requests``; 429 if another request took the last one
meanwhile), so a slow upload never holds one. Then the parameters and the audio (400). 429 and
503 carry Retry-After; an answer sent before the body's end closes the connection.

Readiness (/readyz) does not report the file path full: it steers new live sessions, and a busy
file endpoint (or slow uploads) must not take a replica out of rotation for them. Each file
request learns it from its own 429 with Retry-After, which the OpenAI SDKs honour.

Concurrency: event loop only. Decoding runs in a worker thread, the VAD on its own thread,
the segments on the batcher's workers (after live work: batching/batcher.py). A client that
goes away cancels its segments still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from emostt.audio import Float32Array
from emostt.batching.service import BatchService
from emostt.config import Settings
from emostt.errors import EmosttError, InvalidAudioError
from emostt.files.aggregate import FileSummary, delta, summarize
from emostt.files.decode import decode_audio
from emostt.files.memory import FileMemoryFullError, configure_file_memory
from emostt.files.segments import speech_segments
from emostt.files.transcribe import FileOptions, SegmentResult, transcribe_segments
from emostt.observability import metrics
from emostt.streaming.vad import VadBatcher
from emostt.transport import openai_formats as formats
from emostt.transport.auth import bound_device, presented_token
from emostt.transport.openai_errors import (
    OpenAIError,
    from_emostt_error,
    invalid_request,
    model_not_found,
    rate_limited,
    unauthorized,
    unavailable,
)
from emostt.transport.openai_params import TranscriptionParams, parse_params
from emostt.transport.openai_upload import Bound, UploadLimits, read_form
from emostt.transport.state import AppState
from emostt.vocabulary import SAMPLE_RATE
from emostt.vocabulary.session_config import SessionConfig

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1")
SERVED_SINCE = int(time.time())  # the model card's "created": when this process started serving
T = TypeVar("T")


def install(app: FastAPI, settings: Settings) -> None:
    app.state.emostt_file_slots = Bound(settings.max_file_requests)  # transcriptions running
    app.state.emostt_file_uploads = Bound(settings.max_file_uploads, metrics.FILE_UPLOADS_ACTIVE)
    configure_file_memory(settings.max_file_memory_mb)  # the process's decoded-audio budget
    app.include_router(router)
    if settings.auth_tokens:
        _without_schema_pages(app)


def _without_schema_pages(app: FastAPI) -> None:
    """With API keys configured, FastAPI's /openapi.json, /docs and /redoc are not served (404).
    They would be the one unauthenticated description of the API, they describe nothing a
    client needs (docs/openai.md is the reference; the transcription form is read by hand, so the
    schema does not even list its fields), and the Swagger page loads scripts from a CDN. Behind the
    key they could not work either: the page fetches the schema without one. An open server (no
    keys: a development setup) keeps them."""
    pages = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) not in pages]
    app.openapi_url = app.docs_url = app.redoc_url = None


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.emostt
    return state


def _authenticate(request: Request, settings: Settings) -> str | None:
    """The device id the API key is bound to (``*``: any), or None while the server runs open.
    The WebSocket's token table; a key bound to one device works here too (REST has no device)."""
    if not settings.auth_tokens:
        return None
    token = presented_token(request.headers.get("authorization"), [], None)
    if not token:
        raise unauthorized("You didn't provide an API key: send 'Authorization: Bearer <key>'.")
    device = bound_device(token, settings.auth_tokens)
    if device is None:
        raise unauthorized("Incorrect API key provided.")
    return device


def _serving(state: AppState) -> tuple[BatchService, VadBatcher]:
    if state.draining:
        raise unavailable("shutting_down", "the server is shutting down; retry on another replica")
    if not state.serving() or state.batcher is None or state.vad is None:
        raise unavailable("not_ready", "the server is not ready; retry later")
    return state.batcher, state.vad


def _model_card(state: AppState) -> dict[str, Any]:
    if state.model is None:
        raise unavailable("not_ready", "the model is still loading; retry later")
    return {"id": state.model.name, "object": "model", "created": SERVED_SINCE, "owned_by": "emostt"}


@router.get("/models")
async def list_models(request: Request) -> Response:
    try:
        _authenticate(request, _state(request).settings)
        return JSONResponse({"object": "list", "data": [_model_card(_state(request))]})
    except OpenAIError as err:
        return err.response()


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Response:
    try:
        _authenticate(request, _state(request).settings)
        card = _model_card(_state(request))
        if model_id != card["id"]:
            raise model_not_found(model_id)
        return JSONResponse(card)
    except OpenAIError as err:
        return err.response()


@dataclass
class _FileRequest:
    """One transcription request: what the log line and the metrics report."""

    request_id: str
    started: float
    device_id: str | None = None
    params: TranscriptionParams | None = None
    audio_s: float = 0.0
    segments: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    # A stream's outcome, set as it ends; until then the client is taken to have left.
    outcome: str = "client_gone"
    status: int = 499

    def finish(self, outcome: str, status: int) -> None:
        elapsed = time.perf_counter() - self.started
        metrics.FILE_REQUESTS.labels(outcome).inc()
        if outcome == "ok" and self.params is not None:
            metrics.FILE_RESPONSES.labels(self.params.metric_format).inc()
            metrics.FILE_AUDIO_SECONDS.inc(self.audio_s)
            metrics.FILE_REQUEST_SECONDS.observe(elapsed)
        log.info(
            "file transcribed" if outcome == "ok" else "file request ended",
            extra={
                "request_id": self.request_id,
                "device_id": self.device_id,
                "outcome": outcome,
                "status": status,
                "format": self.params.metric_format if self.params else None,
                "audio_s": round(self.audio_s, 3),
                "segments": self.segments,
                "elapsed_s": round(elapsed, 3),
                **self.fields,
            },
        )


@router.post("/audio/transcriptions")
async def create_transcription(request: Request) -> Response:
    state = _state(request)
    settings = state.settings
    slots: Bound = request.app.state.emostt_file_slots
    job = _FileRequest("file-" + uuid.uuid4().hex[:16], time.perf_counter())
    held = body_read = False
    try:
        job.device_id = _authenticate(request, settings)
        batcher, vad = _serving(state)
        if batcher.overloaded():
            raise unavailable("overloaded", "live sessions are waiting for the model; retry later")
        if slots.full:
            raise rate_limited(slots.running)
        uploads: Bound = request.app.state.emostt_file_uploads
        form, upload = await read_form(request, UploadLimits.of(settings), uploads)
        body_read = True
        defaults = SessionConfig.model_validate(settings.session_defaults)
        try:
            job.params = _params(form, defaults.language)
            if not slots.acquire():
                raise rate_limited(slots.running)
            held = True
            audio = await _decode(upload, settings)
        finally:
            await form.close()
        job.audio_s = len(audio) / SAMPLE_RATE
        options = FileOptions(
            language=job.params.language,
            use_itn=defaults.use_itn,
            word_timestamps="word" in job.params.granularities,
            known_emotion_only=defaults.known_emotion_only,
            keyterms=job.params.keyterms,
        )

        def results() -> AsyncGenerator[SegmentResult, None]:
            segments = speech_segments(audio, vad, defaults.vad)
            window = settings.file_segment_window
            return transcribe_segments(
                audio, segments, batcher, options, window=window, request_id=job.request_id
            )

        if job.params.stream:
            held = False  # the stream releases the slot when it ends

            def stream_ended() -> None:
                slots.release()
                job.finish(job.outcome, job.status)

            return _EventStream(_events(job, results()), stream_ended)
        collected = await _unless_client_leaves(request.receive, _collect(results()))
        job.segments = len(collected)
        response = _render(job.params, collected, summarize(collected, job.audio_s))
        job.finish("ok", 200)
        return response
    except OpenAIError as err:
        job.finish(err.outcome, err.status)
        return err.response(close=not (body_read or await _drained(request, err)))
    except EmosttError as exc:
        mapped = from_emostt_error(exc)
        job.fields["error"] = exc.code
        job.finish(mapped.outcome, mapped.status)
        return mapped.response()
    except (ClientDisconnect, _ClientGoneError):
        job.finish("client_gone", 499)
        return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"
    finally:
        if held:
            slots.release()


# A request refused before its body was read: a small body is read (and dropped) first, so a
# client that sends its whole request before it reads the answer (aiohttp, httpx) gets the answer
# rather than a reset connection. A larger or slower body is not worth it: the answer closes the
# connection instead (a slow upload must not hold the server).
LINGER_BYTES = 1024 * 1024
LINGER_S = 2.0
BODY_REFUSALS = frozenset(
    {"too_many_uploads", "upload_too_slow", "upload_timeout", "string_above_max_length"}
)


async def _drained(request: Request, err: OpenAIError) -> bool:
    """Whether the rest of a small request body has been read and dropped. Never for a refusal
    about bodies themselves (too many being read, too large, too slow): reading them is what
    those refusals avoid."""
    length = request.headers.get("content-length", "")
    if err.status == 413 or err.code in BODY_REFUSALS or not length.isdigit() or int(length) > LINGER_BYTES:
        return False
    try:
        async with asyncio.timeout(LINGER_S):
            async for _ in request.stream():
                pass
    except (TimeoutError, ClientDisconnect, RuntimeError):  # RuntimeError: the form reader began it
        return False
    return True


def _params(form: FormData, default_language: str) -> TranscriptionParams:
    fields: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value)
    return parse_params(fields, default_language)


async def _decode(upload: UploadFile, settings: Settings) -> Float32Array:
    try:
        return await asyncio.to_thread(decode_audio, upload.file, settings.max_file_s)
    except FileMemoryFullError as exc:  # other files hold the memory now: later may fit
        raise unavailable("overloaded", str(exc)) from None
    except InvalidAudioError as exc:
        raise invalid_request(str(exc), param="file", code=exc.code) from None


async def _collect(results: AsyncGenerator[SegmentResult, None]) -> list[SegmentResult]:
    async with contextlib.aclosing(results) as items:
        return [item async for item in items]


class _ClientGoneError(Exception):
    pass


async def _unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """``work``'s result, or ``_ClientGoneError`` (with ``work`` cancelled) once the client
    disconnects: its segments would otherwise go on costing compute nobody reads."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise _ClientGoneError
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _disconnect(receive: Receive) -> None:
    """Returns when the client disconnects (the body has been read: nothing else arrives)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _render(params: TranscriptionParams, results: list[SegmentResult], summary: FileSummary) -> Response:
    fmt = params.response_format
    if fmt == "text":
        return PlainTextResponse(formats.text_body(summary))
    if fmt == "srt":
        return PlainTextResponse(formats.srt_body(results))
    if fmt == "vtt":
        return PlainTextResponse(formats.vtt_body(results), media_type="text/vtt")
    if fmt == "verbose_json":
        return JSONResponse(formats.verbose_body(results, summary, params.granularities, params.language))
    return JSONResponse(formats.json_body(summary))


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


class _EventStream(StreamingResponse):
    """The server-sent events response. However it ends (the last event sent, an error, the
    client gone before the first byte, when the events generator never even starts), the
    events are closed and ``on_close`` runs exactly once."""

    def __init__(self, events: AsyncGenerator[bytes, None], on_close: Callable[[], None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()  # cancels the segments still in flight
            self._on_close()


async def _events(
    job: _FileRequest, results: AsyncGenerator[SegmentResult, None]
) -> AsyncGenerator[bytes, None]:
    """``transcript.text.delta`` per segment with text, in order, then ``transcript.text.done``.
    A failure after the stream started is an ``error`` event (OpenAI's error object), then the end."""
    collected: list[SegmentResult] = []
    text = ""
    try:
        async with contextlib.aclosing(results) as items:
            async for item in items:
                collected.append(item)
                job.segments = len(collected)
                piece = delta(text, item.result.text)
                text += piece
                if piece:
                    yield _sse(formats.delta_event(piece))
        yield _sse(formats.done_event(summarize(collected, job.audio_s)))
        job.outcome, job.status = "ok", 200
    except EmosttError as exc:
        err = from_emostt_error(exc)
        job.fields["error"] = exc.code
        job.outcome, job.status = err.outcome, err.status
        yield _sse({"type": "error", **err.body()})
