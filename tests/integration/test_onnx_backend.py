"""The ONNX Runtime int8 backend: funasr's exporter on the loaded model, cached per revision,
and results that agree with the torch engine on real speech. Backend auto: torch at once,
the export in the background, then a switch to ONNX while serving."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from emostt.errors import ModelLoadError
from emostt.inference import sensevoice, switching
from emostt.inference.engine import TranscriptionRequest, TranscriptionResult
from emostt.inference.loading import auto_backend, check_backend
from emostt.inference.onnx_cache import COMPLETE_MARKER, QUANTIZED_FILE, cached_export, remove_stale_staging
from emostt.inference.onnx_export import export_in_subprocess
from emostt.inference.sensevoice import EXPORT_THREAD_NAME, EngineOptions, SenseVoiceEngine
from emostt.server.planning import CPU_ONNX_MAX_PADDED_SECONDS
from tests.conftest import espeak
from tests.integration.server import pcm16, running_server, service_settings, stream

# Below pytest's own per-test timeout, so a stuck export fails with this file's message.
SWITCH_TIMEOUT_S = 240.0


def onnx_options(cache: Path) -> EngineOptions:
    return EngineOptions(device="cpu", precision="int8", backend="onnx", onnx_cache_dir=str(cache))


def auto_options(cache: Path, background_export: bool = True) -> EngineOptions:
    return EngineOptions(
        device="cpu", backend="auto", onnx_cache_dir=str(cache), background_export=background_export
    )


def assert_same_answers(got: list[TranscriptionResult], want: list[TranscriptionResult]) -> None:
    """The runtimes agree: same text and labels; int8 moves scores a little, not their shape."""
    for mine, reference in zip(got, want, strict=True):
        assert mine.text == reference.text
        assert mine.language.label == reference.language.label == "en"
        assert mine.event.label == reference.event.label
        for label, p in reference.emotion.scores.items():
            assert abs(mine.emotion.scores[label] - p) < 0.1, (
                label,
                mine.emotion.scores,
                reference.emotion.scores,
            )


def export_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == EXPORT_THREAD_NAME]


def forbid_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any export the engine starts, in process or in a child, fails the test."""

    def no_export(*args: object, **kwargs: object) -> Path:
        raise AssertionError("exported although it must not")

    monkeypatch.setattr(sensevoice, "ensure_exported", no_export)
    monkeypatch.setattr(switching, "export_in_subprocess", no_export)


class GatedExport:
    """Stands in for ``export_in_subprocess`` in the engine: holds the export until
    ``release``, then runs the real one, or hands over ``exported`` when set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported: Path | None = None

    def __call__(self, model_dir: Path, cache_dir: Path) -> Path:
        assert self.release.wait(SWITCH_TIMEOUT_S), "the test never released the export"
        return self.exported or export_in_subprocess(model_dir, cache_dir)


@pytest.fixture
def gated_export(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedExport]:
    gate = GatedExport()
    monkeypatch.setattr(switching, "export_in_subprocess", gate)
    yield gate
    gate.release.set()  # never leave an export thread waiting behind a failed test


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_engine(cache: Path) -> SenseVoiceEngine:
    return SenseVoiceEngine.load("demo", onnx_options(cache))


@pytest.fixture(scope="module")
def torch_engine() -> SenseVoiceEngine:
    return SenseVoiceEngine.load("demo", EngineOptions(device="cpu", precision="fp32", backend="torch"))


@pytest.fixture(scope="module")
def phrases(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray]]:
    from emostt.audio import read_audio_file

    folder = tmp_path_factory.mktemp("phrases")
    texts = ["turn left", "what time is it", "open the door"]
    return [
        (t, read_audio_file(espeak(t, folder / f"{i}.wav", voice="en-us+m3"))) for i, t in enumerate(texts)
    ]


def test_onnx_engine_transcribes_speech_like_the_torch_engine(
    onnx_engine: SenseVoiceEngine, torch_engine: SenseVoiceEngine, phrases: list[tuple[str, np.ndarray]]
) -> None:
    requests = [TranscriptionRequest(audio) for _, audio in phrases]
    got = onnx_engine.transcribe(requests)  # one padded batch of three lengths
    want = torch_engine.transcribe(requests)
    # How well the demo model reads each phrase is the e2e tests' business; here the runtimes
    # must agree, on transcripts with real words in them.
    assert all(len(r.text.split()) >= 2 for r in want), [r.text for r in want]
    assert_same_answers(got, want)
    assert (onnx_engine.info.backend, onnx_engine.info.precision) == ("onnx", "int8")
    assert onnx_engine.export_state == "ready"


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
        ("cpu", "int8", "tensorrt", "backend must be one of auto, torch, onnx"),
    ],
)
def test_unsupported_backend_settings_are_refused_clearly(
    device: str, precision: str, backend: str, message: str, tmp_path: Path
) -> None:
    options = EngineOptions(device=device, precision=precision, backend=backend, onnx_cache_dir=str(tmp_path))
    with pytest.raises(ModelLoadError, match=message):
        SenseVoiceEngine.load("demo", options)


async def test_the_server_streams_finals_from_the_onnx_engine_in_short_batches(
    onnx_engine: SenseVoiceEngine, phrases: list[tuple[str, np.ndarray]]
) -> None:
    silence = np.zeros(16_000, dtype=np.float32)
    audio = np.concatenate([silence, phrases[0][1], silence, phrases[1][1], silence])
    with running_server(service_settings(), onnx_engine) as srv:
        state = srv.uvicorn_server.config.app.state.emostt
        assert state.batcher.max_padded_seconds() == CPU_ONNX_MAX_PADDED_SECONDS
        transcript = await stream(srv.ws_url("robot-1"), pcm16(audio))
    assert [f["text"] for f in transcript.of("final")] == [phrases[0][0], phrases[1][0]]
    assert not transcript.of("error")


def test_an_unwritable_cache_dir_is_a_clear_load_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    with pytest.raises(ModelLoadError, match="cannot write the ONNX cache"):
        SenseVoiceEngine.load("demo", onnx_options(blocker / "cache"))


# -- backend auto ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "precision", "expected"),
    [("cpu", "int8", "onnx"), ("cpu", "fp32", "torch"), ("cuda", "fp16", "torch"), ("cuda", "bf16", "torch")],
)
def test_auto_aims_for_onnx_only_on_the_cpu_int8_path(device: str, precision: str, expected: str) -> None:
    check_backend("auto", device, precision)  # accepted everywhere
    assert auto_backend(device, precision) == expected


def test_auto_serves_with_torch_at_once_and_switches_to_onnx_when_the_background_export_is_done(
    tmp_path: Path,
    gated_export: GatedExport,
    torch_engine: SenseVoiceEngine,
    phrases: list[tuple[str, np.ndarray]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=switching.__name__)
    requests = [TranscriptionRequest(audio) for _, audio in phrases]
    engine = SenseVoiceEngine.load("demo", auto_options(tmp_path))
    # The export is held back: everything here happens while it is still running.
    assert (engine.info.backend, engine.info.precision, engine.export_state) == ("torch", "int8", "exporting")
    assert [t.daemon for t in export_threads()] == [True]
    before = engine.transcribe(requests)
    assert [r.text for r in before] == [r.text for r in torch_engine.transcribe(requests)]
    torch_model = weakref.ref(engine._model)
    assert "exporting the encoder to ONNX in the background" in caplog.text

    gated_export.release.set()
    assert engine.wait_for_backend("onnx", timeout=SWITCH_TIMEOUT_S)
    assert (engine.info.backend, engine.info.precision, engine.export_state) == ("onnx", "int8", "ready")
    assert_same_answers(engine.transcribe(requests), torch_engine.transcribe(requests))
    assert "switched to the ONNX encoder" in caplog.text
    # The export is cached for the next start, and the torch weights are not kept.
    (entry,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert cached_export(entry) is not None
    gc.collect()
    assert torch_model() is None, "the torch model outlived the switch"


def transcribe_until(
    engine: SenseVoiceEngine,
    requests: list[TranscriptionRequest],
    switched: threading.Event,
    started: threading.Barrier,
    calls_after_switch: int,
) -> Callable[[], list[tuple[str, str, list[TranscriptionResult]]]]:
    """A worker body: transcribe in a loop until ``switched``, then a few more times. Each call
    is noted with ``info.backend`` read before and after it."""
    calls: list[tuple[str, str, list[TranscriptionResult]]] = []

    def run() -> list[tuple[str, str, list[TranscriptionResult]]]:
        after = 0
        while after < calls_after_switch:
            before = engine.info.backend
            results = engine.transcribe(requests)
            calls.append((before, engine.info.backend, results))
            if len(calls) == 1:
                started.wait(SWITCH_TIMEOUT_S)
            after += switched.is_set()
        return calls

    return run


def test_transcribe_calls_from_two_threads_across_the_switch_all_succeed(
    tmp_path: Path,
    gated_export: GatedExport,
    onnx_engine: SenseVoiceEngine,
    cache: Path,
    torch_engine: SenseVoiceEngine,
    phrases: list[tuple[str, np.ndarray]],
) -> None:
    # The switch is under test here, not the export: hand over the module's export at once.
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    gated_export.exported = cached_export(entry)
    requests = [TranscriptionRequest(audio) for _, audio in phrases]
    want = [r.text for r in torch_engine.transcribe(requests)]
    engine = SenseVoiceEngine.load("demo", auto_options(tmp_path))
    switched = threading.Event()
    # Both workers and this thread meet once each worker has finished a call on torch.
    started = threading.Barrier(3)
    bodies = [transcribe_until(engine, requests, switched, started, calls_after_switch=3) for _ in range(2)]
    outcomes: list[list[tuple[str, str, list[TranscriptionResult]]]] = []
    errors: list[BaseException] = []

    def worker(body: Callable[[], list[tuple[str, str, list[TranscriptionResult]]]]) -> None:
        try:
            outcomes.append(body())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
            started.abort()

    threads = [threading.Thread(target=worker, args=(body,), daemon=True) for body in bodies]
    for thread in threads:
        thread.start()
    try:
        started.wait(SWITCH_TIMEOUT_S)
        gated_export.release.set()
        assert engine.wait_for_backend("onnx", timeout=SWITCH_TIMEOUT_S)
    finally:
        switched.set()  # the workers stop whatever happened here
        for thread in threads:
            thread.join(SWITCH_TIMEOUT_S)
    assert not errors, errors
    assert len(outcomes) == 2
    for calls in outcomes:
        # The engine switches the pass before info: "torch" after a call means it ran on
        # torch, "onnx" before it means it ran on ONNX.
        assert any(after == "torch" for _, after, _ in calls)
        assert any(before == "onnx" for before, _, _ in calls)
        for _, _, results in calls:
            assert [r.text for r in results] == want
            assert all(r.language.label == "en" and r.emotion.label and r.event.label for r in results)


def test_a_second_auto_load_uses_the_cached_export_at_once(
    onnx_engine: SenseVoiceEngine, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_exports(monkeypatch)
    engine = SenseVoiceEngine.load("demo", auto_options(cache))
    assert (engine.info.backend, engine.export_state) == ("onnx", "ready")
    assert not export_threads()
    assert engine.transcribe([TranscriptionRequest(np.zeros(16_000, dtype=np.float32))])[0].text == ""


def test_a_failed_background_export_leaves_torch_serving_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[Path] = []

    def failing_export(model_dir: Path, cache_dir: Path) -> Path:
        attempts.append(cache_dir)
        raise ModelLoadError("ONNX export of the encoder failed: no space left on device")

    monkeypatch.setattr(switching, "export_in_subprocess", failing_export)
    engine = SenseVoiceEngine.load("demo", auto_options(tmp_path))
    assert not engine.wait_for_backend("onnx", timeout=SWITCH_TIMEOUT_S)
    for thread in export_threads():
        thread.join(SWITCH_TIMEOUT_S)
    assert (engine.info.backend, engine.export_state) == ("torch", "failed")
    assert len(attempts) == 1, "a failed export must not be retried"
    result = engine.transcribe([TranscriptionRequest(np.zeros(16_000, dtype=np.float32))])[0]
    assert result.text == "" and 0.0 <= result.confidence <= 1.0
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "no space left on device" in error.getMessage()
    assert "serving with torch" in error.getMessage()


def test_auto_without_background_export_serves_with_torch_and_exports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_exports(monkeypatch)
    engine = SenseVoiceEngine.load("demo", auto_options(tmp_path, background_export=False))
    assert (engine.info.backend, engine.info.precision, engine.export_state) == ("torch", "int8", "none")
    assert not export_threads()
    assert not engine.wait_for_backend("onnx", timeout=0)
    assert engine.transcribe([TranscriptionRequest(np.zeros(16_000, dtype=np.float32))])[0].text == ""
    assert not list(tmp_path.iterdir())


def test_auto_in_fp32_serves_with_torch_even_with_an_export_cached(
    onnx_engine: SenseVoiceEngine, cache: Path
) -> None:
    options = EngineOptions(device="cpu", precision="fp32", backend="auto", onnx_cache_dir=str(cache))
    engine = SenseVoiceEngine.load("demo", options)
    assert (engine.info.backend, engine.info.precision, engine.export_state) == ("torch", "fp32", "none")


def test_a_failing_export_process_reports_its_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="the ONNX export process failed"):
        export_in_subprocess(tmp_path / "no-such-model", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_staging_dirs_of_dead_exports_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead, live = tmp_path / ".export-dead", tmp_path / ".export-live"
    for staging in (dead, live):
        staging.mkdir()
        (staging / "model.onnx").write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (dead / "model.onnx", dead):
        os.utime(path, (two_days_ago, two_days_ago))
    remove_stale_staging(tmp_path)
    assert not dead.exists()
    assert live.exists()
