"""A whole file's speech segments: the streaming path's Silero VAD and endpointer, run offline.

The endpointer (``Segmenter``) is the live sessions' own, with the same config, so a file and a
live stream of the same audio are cut the same way: pauses of ``silence_duration_ms`` end a
segment, long speech is cut at ``max_utterance_ms`` and goes on in the next segment.

Concurrency: runs on the event loop; the VAD runs on the process-wide VAD thread, batched with
the live sessions' frames. The file is sent in chunks of ``CHUNK_FRAMES`` so a live session's
VAD request never waits behind a whole file (a chunk costs the VAD thread a few ms).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass

import numpy as np

from emostt.audio import Float32Array
from emostt.streaming.segmenter import Segmenter, SpeechEnded
from emostt.streaming.vad import VadBatcher, VadStream
from emostt.vocabulary import SAMPLE_RATE, VAD_FRAME_SAMPLES
from emostt.vocabulary.session_config import EndpointConfig

CHUNK_FRAMES = 32  # ~1 s of audio per VAD request


@dataclass(frozen=True)
class Segment:
    index: int  # 0, 1, 2... in file order
    start: int  # first sample (16 kHz), prefix padding included
    end: int  # exclusive
    reason: str  # why it ended: silence, max_length, or finalize (the end of the file)

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


class FileSegmenter:
    """Pure: speech probabilities in (one per 32 ms frame, in order), segments out."""

    def __init__(self, config: EndpointConfig, total_samples: int) -> None:
        self._segmenter = Segmenter(config)
        self._total = total_samples
        self._count = 0

    def push(self, probs: Iterable[float]) -> list[Segment]:
        ended: list[Segment] = []
        for prob in probs:
            ended += self._segments(self._segmenter.push(prob))
        return ended

    def finish(self) -> list[Segment]:
        """The end of the file ends the speech still open."""
        return self._segments(self._segmenter.finalize())

    def _segments(self, events: Iterable[object]) -> list[Segment]:
        out = []
        for event in events:
            if isinstance(event, SpeechEnded):
                # The last frame was zero-padded: a segment never reaches past the file's end.
                end = min(event.end_frame * VAD_FRAME_SAMPLES, self._total)
                out.append(
                    Segment(self._count, event.start_frame * VAD_FRAME_SAMPLES, end, event.reason.value)
                )
                self._count += 1
        return out


def frames_of(audio: Float32Array) -> Float32Array:
    """(n, VAD_FRAME_SAMPLES) frames; the last one zero-padded."""
    return chunk_frames(audio, 0, -(-len(audio) // VAD_FRAME_SAMPLES))


def chunk_frames(audio: Float32Array, first: int, count: int) -> Float32Array:
    """Frames ``first`` to ``first + count`` of ``audio`` as (k, VAD_FRAME_SAMPLES), the last one
    zero-padded: a copy of that chunk only, so a file is never copied whole (an hour is 230 MB),
    and never a view of it either: a view the VAD thread keeps after its batch (its last one
    stays referenced until the next) would keep the whole file's memory alive."""
    piece = audio[first * VAD_FRAME_SAMPLES : (first + count) * VAD_FRAME_SAMPLES]
    frames = np.zeros((-(-len(piece) // VAD_FRAME_SAMPLES), VAD_FRAME_SAMPLES), dtype=np.float32)
    frames.reshape(-1)[: len(piece)] = piece
    return frames


async def speech_segments(
    audio: Float32Array, vad: VadBatcher, config: EndpointConfig
) -> AsyncGenerator[Segment, None]:
    """Segments in file order, as the VAD finds them (transcription can start before the end).
    ``VadFailedError`` when the VAD fails on a chunk: a file is never returned with a hole."""
    n_frames = -(-len(audio) // VAD_FRAME_SAMPLES)
    segmenter = FileSegmenter(config, len(audio))
    stream = VadStream()
    for lo in range(0, n_frames, CHUNK_FRAMES):
        probs = await vad.speech_probs(stream, chunk_frames(audio, lo, CHUNK_FRAMES), timed=False)
        for segment in segmenter.push(probs):
            yield segment
    for segment in segmenter.finish():
        yield segment
