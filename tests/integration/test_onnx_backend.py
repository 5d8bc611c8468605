"""The ONNX Runtime int8 backend: funasr's exporter on the loaded model, cached per revision,
and results that agree with the torch engine on real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostt.errors import ModelLoadError
from emostt.inference.engine import TranscriptionRequest
from emostt.inference.onnx_encoder import COMPLETE_MARKER, QUANTIZED_FILE
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from tests.conftest import espeak
from tests.integration.server import pcm16, running_server, service_settings, stream


def onnx_options(cache: Path) -> EngineOptions:
    return EngineOptions(device="cpu", precision="int8", backend="onnx", onnx_cache_dir=str(cache))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_engine(cache: Path) -> SenseVoiceEngine:
    return SenseVoiceEngine.load("demo", onnx_options(cache))


@pytest.fixture(scope="module")
def phrases(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray]]:
    from emostt.audio import read_audio_file

    folder = tmp_path_factory.mktemp("phrases")
    texts = ["turn left", "what time is it", "open the door"]
    return [
        (t, read_audio_file(espeak(t, folder / f"{i}.wav", voice="en-us+m3"))) for i, t in enumerate(texts)
    ]


def test_onnx_engine_transcribes_speech_like_the_torch_engine(
    onnx_engine: SenseVoiceEngine, phrases: list[tuple[str, np.ndarray]]
) -> None:
    torch_engine = SenseVoiceEngine.load("demo", EngineOptions(device="cpu", precision="fp32"))
    requests = [TranscriptionRequest(audio) for _, audio in phrases]
    got = onnx_engine.transcribe(requests)  # one padded batch of three lengths
    want = torch_engine.transcribe(requests)
    # How well the demo model reads each phrase is the e2e tests' business; here the runtimes
    # must agree, on transcripts with real words in them.
    assert all(len(r.text.split()) >= 2 for r in want), [r.text for r in want]
    for mine, reference in zip(got, want, strict=True):
        assert mine.text == reference.text
        assert mine.language.label == reference.language.label == "en"
        assert mine.event.label == reference.event.label
        # int8 moves scores a little, not the distributions' shape.
        for label, p in reference.emotion.scores.items():
            assert abs(mine.emotion.scores[label] - p) < 0.1, (
                label,
                mine.emotion.scores,
                reference.emotion.scores,
            )
    assert (onnx_engine.info.backend, onnx_engine.info.precision) == ("onnx", "int8")


def test_padding_in_a_batch_changes_an_utterance_only_by_quantization_noise(
    onnx_engine: SenseVoiceEngine, phrases: list[tuple[str, np.ndarray]]
) -> None:
    # Dynamic quantization scales activations per batch, so batch-mates move the numbers a
    # little (as with torch's int8); masking must keep the padding itself out.
    short = TranscriptionRequest(phrases[0][1])
    alone = onnx_engine.log_probs([short])[0]
    batched = onnx_engine.log_probs([short, TranscriptionRequest(phrases[1][1])])[0]
    assert alone.shape == batched.shape
    np.testing.assert_allclose(alone, batched, atol=0.5)
    assert (alone.argmax(-1) == batched.argmax(-1)).all()


def test_a_second_load_reuses_the_cached_export(
    onnx_engine: SenseVoiceEngine, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in entries[0].iterdir()) == [COMPLETE_MARKER, QUANTIZED_FILE]

    from funasr import AutoModel

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again although the cache is complete")

    monkeypatch.setattr(AutoModel, "export", no_export)
    again = SenseVoiceEngine.load("demo", onnx_options(cache))
    assert again.transcribe([TranscriptionRequest(np.zeros(16_000, dtype=np.float32))])[0].text == ""


def test_an_incomplete_cache_entry_is_exported_again(tmp_path: Path) -> None:
    first = SenseVoiceEngine.load("demo", onnx_options(tmp_path))
    (entry,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    (entry / COMPLETE_MARKER).unlink()  # as if the process died before the export finished
    (entry / QUANTIZED_FILE).write_bytes(b"truncated")
    second = SenseVoiceEngine.load("demo", onnx_options(tmp_path))
    audio = np.zeros(8_000, dtype=np.float32)
    assert (entry / COMPLETE_MARKER).is_file()
    assert (
        second.transcribe([TranscriptionRequest(audio)])[0].text
        == first.transcribe([TranscriptionRequest(audio)])[0].text
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")], "staging dirs left behind"


@pytest.mark.parametrize(
    ("device", "precision", "backend", "message"),
    [
        ("cpu", "fp32", "onnx", "CPU int8 path"),
        ("cpu", "int8", "tensorrt", "backend must be one of"),
    ],
)
def test_unsupported_backend_settings_are_refused_clearly(
    device: str, precision: str, backend: str, message: str, tmp_path: Path
) -> None:
    options = EngineOptions(device=device, precision=precision, backend=backend, onnx_cache_dir=str(tmp_path))
    with pytest.raises(ModelLoadError, match=message):
        SenseVoiceEngine.load("demo", options)


async def test_the_server_streams_finals_from_the_onnx_engine_one_utterance_per_batch(
    onnx_engine: SenseVoiceEngine, phrases: list[tuple[str, np.ndarray]]
) -> None:
    silence = np.zeros(16_000, dtype=np.float32)
    audio = np.concatenate([silence, phrases[0][1], silence, phrases[1][1], silence])
    with running_server(service_settings(), onnx_engine) as srv:
        state = srv.uvicorn_server.config.app.state.emostt
        assert state.batcher.config.max_batch_size == 1
        transcript = await stream(srv.ws_url("robot-1"), pcm16(audio))
    assert [f["text"] for f in transcript.of("final")] == [phrases[0][0], phrases[1][0]]
    assert not transcript.of("error")


def test_an_unwritable_cache_dir_is_a_clear_load_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    with pytest.raises(ModelLoadError, match="cannot write the ONNX cache"):
        SenseVoiceEngine.load("demo", onnx_options(blocker / "cache"))
