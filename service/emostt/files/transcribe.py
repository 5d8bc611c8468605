"""A file's segments through the shared batcher, in order, a few at a time.

At most ``window`` segments of one file are in the batcher at once: the batcher's waiting list
is bounded and shared with every live session (whose admission watches how full it is), so a
600-segment file must not enter it all at once. The window also lets a worker start the next
segment as soon as one ends, and a GPU batch several segments of one file.

Runs on the event loop. Results come back in file order, each as soon as it and every segment
before it are done. Closing the iterator early (the client went away, an error) cancels the
segments still in flight; the batcher drops cancelled work before it costs compute.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from emostt.audio import Float32Array
from emostt.batching.service import BatchService
from emostt.errors import EmosttError
from emostt.files.segments import Segment
from emostt.inference.engine import TranscriptionRequest, TranscriptionResult
from emostt.policy.outcome import Outcome, Served


class SegmentFailedError(EmosttError):
    """A segment could not be transcribed; ``code`` and ``retryable`` are the batcher's."""

    def __init__(self, code: str, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class FileOptions:
    language: str = "auto"
    use_itn: bool = True
    word_timestamps: bool = False
    known_emotion_only: bool = False
    keyterms: tuple[str, ...] = ()

    def request(self, audio: Float32Array) -> TranscriptionRequest:
        return TranscriptionRequest(
            audio,
            language=self.language,
            use_itn=self.use_itn,
            word_timestamps=self.word_timestamps,
            known_emotion_only=self.known_emotion_only,
            keyterms=self.keyterms,
        )


@dataclass(frozen=True)
class SegmentResult:
    segment: Segment
    result: TranscriptionResult
    degraded: bool = False


async def transcribe_segments(
    audio: Float32Array,
    segments: AsyncGenerator[Segment, None],
    batcher: BatchService,
    options: FileOptions,
    *,
    window: int,
    request_id: str,
) -> AsyncGenerator[SegmentResult, None]:
    """``SegmentFailedError`` (or the batcher's own ``EmosttError``: full, stopping) ends the file:
    a transcript is never returned with a segment missing."""
    pending: deque[tuple[Segment, asyncio.Task[Outcome]]] = deque()
    try:
        async for segment in segments:
            # A copy: a view would keep the whole file alive for as long as the batcher, a worker
            # or an engine keeps any reference to this request (230 MB for an hour).
            request = options.request(audio[segment.start : segment.end].copy())
            task = asyncio.ensure_future(batcher.submit_file_segment(request, request_id=request_id))
            pending.append((segment, task))
            if len(pending) >= window:
                yield await _served(*pending.popleft())
        while pending:
            yield await _served(*pending.popleft())
    finally:
        for _, task in pending:
            task.cancel()
            # Nobody awaits it any more: collect its exception, if any, so none goes unreported.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        await segments.aclose()


async def _served(segment: Segment, task: asyncio.Task[Outcome]) -> SegmentResult:
    outcome = await task
    if not isinstance(outcome, Served):
        raise SegmentFailedError(outcome.code, outcome.message, outcome.retryable)
    return SegmentResult(segment, outcome.result, outcome.degraded)
