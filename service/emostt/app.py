"""``create_app(settings)``: the FastAPI application. The lifespan loads and warms the engine
(off the event loop) and runs the process-wide batcher."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
from emostt.transport import http
from emostt.transport.state import AppState
from emostt.transport.ws import stt_endpoint

log = logging.getLogger(__name__)


def load_engines(settings: Settings) -> tuple[Engine, Engine | None]:
    """The primary engine (with the optional offline fallback model) and the optional fallback-device copy."""
    from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

    options = EngineOptions(
        device=settings.device,
        precision=settings.precision,
        hub=settings.hub,
        threads=settings.threads,
        load_timeout_s=settings.load_timeout_s,
        backend=settings.backend,
        onnx_cache_dir=settings.onnx_cache_dir,
    )
    primary = SenseVoiceEngine.load_with_fallback(settings.model, settings.fallback_model, options)
    fallback = None
    if settings.fallback_device:
        fallback_options = EngineOptions(device=settings.fallback_device, precision="auto", hub=settings.hub)
        fallback = SenseVoiceEngine.load(primary.info.name, fallback_options)
    return primary, fallback


class DrainingServer(uvicorn.Server):
    """uvicorn closes WebSockets before the app's shutdown runs; drain the sessions first."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        state: AppState | None = getattr(getattr(app, "state", None), "emostt", None)
        if state is not None:
            await state.drain(state.settings.drain_timeout_s)
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
        retry = RetryConfig(
            max_retries=settings.max_retries,
            backoff_s=settings.retry_backoff_s,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
        )
        state.runner = ResilientRunner(primary, backup, retry)
        if settings.warmup:
            await asyncio.to_thread(
                primary.transcribe, [TranscriptionRequest(np.zeros(16_000, dtype=np.float32))]
            )
        plan = worker_plan(
            primary.info.device, settings.model_workers, settings.threads, settings.partial_workers
        )

        def init_worker(role: WorkerRole) -> None:
            set_thread_count(plan.threads_per_worker)
            if role == "partial":
                lower_thread_priority()

        state.batcher = Batcher(
            state.runner,
            BatcherConfig(
                workers=plan.workers,
                partial_workers=plan.partial_workers,
                max_batch_size=settings.max_batch_size
                or default_max_batch_size(primary.info.device, primary.info.backend),
                max_padded_seconds=settings.max_padded_seconds,
                max_waiting=settings.max_waiting,
                max_wait_s=settings.batch_wait_ms / 1000,
                partial_deadline_s=settings.partial_deadline_s,
                overload_wait_s=settings.overload_wait_s,
            ),
            worker_init=init_worker,
        )
        state.batcher.start()
        state.model = primary.info
        state.ready = True
        log.info(
            "ready",
            extra={
                "model": primary.info.name,
                "device": primary.info.device,
                "model_workers": plan.workers,
                "partial_workers": plan.partial_workers,
                "threads_per_worker": plan.threads_per_worker,
            },
        )
        try:
            yield
        finally:
            await state.drain(settings.drain_timeout_s)
            await asyncio.to_thread(state.batcher.stop)

    app = FastAPI(title="emostt", lifespan=lifespan)
    app.state.emostt = state
    app.include_router(http.router)
    app.add_api_websocket_route("/ws/stt/{device_id}", stt_endpoint)
    return app
