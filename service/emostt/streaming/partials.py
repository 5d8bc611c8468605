"""Delivering one partial: ask the model at partial priority, send the text unless the
utterance's final overtook it. Every outcome is counted (sent, stale, shed, failed). Event-loop only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from emostt.batching.service import BatchService
from emostt.errors import EmosttError
from emostt.inference.engine import TranscriptionRequest
from emostt.observability import metrics
from emostt.policy.outcome import Failed
from emostt.streaming import events
from emostt.streaming.utterance import Utterance
from emostt.vocabulary import VAD_FRAME_MS


async def deliver_partial(
    batcher: BatchService,
    request: TranscriptionRequest,
    session_id: str,
    utt: Utterance,
    end_frame: int,
    emit: Callable[[events.Event], Awaitable[None]],
) -> None:
    """Ask for the partial of ``utt`` up to ``end_frame`` and send it with ``emit``. Sets and clears
    ``utt.partial_in_flight``/``partial_request``: the session cancels the request once the final
    is being decoded."""
    requested = time.perf_counter()
    pending = asyncio.ensure_future(batcher.submit(request, is_final=False, session_id=session_id))
    utt.partial_request = pending
    try:
        await asyncio.wait((pending,))
    except asyncio.CancelledError:
        pending.cancel()
        raise
    finally:
        utt.partial_in_flight = False
        utt.partial_request = None
    if pending.cancelled():  # the utterance's final is on its way: this partial is moot
        metrics.PARTIALS.labels("stale").inc()
        return
    try:
        outcome = pending.result()
    except EmosttError:
        metrics.PARTIALS.labels("shed").inc()
        return
    if isinstance(outcome, Failed):
        metrics.PARTIALS.labels("shed" if outcome.code == "partial_shed" else "failed").inc()
        return
    if utt.ended:
        metrics.PARTIALS.labels("stale").inc()
        return
    await emit(
        events.partial(
            utt.utterance_id,
            outcome.result.text,
            utt.start_frame * VAD_FRAME_MS,
            end_frame * VAD_FRAME_MS,
        )
    )
    metrics.PARTIALS.labels("sent").inc()
    metrics.PARTIAL_LATENCY_SECONDS.observe(time.perf_counter() - requested)
