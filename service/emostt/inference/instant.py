"""Measurement harness: an engine that answers every utterance with a fixed result in ~0 time.

NOT A MODEL. It exists so that ``tools/bench_stream.py --model instant`` measures what the
server's front end costs per stream (WebSocket receive and decoding, resampling, VAD,
segmentation, batching and dispatch, event sending) with the model's cost taken out: with
this engine a final could leave the moment its endpoint is decided, so any lag a client sees
is the front end's.

How it is selected: only by ``tools/bench_server.py``, a bench-only entry point that runs the
same server as ``emostt serve`` (``emostt.cli.run_server``) with this engine passed in and
binds loopback addresses only. ``emostt serve``, the ``EMOSTT_*`` settings, the Docker image
and the Helm chart have no way to pick it: ``--model instant`` there is an unknown model.
Every result it returns says ``text="instant"`` and its ``info.backend`` is ``instant``, so a
stray use could not pass for transcription.

Concurrency: ``transcribe`` keeps no state; any number of model workers may call it at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from emostt.errors import InvalidAudioError
from emostt.inference.engine import (
    Distribution,
    ModelInfo,
    TranscriptionRequest,
    TranscriptionResult,
    Word,
)
from emostt.inference.rich_tokens import EMOTION_TOKENS, EVENT_TOKENS, LANGUAGE_TOKENS

INSTANT_MODEL_NAME = "instant (bench harness, not a model)"
INSTANT_TEXT = "instant"
# The real engine's lower bound (features.MIN_SAMPLES): the harness refuses what the model would.
MIN_SAMPLES = 400


def _certain(labels: Mapping[str, str], label: str) -> Distribution:
    return Distribution(label, {name: float(name == label) for name in labels})


class InstantEngine:
    """Answers ``INSTANT_TEXT`` (English, neutral, speech, confidence 1) for every utterance.

    ``batch_delay_s`` sleeps once per batch: a stand-in for a fixed model time (e.g. a GPU's
    few milliseconds per batch), still without any compute.
    """

    def __init__(self, device: str = "cpu", batch_delay_s: float = 0.0) -> None:
        if batch_delay_s < 0:
            raise ValueError("batch_delay_s must be >= 0")
        self._delay = batch_delay_s
        self._info = ModelInfo(
            name=INSTANT_MODEL_NAME, revision="bench", device=device, precision="none", backend="instant"
        )
        self._language = _certain(LANGUAGE_TOKENS, "en")
        self._emotion = _certain(EMOTION_TOKENS, "neutral")
        self._event = _certain(EVENT_TOKENS, "speech")

    @property
    def info(self) -> ModelInfo:
        return self._info

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        for request in requests:
            if len(request.audio) < MIN_SAMPLES:
                raise InvalidAudioError(f"utterance too short: {len(request.audio)} samples")
        if self._delay:
            time.sleep(self._delay)
        return [self._result(r) for r in requests]

    def _result(self, request: TranscriptionRequest) -> TranscriptionResult:
        duration = request.duration_ms
        words = [Word(INSTANT_TEXT, 0, duration, 1.0)] if request.word_timestamps else None
        return TranscriptionResult(
            text=INSTANT_TEXT,
            language=self._language,
            emotion=self._emotion,
            event=self._event,
            confidence=1.0,
            duration_ms=duration,
            raw_text=INSTANT_TEXT,
            words=words,
        )
