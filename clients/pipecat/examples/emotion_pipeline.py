"""Reading emotion in a Pipecat pipeline: emostt's mood goes into the LLM context.

``MoodContextProcessor`` sits between ``EmosttSTTService`` and the user context aggregator. It
logs every final (text, emotion, mood), and when the speaker's mood changes (an
``EmotionChangedFrame``) it appends a system message to the LLM context, so the next reply can
take it into account. Optionally it prefixes each user message with its emotion.

Run it against a server (``emostt serve --model demo``); it streams a WAV file in real time, with
emostt's own turn detection, and prints the LLM context the user aggregator built (no LLM needed):

    python clients/pipecat/examples/emotion_pipeline.py --url ws://localhost:8000 \
        --file docs/samples/turn_left.wav

In a voice agent the same two processors go between the transport and the LLM (see
``voice_agent_processors`` and the README): importing this module needs no server.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import numpy as np
import soundfile
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMMessagesAppendFrame,
    TranscriptionFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from pipecat_emostt import EmosttSTTService, EmotionChangedFrame


class MoodContextProcessor(FrameProcessor):
    """Logs emostt's emotion and mood, and tells the LLM when the user's mood changes.

    Args:
        annotate_transcripts: Prefix each final's text with its emotion (``"[sad] i need help"``),
            so the LLM sees the emotion of every message, not only the mood changes.
    """

    def __init__(self, *, annotate_transcripts: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._annotate = annotate_transcripts
        self.mood: str = "neutral"  # the mood's label: what to act on

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and isinstance(frame.result, dict):
            final = frame.result
            emotion, mood = final["emotion"], final.get("mood")
            logger.info(
                f"{frame.user_id}: {frame.text!r} emotion={emotion['label']} "
                f"({emotion['scores'][emotion['label']]:.2f}) mood={mood and mood['label']} "
                f"language={frame.language}"
            )
            if self._annotate:
                frame.text = f"[{emotion['label']}] {frame.text}"
        elif isinstance(frame, EmotionChangedFrame):
            self.mood = frame.to_label
            top = sorted(frame.scores.items(), key=lambda kv: -kv[1])[:3]
            note = (
                f"The user's mood changed from {frame.from_label} to {frame.to_label} "
                f"({', '.join(f'{k} {v:.2f}' for k, v in top)}). Adapt your tone to it."
            )
            logger.info(note)
            # Into the context, without a reply of its own: the next user turn runs the LLM.
            await self.push_frame(
                LLMMessagesAppendFrame([{"role": "system", "content": note}], run_llm=False)
            )
        await self.push_frame(frame, direction)


def voice_agent_processors(
    stt: EmosttSTTService, context: LLMContext
) -> tuple[list[FrameProcessor], list[FrameProcessor]]:
    """The processors to put around an LLM: ``[*before, llm, tts, transport.output(), *after]``.

    ``before`` is ``[stt, MoodContextProcessor, user aggregator]`` (after ``transport.input()``),
    ``after`` the assistant aggregator.
    """
    aggregators = LLMContextAggregatorPair(context)
    return [stt, MoodContextProcessor(), aggregators.user()], [aggregators.assistant()]


def read_pcm16(path: str) -> tuple[bytes, int]:
    """A sound file as mono PCM16 bytes and its sample rate."""
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    return (np.clip(mono, -1, 32767 / 32768) * 32768).astype("<i2").tobytes(), int(rate)


async def stream_file(
    url: str, device_id: str, token: str | None, path: str, *, handle_sigint: bool = True
) -> LLMContext:
    """Stream ``path`` in real time through STT + mood + user aggregator; the context it built."""
    pcm, rate = read_pcm16(path)
    pcm += bytes(rate * 2)  # a second of silence: emostt's VAD ends the last utterance
    stt = EmosttSTTService(url=url, device_id=device_id, token=token, vad_force_turn_endpoint=False)
    context = LLMContext([{"role": "system", "content": "You are a helpful robot."}])
    before, _ = voice_agent_processors(stt, context)
    worker = PipelineWorker(
        Pipeline(before), params=PipelineParams(audio_in_sample_rate=rate), enable_rtvi=False
    )
    runner = WorkerRunner(handle_sigint=handle_sigint)
    await runner.add_workers(worker)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def on_started(_worker: PipelineWorker, _frame: Frame) -> None:
        started.set()

    async def feed() -> None:
        await started.wait()
        frame_bytes = rate // 50 * 2  # 20 ms, as a microphone transport sends them
        t0 = time.monotonic()
        for i, start in enumerate(range(0, len(pcm), frame_bytes)):
            chunk = pcm[start : start + frame_bytes]
            await worker.queue_frame(InputAudioRawFrame(audio=chunk, sample_rate=rate, num_channels=1))
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))
        await worker.queue_frame(EndFrame())  # the service closes the session after its finals

    await asyncio.gather(runner.run(), feed())
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", default="ws://localhost:8000", help="the emostt server")
    parser.add_argument("--device-id", default="pipecat-demo")
    parser.add_argument("--token", default=None)
    parser.add_argument("--file", default="docs/samples/turn_left.wav", help="a sound file to stream")
    args = parser.parse_args()
    context = asyncio.run(stream_file(args.url, args.device_id, args.token, args.file))
    for message in context.get_messages():
        print(message)


if __name__ == "__main__":
    main()
