"""``create_app(settings)``: the FastAPI application. The lifespan loads and warms the engine
(off the event loop) and owns the process-wide batcher and VAD: started before the server
reports ready, stopped after the sessions are drained.

``emostt serve`` runs it with ``DrainingServer``; ``uvicorn --factory emostt.app:app_from_env``
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

import numpy as np
import uvicorn
from fastapi import FastAPI

from emostt.batching.batcher import Batcher, BatcherConfig, WorkerRole
from emostt.config import Settings
from emostt.inference.engine import Engine, TranscriptionRequest
from emostt.inference.threads import (
    default_max_batch_size,
    lower_thread_priority,
    set_thread_count,
    worker_plan,
)
from emostt.policy.retry import ResilientRunner, RetryConfig
from emostt.results.redis_streams import PublisherConfig, ResultsPublisher
from emostt.streaming.vad import VadBatcher
from emostt.transport import http, openai_rest, web
from emostt.transport.openai_realtime import realtime_endpoint
from emostt.transport.state import AppState
from emostt.transport.ws import stt_endpoint

log = logging.getLogger(__name__)


def load_engines(settings: Settings) -> tuple[Engine, Engine | None]:
    """The primary engine (with the optional offline fallback model) and the optional fallback-device copy."""
    from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

    # The server starts serving at once (torch) and switches when the ONNX export is ready.
    options = settings.engine_options(background_export=True)
    primary = SenseVoiceEngine.load_with_fallback(settings.model, settings.fallback_model, options)
    fallback = None
    if settings.fallback_device:
        fallback_options = EngineOptions(device=settings.fallback_device, precision="auto", hub=settings.hub)
        fallback = SenseVoiceEngine.load(primary.info.name, fallback_options)
    return primary, fallback


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


def create_app(settings: Settings, engine: Engine | None = None, fallback: Engine | None = None) -> FastAPI:
    """Tests pass engines in (fault injection); otherwise they are loaded from ``settings``."""
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_tokens:
            log.warning("NO AUTH TOKENS CONFIGURED: any client can connect (set EMOSTT_AUTH_TOKENS)")
        primary, backup = (
            (engine, fallback) if engine is not None else await asyncio.to_thread(load_engines, settings)
        )
        state.runner = ResilientRunner(
            primary,
            backup,
            RetryConfig(
                max_retries=settings.max_retries,
                backoff_s=settings.retry_backoff_s,
                breaker_failures=settings.breaker_failures,
                breaker_cooldown_s=settings.breaker_cooldown_s,
            ),
        )
        state.batcher = _make_batcher(settings, state.runner, primary)
        state.vad = VadBatcher()
        state.batcher.start()
        state.vad.start()
        state.results = _make_results_publisher(settings)
        if settings.warmup:
            await _warm_up(state.batcher)
        state.ready = True
        log.info("ready", extra={"model": primary.info.name, "device": primary.info.device})
        try:
            yield
        finally:
            await state.drain(settings.drain_timeout_s)
            if state.results is not None:
                await state.results.close()  # after the drain: the last finals go out too
            state.vad.stop()
            await asyncio.to_thread(state.batcher.stop)

    app = FastAPI(title="emostt", lifespan=lifespan)
    app.state.emostt = state
    app.include_router(http.router)
    openai_rest.install(app, settings)  # /v1/models, /v1/audio/transcriptions
    app.add_api_websocket_route("/ws/stt/{device_id}", stt_endpoint)
    app.add_api_websocket_route("/v1/realtime", realtime_endpoint)  # OpenAI Realtime transcription
    web.install(app, settings)  # the browser page at / (settings.web_ui)
    return app


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
    """For ``uvicorn --factory emostt.app:app_from_env``: settings from ``EMOSTT_*``."""
    return create_app(Settings())


WARMUP_AUDIO_S = 2.0


async def _warm_up(batcher: Batcher) -> None:
    """Batches on every model worker before reporting ready: one-off set-up costs (allocations,
    kernel selection) are paid here, not in a session's final. The second round, run the way
    serving runs, is the first estimate of what a second of audio costs (admission needs one
    before the first burst of sessions arrives)."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(WARMUP_AUDIO_S * 16_000)) * 0.01).astype(np.float32)
    for round_ in range(2):
        if round_ == 1:
            batcher.capacity.forget()  # the first round's set-up costs are not serving costs
        requests = [TranscriptionRequest(audio) for _ in range(batcher.final_workers)]
        await asyncio.gather(*(batcher.submit(r, is_final=True, session_id="warmup") for r in requests))


def _make_batcher(settings: Settings, runner: ResilientRunner, primary: Engine) -> Batcher:
    plan = worker_plan(
        primary.info.device, settings.model_workers, settings.threads, settings.partial_workers
    )
    log.info(
        "model workers",
        extra={
            "model_workers": plan.workers,
            "partial_workers": plan.partial_workers,
            "threads_per_worker": plan.threads_per_worker,
        },
    )

    def init_worker(role: WorkerRole) -> None:
        set_thread_count(plan.threads_per_worker)
        if role == "partial":
            lower_thread_priority()

    def max_batch_size() -> int:
        # Read per batch: the engine may switch backend (torch -> onnx) while serving.
        return settings.max_batch_size or default_max_batch_size(primary.info.device, primary.info.backend)

    return Batcher(
        runner,
        BatcherConfig(
            workers=plan.workers,
            partial_workers=plan.partial_workers,
            max_batch_size=max_batch_size,
            max_padded_seconds=settings.max_padded_seconds,
            max_waiting=settings.max_waiting,
            max_wait_s=settings.batch_wait_ms / 1000,
            partial_deadline_s=settings.partial_deadline_s,
            overload_wait_s=settings.overload_wait_s,
            target_utilization=settings.target_utilization,
            session_demand_prior=settings.session_demand_prior,
        ),
        worker_init=init_worker,
    )
