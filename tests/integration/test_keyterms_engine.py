"""Keyterms through the engine with the demo model: a missed word recovered, nothing else moved.

The clips are the demo model's held-out synthetic speech (tools/demo_data.py: voices and
speeds unseen in training), rendered by espeak-ng 1.51 as the demo model's evaluation is.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from emostt.inference.engine import TranscriptionRequest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "demo_data.py"
# Words the demo model never heard: 100 keyterms of them (20 words and 80 two-word phrases).
UNSEEN = (
    "anthropic", "kubernetes", "zebra", "pancake", "violin", "tornado", "quantum", "giraffe",
    "lantern", "marble", "oyster", "penguin", "sapphire", "tulip", "walnut",
    "北京", "上海", "ソニー", "トヨタ", "서울",
)  # fmt: skip
MANY_UNSEEN = UNSEEN + tuple(f"{a} {b}" for a in UNSEEN[:10] for b in UNSEEN[10:18])


def demo_data() -> ModuleType:
    if "demo_data" not in sys.modules:
        spec = importlib.util.spec_from_file_location("demo_data", TOOL)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["demo_data"] = module
        spec.loader.exec_module(module)
    return sys.modules["demo_data"]


def heldout_clip(
    text: str, voice: str, speed: int, event: str = "speech", emotion: str | None = None
) -> np.ndarray:
    """A clip of the held-out set; or, with ``emotion``, that phrase in a held-out voice and speed
    (both unseen in training) in the given style, whether or not the held-out set holds it."""
    dd = demo_data()
    if emotion is not None:
        return np.asarray(dd.make_clip(dd.ClipSpec("speech", text, "en", emotion, event, voice, speed)).audio)
    (spec,) = [
        s
        for s in dd.split_specs("heldout")
        if s.text == text and s.voice.endswith(voice) and s.speed == speed and s.event == event
    ]
    return np.asarray(dd.make_clip(spec).audio)


# A clip on which a keyterm changes the demo model's output: greedy decoding hears HEARD ("door"
# trails blank at its frames); with the keyterm MISSED the same audio comes back as SAID. HELD is
# a word it hears either way.
HEARD, SAID, MISSED, HELD = "open the", "open the door", "door", "open"


def half_heard_clip() -> np.ndarray:
    """16 kHz float32: the clip the demo model hears as HEARD without keyterms."""
    return heldout_clip(SAID, "en+f3", 215, emotion="happy")


@pytest.fixture(scope="module")
def half_heard() -> np.ndarray:
    return half_heard_clip()


def test_a_keyterm_recovers_a_word_greedy_decoding_misses(demo_engine: Any, half_heard: np.ndarray) -> None:
    plain, keyed = demo_engine.transcribe(
        [
            TranscriptionRequest(half_heard, word_timestamps=True),
            TranscriptionRequest(half_heard, word_timestamps=True, keyterms=(MISSED,)),
        ]
    )
    assert plain.text == HEARD and plain.keyterms_matched is None
    assert keyed.text == SAID
    assert keyed.keyterms_matched == [MISSED]
    # The rich-tag frames are read as before; only the text changed.
    assert (keyed.language, keyed.emotion, keyed.event) == (plain.language, plain.emotion, plain.event)
    assert keyed.raw_text == plain.raw_text  # funasr's own (greedy) decoding, for reference
    # Words and confidences follow the biased text's own best path.
    assert keyed.words is not None and [w.word for w in keyed.words] == SAID.split()
    assert keyed.words[:2] == plain.words
    missed = keyed.words[2]
    assert keyed.words[1].end_ms <= missed.start_ms < missed.end_ms <= keyed.duration_ms
    assert 0.0 < missed.confidence < 0.5  # the model was unsure, and the result says so
    assert 0.0 < keyed.confidence < plain.confidence
    assert "keyterms_matched" in keyed.to_dict() and "keyterms_matched" not in plain.to_dict()


def test_phrases_recover_words_too(demo_engine: Any) -> None:
    clips = [
        (heldout_clip("pick it up", "en-us+m2", 198), "pick up", "pick it up"),
        (heldout_clip("nice to meet you", "en+f3", 138, emotion="sad"), "nice to you", "nice to meet you"),
    ]
    for audio, heard, said in clips:
        plain, keyed = demo_engine.transcribe(
            [TranscriptionRequest(audio), TranscriptionRequest(audio, keyterms=(said, "zebra"))]
        )
        assert (plain.text, keyed.text, keyed.keyterms_matched) == (heard, said, [said])


def test_unrelated_keyterms_leave_correct_text_exactly_as_it_was(demo_engine: Any) -> None:
    dd = demo_data()
    clips = [
        heldout_clip(text, voice, speed)
        for text, voice, speed in (("leave me alone", "en+f3", 198), ("good morning", "en-us+m2", 138))
    ]
    clips += [c.audio for c in dd.generate("heldout", limit=12, workers=1) if c.text]
    plain = demo_engine.transcribe([TranscriptionRequest(a, word_timestamps=True) for a in clips])
    keyterms = MANY_UNSEEN
    assert len(set(keyterms)) == 100
    keyed = demo_engine.transcribe(
        [TranscriptionRequest(a, word_timestamps=True, keyterms=keyterms) for a in clips]
    )
    for p, k in zip(plain, keyed, strict=True):
        assert replace(k, keyterms_matched=None) == p
        assert k.keyterms_matched == []


def test_requests_without_keyterms_are_untouched_by_keyed_neighbours(
    demo_engine: Any, half_heard: np.ndarray, speech_16k: np.ndarray
) -> None:
    batch = [
        TranscriptionRequest(speech_16k, word_timestamps=True),
        TranscriptionRequest(half_heard),
        TranscriptionRequest(speech_16k, use_itn=False),
    ]
    unkeyed = demo_engine.transcribe(batch)
    mixed = demo_engine.transcribe([batch[0], replace(batch[1], keyterms=(MISSED,)), batch[2]])
    assert mixed[0] == unkeyed[0] and mixed[2] == unkeyed[2]
    assert mixed[1].text == SAID


def test_terms_the_model_cannot_spell_decode_greedily(demo_engine: Any, half_heard: np.ndarray) -> None:
    plain, keyed = demo_engine.transcribe(
        [TranscriptionRequest(half_heard), TranscriptionRequest(half_heard, keyterms=("Zebra", "€", " "))]
    )
    assert replace(keyed, keyterms_matched=None) == plain
    assert keyed.keyterms_matched == []


def test_the_onnx_backend_decodes_keyterms_the_same_way(
    tmp_path_factory: pytest.TempPathFactory, half_heard: np.ndarray
) -> None:
    from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

    cache = tmp_path_factory.mktemp("onnx-cache")
    engine = SenseVoiceEngine.load(
        "demo", EngineOptions(device="cpu", precision="int8", backend="onnx", onnx_cache_dir=str(cache))
    )
    assert engine.info.backend == "onnx"
    plain, keyed, unrelated = engine.transcribe(
        [
            TranscriptionRequest(half_heard),
            TranscriptionRequest(half_heard, keyterms=(MISSED,)),
            TranscriptionRequest(half_heard, keyterms=MANY_UNSEEN),
        ]
    )
    assert (plain.text, keyed.text, keyed.keyterms_matched) == (HEARD, SAID, [MISSED])
    assert replace(unrelated, keyterms_matched=None) == plain


def decode_counts() -> tuple[float, float, float, float, float]:
    """(greedy count, keyterms count, greedy sum, keyterms sum, keyterms matched) of this process."""
    value = REGISTRY.get_sample_value
    return (
        value("emostt_decode_seconds_count", {"mode": "greedy"}) or 0.0,
        value("emostt_decode_seconds_count", {"mode": "keyterms"}) or 0.0,
        value("emostt_decode_seconds_sum", {"mode": "greedy"}) or 0.0,
        value("emostt_decode_seconds_sum", {"mode": "keyterms"}) or 0.0,
        value("emostt_keyterm_matches_total") or 0.0,
    )


def test_decodes_are_timed_by_mode_and_matches_counted(
    demo_engine: Any, half_heard: np.ndarray, speech_16k: np.ndarray
) -> None:
    before = decode_counts()
    plain = demo_engine.transcribe([TranscriptionRequest(half_heard), TranscriptionRequest(speech_16k)])
    greedy, keyed, timed, _, matched = (a - b for a, b in zip(decode_counts(), before, strict=True))
    assert (greedy, keyed, matched) == (2, 0, 0) and timed > 0
    assert all(r.keyterms_matched is None for r in plain)

    before = decode_counts()
    mixed = demo_engine.transcribe(
        [
            TranscriptionRequest(half_heard, keyterms=(MISSED, HELD, "zebra")),
            TranscriptionRequest(speech_16k),
            TranscriptionRequest(half_heard, keyterms=MANY_UNSEEN),
        ]
    )
    greedy, keyed, greedy_s, keyed_s, matched = (a - b for a, b in zip(decode_counts(), before, strict=True))
    assert (greedy, keyed) == (1, 2)
    assert greedy_s > 0 and keyed_s > 0
    # Each distinct keyterm found in a decoded utterance counts once; unheard ones find nothing.
    assert mixed[0].keyterms_matched == [HELD, MISSED] and mixed[2].keyterms_matched == []
    assert matched == 2
