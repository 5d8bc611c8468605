"""The model side of a server: engine options, engines loaded (or given), the retry runner, the
batcher and its model workers, warmed up. Used by the app in the one-process server, by the
model process when front-end processes serve the connections (frontends.py), and by
``emostt transcribe``."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from emostt.batching.batcher import Batcher, BatcherConfig, WorkerRole
from emostt.batching.collate import DEFAULT_MAX_BATCH_SIZE
from emostt.config import EngineSettings, Settings
from emostt.inference.engine import Engine, TranscriptionRequest
from emostt.inference.options import EngineOptions
from emostt.inference.threads import lower_thread_priority, set_thread_count
from emostt.policy.retry import ResilientRunner, RetryConfig
from emostt.server.planning import default_max_padded_seconds, worker_plan
from emostt.vocabulary import SAMPLE_RATE

log = logging.getLogger(__name__)


async def start_batcher(
    settings: Settings, engine: Engine | None = None, fallback: Engine | None = None
) -> Batcher:
    """Load the engines off the event loop (unless given), start the model workers, warm them up
    (``settings.warmup``). The caller stops the batcher."""
    primary, backup = (
        (engine, fallback) if engine is not None else await asyncio.to_thread(load_engines, settings)
    )
    runner = ResilientRunner(
        primary,
        backup,
        RetryConfig(
            max_retries=settings.max_retries,
            backoff_s=settings.retry_backoff_s,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
        ),
    )
    batcher = _make_batcher(settings, runner, primary)
    batcher.start()
    if settings.warmup:
        await _warm_up(batcher)
    return batcher


def engine_options(
    settings: EngineSettings, *, device: str | None = None, background_export: bool = False
) -> EngineOptions:
    """How the engine for ``settings.model`` loads: the one construction of the options,
    for the primary engine and for the fallback-device copy alike.

    ``device`` other than the settings' (the fallback device) takes the precision ``auto`` for
    that device: a precision belongs to a device (fp16 does not run on the CPU, int8 not on
    CUDA). Everything else (hub, threads, load timeout, backend, ONNX cache) is the same.
    """
    own_device = device is None or device == settings.device
    return EngineOptions(
        device=settings.device if device is None else device,
        precision=settings.precision if own_device else "auto",
        hub=settings.hub,
        threads=settings.threads,
        lone_call_threads=settings.lone_call_threads,
        load_timeout_s=settings.load_timeout_s,
        backend=settings.backend,
        onnx_cache_dir=settings.onnx_cache_dir,
        background_export=background_export,
    )


def load_engines(settings: Settings) -> tuple[Engine, Engine | None]:
    """The primary engine (with the optional offline fallback model) and the optional fallback-device
    copy. On the CPU an exported or cached model is served torch-free (``inference/serving.py``)."""
    from emostt.inference.serving import load_engine, load_with_fallback

    # Without a cached export, the server starts serving at once (torch) and switches when the
    # ONNX export is ready.
    options = engine_options(settings, background_export=True)
    primary, spec = load_with_fallback(settings.model, settings.fallback_model, options)
    fallback = None
    if settings.fallback_device:
        fallback_options = engine_options(settings, device=settings.fallback_device, background_export=True)
        fallback = load_engine(spec, fallback_options)
    return primary, fallback


WARMUP_AUDIO_S = 2.0
# The first round only pays the one-off costs (every weight touched, kernels chosen): short audio.
FIRST_WARMUP_AUDIO_S = 0.5


async def _warm_up(batcher: Batcher) -> None:
    """Batches on every model worker before reporting ready: one-off set-up costs (allocations,
    kernel selection) are paid here, not in a session's final. The second round, run the way
    serving runs, is the first estimate of what a second of audio costs (admission needs one
    before the first burst of sessions arrives). Last, one utterance alone: the lone-call path
    (``inference/lone_call.py``) has set-up costs of its own."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(WARMUP_AUDIO_S * SAMPLE_RATE)) * 0.01).astype(np.float32)
    short = audio[: int(FIRST_WARMUP_AUDIO_S * SAMPLE_RATE)]
    batcher.lone_calls = False  # every worker's own path, and its cost under load, first
    try:
        for round_ in range(2):
            if round_ == 1:
                batcher.capacity.forget()  # the first round's set-up costs are not serving costs
            clip = audio if round_ else short
            requests = [TranscriptionRequest(clip) for _ in range(batcher.final_workers)]
            await asyncio.gather(*(batcher.submit(r, is_final=True, session_id="warmup") for r in requests))
    finally:
        batcher.lone_calls = True
    await batcher.submit(TranscriptionRequest(short), is_final=True, session_id="warmup")


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

    def max_padded_seconds() -> float:
        # Read per batch: the engine may switch backend (torch -> onnx) while serving.
        configured = settings.max_padded_seconds
        return configured or default_max_padded_seconds(primary.info.device, primary.info.backend)

    return Batcher(
        runner,
        BatcherConfig(
            workers=plan.workers,
            partial_workers=plan.partial_workers,
            max_batch_size=settings.max_batch_size or DEFAULT_MAX_BATCH_SIZE,
            max_padded_seconds=max_padded_seconds,
            max_waiting=settings.max_waiting,
            max_wait_s=settings.batch_wait_ms / 1000,
            partial_deadline_s=settings.partial_deadline_s,
            overload_wait_s=settings.overload_wait_s,
            target_utilization=settings.target_utilization,
            session_demand_prior=settings.session_demand_prior,
        ),
        worker_init=init_worker,
    )
