"""The end-of-turn model: emostt's features and runtime give Pipecat's own analyzer's probability,
whatever the batch, and the turn_model setting resolves as documented."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from emostt.audio import read_audio_file
from emostt.config import Settings
from emostt.inference.smart_turn import SmartTurn, locate_turn_model, pipecat_turn_model
from emostt.inference.turn_features import WINDOW_SAMPLES, turn_features, turn_window
from tests.conftest import espeak

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    path = pipecat_turn_model()
    assert path is not None, "pipecat-ai==1.14.0 is installed for the tests (tools/setup.sh)"
    return SmartTurn(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Real speech (espeak-ng), quantised to 16-bit as a session's audio is: shorter than the
    window, a complete and an unfinished sentence, one longer than 8 s, noise, silence."""
    folder = tmp_path_factory.mktemp("turns")
    said = {
        "short": "turn left",
        "complete": "please turn left and stop at the door.",
        "unfinished": "so I was thinking that maybe we could",
        "long": "first go straight for two blocks, then turn left at the bakery, walk past the "
        "station and the park, and stop at the blue door on the corner of the square",
    }
    out = {name: read_audio_file(espeak(text, folder / f"{name}.wav")) for name, text in said.items()}
    out["sample"] = read_audio_file(ROOT / "docs" / "samples" / "turn_left.wav")
    out["noise"] = (np.random.default_rng(0).standard_normal(3 * 16_000) * 0.05).astype(np.float32)
    out["silence"] = np.zeros(16_000, dtype=np.float32)
    return {
        name: (np.round(a * 32767).astype(np.int16).astype(np.float32) / 32768.0) for name, a in out.items()
    }


def pipecat_probability(audio: np.ndarray) -> float:
    """Pipecat's LocalSmartTurnAnalyzerV3 through its public API: the turn's audio as 16-bit PCM
    with speech, then analyze_end_of_turn; the probability is in its metrics."""
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    analyzer = LocalSmartTurnAnalyzerV3()
    analyzer.set_sample_rate(16_000)
    analyzer.append_audio((audio * 32768.0).astype(np.int16).tobytes(), is_speech=True)
    _, result = asyncio.run(analyzer.analyze_end_of_turn())
    asyncio.run(analyzer.cleanup())
    assert result is not None
    return float(result.probability)  # type: ignore[attr-defined]


def test_the_clips_cover_short_long_and_both_answers(clips: dict[str, np.ndarray], model: SmartTurn) -> None:
    assert len(clips["short"]) < 2 * 16_000 and len(clips["long"]) > WINDOW_SAMPLES
    probs = model.predict([clips["complete"], clips["unfinished"]])
    assert probs[0] > 0.5 > probs[1], probs  # the model tells a finished sentence from an open one


def test_probabilities_match_pipecats_analyzer(clips: dict[str, np.ndarray], model: SmartTurn) -> None:
    for name, audio in clips.items():
        ours = model.predict([audio])[0]
        assert ours == pytest.approx(pipecat_probability(audio), abs=TOLERANCE), name


def test_features_are_pipecats(clips: dict[str, np.ndarray]) -> None:
    from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

    for name, audio in clips.items():
        ours = turn_features(audio)
        assert ours.shape == (80, 800) and ours.dtype == np.float32
        reference = compute_whisper_log_mel_features(turn_window(audio))
        np.testing.assert_allclose(ours, reference, atol=1e-6, err_msg=name)


def test_a_batch_gives_each_turn_its_own_probability(clips: dict[str, np.ndarray], model: SmartTurn) -> None:
    audios = list(clips.values())
    alone = [model.predict([a])[0] for a in audios]
    np.testing.assert_allclose(model.predict(audios), alone, atol=1e-5)
    np.testing.assert_allclose(model.predict(audios[::-1]), alone[::-1], atol=1e-5)
    assert model.predict([]) == []


def test_only_the_last_8_seconds_count(clips: dict[str, np.ndarray], model: SmartTurn) -> None:
    long = clips["long"]
    assert model.predict([long])[0] == model.predict([long[-WINDOW_SAMPLES:]])[0]
    padded = np.concatenate((np.zeros(WINDOW_SAMPLES, np.float32), clips["short"]))
    assert model.predict([padded])[0] == pytest.approx(model.predict([clips["short"]])[0], abs=1e-6)


def test_turn_model_setting_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = pipecat_turn_model()
    assert locate_turn_model("auto").path == installed
    assert locate_turn_model("off").path is None
    own = tmp_path / "smart-turn.onnx"
    own.write_bytes(b"")
    assert locate_turn_model(str(own)).path == own
    # auto without pipecat-ai: off, with a reason for the log line; nothing is imported or fetched.
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    choice = locate_turn_model("auto")
    assert choice.path is None and "pipecat-ai is not installed" in choice.reason


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("on", "turn_model must be auto, off, or the path of a Smart Turn .onnx file"),
        ("/no/such/model.onnx", "turn_model: no such file '/no/such/model.onnx'"),
        ("", "turn_model must be"),
    ],
)
def test_a_bad_turn_model_stops_the_start_up(value: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(turn_model=value)
    (error,) = refused.value.errors()
    assert error["loc"] == ("turn_model",) and fragment in error["msg"]


def test_turn_model_setting_accepts_its_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "model.onnx"
    own.write_bytes(b"")
    assert Settings().turn_model == "auto"
    assert Settings(turn_model="off").turn_model == "off"
    monkeypatch.setenv("EMOSTT_TURN_MODEL", str(own))
    assert Settings().turn_model == str(own)
