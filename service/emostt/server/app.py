"""``create_app(settings)``: the FastAPI application. The lifespan loads and warms the engine
(off the event loop) and owns the process-wide batcher, VAD and end-of-turn model: started before
the server reports ready, stopped after the sessions are drained.

``emostt serve`` runs it with ``DrainingServer``; ``uvicorn --factory emostt.server.app:app_from_env``
works too (settings from ``EMOSTT_*``; uvicorn's own WebSocket pings, 20 s by default, apply).
The send timeout that closes a client which stopped reading is the app's own, either way."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI

from emostt.batching.remote import RemoteBatcher
from emostt.batching.service import BatchService
from emostt.config import Settings
from emostt.inference.engine import Engine
from emostt.inference.smart_turn import locate_turn_model
from emostt.results.redis_streams import PublisherConfig, ResultsPublisher
from emostt.server.engines import start_batcher
from emostt.streaming.turns import TurnBatcher
from emostt.streaming.vad import VadBatcher
from emostt.transport import http, openai_rest, web
from emostt.transport.openai_realtime import realtime_endpoint
from emostt.transport.state import AppState
from emostt.transport.twilio_media import phone_endpoint
from emostt.transport.twilio_messages import CARRIERS
from emostt.transport.ws import stt_endpoint

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn closes WebSockets before the app's shutdown runs; drain the sessions first.
    A second SIGTERM or SIGINT ends the drain at once (uvicorn itself only counts SIGINT)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig in (signal.SIGINT, signal.SIGTERM):
            log.warning("second signal: ending the drain now")
            self.force_exit = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        state: AppState | None = getattr(getattr(app, "state", None), "emostt", None)
        if state is not None:
            await state.drain(state.settings.drain_timeout_s, cut_short=lambda: self.force_exit)
        await super().shutdown(sockets)


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    fallback: Engine | None = None,
    *,
    remote: RemoteBatcher | None = None,
) -> FastAPI:
    """Tests pass engines in (fault injection); otherwise they are loaded from ``settings``.
    A front-end process passes ``remote``, its link to the process that owns the model."""
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_tokens:
            log.warning("NO AUTH TOKENS CONFIGURED: any client can connect (set EMOSTT_AUTH_TOKENS)")
        # The VAD and the turn model load beside the model (another core): ready sooner.
        side_models = asyncio.ensure_future(asyncio.to_thread(_start_side_models, settings))
        batcher: BatchService
        try:
            if remote is not None:
                remote.start()  # the model process reports its readiness through it
                batcher = remote
            else:
                batcher = await start_batcher(settings, engine, fallback)
        except BaseException:
            await _stop_side_models(side_models)
            raise
        state.batcher = batcher
        try:
            state.vad, state.turns = await side_models
        except BaseException:
            await asyncio.to_thread(batcher.stop)
            raise
        state.results = _make_results_publisher(settings)
        state.ready = True
        log.info("ready", extra={"model": batcher.model.name if batcher.model else "(model process)"})
        try:
            yield
        finally:
            await state.drain(settings.drain_timeout_s)
            if state.results is not None:
                await state.results.close()  # after the drain: the last finals go out too
            state.vad.stop()
            if state.turns is not None:
                state.turns.stop()
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="emostt", lifespan=lifespan)
    app.state.emostt = state
    app.include_router(http.router)
    openai_rest.install(app, settings)  # /v1/models, /v1/audio/transcriptions
    app.add_api_websocket_route("/ws/stt/{device_id}", stt_endpoint)
    app.add_api_websocket_route("/v1/realtime", realtime_endpoint)  # OpenAI Realtime transcription
    for carrier in CARRIERS:  # /twilio/media, /telnyx/media, /plivo/media (docs/phone.md)
        app.add_api_websocket_route(carrier.path, phone_endpoint(carrier))
    web.install(app, settings)  # the browser page at / (settings.web_ui)
    return app


def _start_side_models(settings: Settings) -> tuple[VadBatcher, TurnBatcher | None]:
    """The VAD's and the turn model's workers, started."""
    vad = VadBatcher()
    vad.start()
    try:
        return vad, _start_turn_model(settings)
    except BaseException:
        vad.stop()
        raise


async def _stop_side_models(side_models: asyncio.Future[tuple[VadBatcher, TurnBatcher | None]]) -> None:
    """Stop what ``_start_side_models`` started, once it is done (the start-up failed elsewhere)."""
    try:
        vad, turns = await side_models
    except Exception:  # its own failure: nothing of it is running
        return
    vad.stop()
    if turns is not None:
        turns.stop()


def _start_turn_model(settings: Settings) -> TurnBatcher | None:
    """The end-of-turn model's worker, or None when turn_model is off or auto finds no file;
    one log line says which file serves, or why none does."""
    choice = locate_turn_model(settings.turn_model)
    if choice.path is None:
        log.info("end-of-turn model off", extra={"reason": choice.reason})
        return None
    turns = TurnBatcher(choice.path)  # a bad file fails the start-up here, as the VAD's would
    turns.start()
    log.info("end-of-turn model loaded", extra={"path": str(choice.path), "source": choice.reason})
    return turns


def _make_results_publisher(settings: Settings) -> ResultsPublisher | None:
    if settings.results_redis_url is None:
        return None
    publisher = ResultsPublisher(
        PublisherConfig(
            url=settings.results_redis_url.get_secret_value(),
            stream_prefix=settings.results_stream_prefix,
            maxlen=settings.results_stream_maxlen,
            buffer_size=settings.results_buffer_size,
        )
    )
    publisher.start()
    log.info(
        "publishing results to Redis Streams",
        extra={
            "stream": settings.results_stream_prefix + "<device_id>",
            "maxlen": settings.results_stream_maxlen,
        },
    )
    return publisher


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory emostt.server.app:app_from_env``: settings from ``EMOSTT_*``."""
    return create_app(Settings())
