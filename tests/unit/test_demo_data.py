"""Fast checks on the synthetic demo dataset generator (tools/demo_data.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf

TOOL = Path(__file__).resolve().parents[2] / "tools" / "demo_data.py"


def _load() -> ModuleType:
    # Registered under its own name: dataclasses and the worker pool look it up there.
    if "demo_data" in sys.modules:
        return sys.modules["demo_data"]
    spec = importlib.util.spec_from_file_location("demo_data", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_data"] = module
    spec.loader.exec_module(module)
    return module


dd = _load()


def _speech(text: str = "open the door", emotion: str = "neutral", event: str = "speech") -> Any:
    return dd.ClipSpec("speech", text, "en", emotion, event, "en+f2", 175)


def _speech_values(specs: list[Any], field: str) -> set[object]:
    return {getattr(s, field) for s in specs if s.kind == "speech"}


def test_speech_clip_is_16k_float32_mono_with_speech() -> None:
    clip = dd.make_clip(_speech())
    assert dd.SAMPLE_RATE == 16000
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert 0.4 < len(clip.audio) / dd.SAMPLE_RATE < 3.0
    assert 0.2 < np.max(np.abs(clip.audio)) <= dd.MAX_PEAK
    assert (clip.text, clip.language, clip.emotion, clip.event) == (
        "open the door",
        "en",
        "neutral",
        "speech",
    )
    start, end = dd.active_span(clip.audio)
    # Silence trimmed to 100-200 ms each side (a 10 ms frame of slack for the detector).
    assert 0.09 <= start / dd.SAMPLE_RATE <= 0.21
    assert 0.09 <= (len(clip.audio) - end) / dd.SAMPLE_RATE <= 0.21


def test_every_language_produces_speech() -> None:
    for language in dd.LANGUAGES:
        text = next(t for t, lang in dd.PHRASES if lang == language)
        voice = dd.voice_for(language, "f2", dd.TRAIN_VARIANTS)
        clip = dd.make_clip(dd.ClipSpec("speech", text, language, "neutral", "speech", voice, 175))
        assert dd.active_rms(clip.audio) > 0.02, language


def test_same_spec_same_audio() -> None:
    spec = _speech(emotion="happy", event="bgm")
    assert np.array_equal(dd.make_clip(spec).audio, dd.make_clip(spec).audio)
    noise = dd.ClipSpec("noise", "", "nospeech", "unknown", "event_unk", "", 0, 3)
    assert np.array_equal(dd.make_clip(noise).audio, dd.make_clip(noise).audio)
    other = dd.ClipSpec("noise", "", "nospeech", "unknown", "event_unk", "", 0, 4)
    assert not np.array_equal(dd.make_clip(noise).audio[:8000], dd.make_clip(other).audio[:8000])


def test_train_and_heldout_share_no_voice_or_speed() -> None:
    train, heldout = dd.split_specs("train"), dd.split_specs("heldout")
    assert 3000 <= len(train) <= 8000 and 200 <= len(heldout) <= 400
    assert _speech_values(train, "voice").isdisjoint(_speech_values(heldout, "voice"))
    assert _speech_values(train, "speed").isdisjoint(_speech_values(heldout, "speed"))
    assert set(dd.TRAIN_VARIANTS).isdisjoint(dd.HELDOUT_VARIANTS)
    for specs in (train, heldout):
        assert {s.language for s in specs} == {*dd.LANGUAGES, "nospeech"}
        assert {s.emotion for s in specs} == {*dd.EMOTIONS, "unknown"}
        assert {s.event for s in specs} == {"speech", "bgm", "event_unk"}
    assert dd.split_specs("train") == train  # fixed order, not just fixed content


def test_sad_is_slower_and_quieter_than_angry() -> None:
    for text in ("open the door", "what is your name"):
        sad = dd.make_clip(_speech(text, "sad")).audio
        angry = dd.make_clip(_speech(text, "angry")).audio
        assert len(sad) > 1.2 * len(angry), text
        assert dd.active_rms(sad) < 0.6 * dd.active_rms(angry), text


def test_nospeech_clips_have_no_text() -> None:
    specs = [s for s in dd.split_specs("heldout") if s.kind != "speech"]
    assert {s.event for s in specs} == {"bgm", "event_unk"}
    for spec in specs[:6]:
        clip = dd.make_clip(spec)
        assert clip.text == "" and clip.language == "nospeech" and clip.emotion == "unknown"
        assert 0.5 <= len(clip.audio) / dd.SAMPLE_RATE <= 2.0
        assert clip.audio.dtype == np.float32 and np.max(np.abs(clip.audio)) < 1.0


def test_generate_with_workers_matches_make_clip() -> None:
    clips = dd.generate("heldout", limit=12, workers=2)
    specs = dd.split_specs("heldout")[:12]
    assert len(clips) == 12
    for clip, spec in zip(clips, specs, strict=True):
        assert clip.text == spec.text and clip.event == spec.event
    assert np.array_equal(clips[5].audio, dd.make_clip(specs[5]).audio)


def test_cli_writes_wavs_and_manifest(tmp_path: Path) -> None:
    assert dd.main([str(tmp_path), "--split", "heldout", "--limit", "5", "--workers", "1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        info = sf.info(tmp_path / row["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert {"text", "language", "emotion", "event", "voice", "speed"} <= row.keys()
    assert json.loads((tmp_path / "meta.json").read_text())["clips"] == 5


def test_generated_variants_are_real_distinct_voices_used_in_training_only() -> None:
    dd.check_voices()  # fails if espeak-ng does not list a pinned or generated variant
    assert dd.generated_variant_text(3) == dd.generated_variant_text(3)
    style = dd.STYLES["neutral"]
    base = dd._synthesize("turn left", "en", style, 175)
    first, second = (
        dd._synthesize("turn left", f"en+{name}", style, 175) for name in list(dd.GENERATED_VARIANTS)[:2]
    )
    # espeak-ng falls back to the plain voice for a variant it cannot load; these must not.
    for audio in (first, second):
        n = min(len(audio), len(base))
        assert not np.allclose(audio[:n], base[:n], atol=1e-3)
    n = min(len(first), len(second))
    assert not np.allclose(first[:n], second[:n], atol=1e-3)
    train_voices = {s.voice.split("+")[-1] for s in dd.split_specs("train") if s.kind == "speech"}
    heldout_voices = {s.voice.split("+")[-1] for s in dd.split_specs("heldout") if s.kind == "speech"}
    assert set(dd.GENERATED_VARIANTS) <= train_voices
    assert heldout_voices.isdisjoint(dd.GENERATED_VARIANTS)
