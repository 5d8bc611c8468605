"""The bench harness engine: a fixed result per utterance, no model (inference/instant.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from emostt.errors import InvalidAudioError
from emostt.inference.engine import Engine, TranscriptionRequest
from emostt.inference.instant import INSTANT_TEXT, InstantEngine
from emostt.inference.rich_tokens import EMOTION_TOKENS, EVENT_TOKENS, LANGUAGE_TOKENS


def test_every_utterance_gets_the_fixed_result() -> None:
    engine = InstantEngine()
    assert isinstance(engine, Engine)
    assert engine.info.backend == "instant" and "not a model" in engine.info.name
    requests = [TranscriptionRequest(np.zeros(n, dtype=np.float32)) for n in (400, 16_000, 48_000)]
    results = engine.transcribe(requests)
    assert [r.text for r in results] == [INSTANT_TEXT] * 3
    assert [r.duration_ms for r in results] == [25, 1000, 3000]
    for r in results:
        assert set(r.language.scores) == set(LANGUAGE_TOKENS)
        assert set(r.emotion.scores) == set(EMOTION_TOKENS)
        assert set(r.event.scores) == set(EVENT_TOKENS)
        for dist in (r.language, r.emotion, r.event):
            assert sum(dist.scores.values()) == 1.0 and dist.scores[dist.label] == 1.0
        assert r.words is None and r.confidence == 1.0


def test_words_when_asked_and_the_models_lower_bound() -> None:
    engine = InstantEngine()
    (result,) = engine.transcribe([TranscriptionRequest(np.zeros(8000, np.float32), word_timestamps=True)])
    assert result.words is not None and result.words[0].end_ms == 500
    with pytest.raises(InvalidAudioError):
        engine.transcribe([TranscriptionRequest(np.zeros(399, np.float32))])


def test_batch_delay_stands_in_for_model_time() -> None:
    engine = InstantEngine(device="cuda", batch_delay_s=0.05)
    assert engine.info.device == "cuda"
    started = time.perf_counter()
    engine.transcribe([TranscriptionRequest(np.zeros(1600, np.float32))] * 4)
    assert 0.05 <= time.perf_counter() - started < 0.5
    with pytest.raises(ValueError):
        InstantEngine(batch_delay_s=-1)
