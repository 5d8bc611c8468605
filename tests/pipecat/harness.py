"""Real Pipecat pipelines for the tests: a running ``PipelineWorker`` (pipecat-ai's own worker and
runner) over the processors under test, a ``Collector`` that records what reaches it, and the
16 kHz audio frames Pipecat's input transports send. Shared by every Pipecat test module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from pipecat.frames.frames import EndFrame, ErrorFrame, Frame, InputAudioRawFrame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from tests.integration.server import pcm16

RATE = 16_000
FRAME_BYTES = RATE // 50 * 2  # 20 ms, as Pipecat's input transports send it
F = TypeVar("F", bound=Frame)


def audio_frames(*parts: np.ndarray) -> list[InputAudioRawFrame]:
    """16 kHz float32 audio as Pipecat's 20 ms input audio frames."""
    pcm = pcm16(np.concatenate(parts))
    return [
        InputAudioRawFrame(audio=pcm[i : i + FRAME_BYTES], sample_rate=RATE, num_channels=1)
        for i in range(0, len(pcm), FRAME_BYTES)
    ]


class Collector(FrameProcessor):
    """Records every frame that passes downstream, in order, and passes it on."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self._arrived = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            self._arrived.set()
        await self.push_frame(frame, direction)

    def of(self, kind: type[F]) -> list[F]:
        return [f for f in self.frames if isinstance(f, kind)]

    def of_any(self, *kinds: type[Frame]) -> list[Frame]:
        """The frames of any of ``kinds``, in the order they arrived."""
        return [f for f in self.frames if isinstance(f, kinds)]

    async def wait_for(self, kind: type[F], count: int = 1, timeout: float = 30.0) -> list[F]:
        """Wait (at most ``timeout`` s) until ``count`` frames of ``kind`` have arrived; all of them."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.of(kind)) < count:
            self._arrived.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"{count} {kind.__name__} not within {timeout}s: {self.frames}")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self.of(kind)


@dataclass
class Run:
    worker: PipelineWorker
    collector: Collector
    done: asyncio.Task[None]
    errors: list[ErrorFrame] = field(default_factory=list)  # the ErrorFrames that reached the worker
    error_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def push(self, frames: list[InputAudioRawFrame]) -> None:
        await self.worker.queue_frames(frames)

    async def first_error(self, timeout: float = 30.0) -> ErrorFrame:
        await asyncio.wait_for(self.error_arrived.wait(), timeout)
        return self.errors[0]

    async def finished(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(asyncio.shield(self.done), timeout)


@asynccontextmanager
async def pipeline(*processors: FrameProcessor, **worker_args: Any) -> AsyncIterator[Run]:
    """A running PipelineWorker over ``processors`` + a Collector; ended with an EndFrame on exit."""
    collector = Collector()
    worker = PipelineWorker(
        Pipeline([*processors, collector]),
        enable_rtvi=False,
        idle_timeout_secs=None,
        cancel_on_idle_timeout=False,
        **worker_args,
    )
    started = asyncio.Event()
    run: Run

    @worker.event_handler("on_pipeline_started")
    async def on_started(_worker: PipelineWorker, _frame: Frame) -> None:
        started.set()

    @worker.event_handler("on_pipeline_error")
    async def on_error(_worker: PipelineWorker, frame: ErrorFrame) -> None:
        run.errors.append(frame)
        run.error_arrived.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = Run(worker, collector, asyncio.create_task(runner.run()))
    try:
        await asyncio.wait_for(started.wait(), 30)
        yield run
    finally:
        if not run.done.done():
            await worker.queue_frame(EndFrame())
        await asyncio.wait_for(run.done, 30)


def result_of(frame: TranscriptionFrame) -> dict[str, Any]:
    """The frame's ``result``: the server's whole event."""
    assert isinstance(frame.result, dict)
    return frame.result
