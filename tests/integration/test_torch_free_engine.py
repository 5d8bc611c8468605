"""Torch-free CPU serving: ``emostt model export`` writes a self-contained ONNX dir, and the
torch-free engine (ONNX Runtime, numpy features and reductions) serves it, or a model dir whose
export is cached, with the results of today's torch-loaded ONNX path (same int8 graph) within
1e-5; a real ``emostt serve`` on an exported dir answers over /ws/stt without ever importing
torch or funasr."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from emostt.audio import read_audio_file
from emostt.errors import ModelLoadError
from emostt.inference import onnx_encoder
from emostt.inference.engine import TranscriptionRequest, TranscriptionResult
from emostt.inference.int8_weights import FUNASR_QUANTIZATION, QUANTIZATION, unsigned_weights
from emostt.inference.lone_call import running_alone
from emostt.inference.model_source import EXPORTED_MANIFEST
from emostt.inference.onnx_engine import OnnxEngine
from emostt.inference.onnx_model import model_dir_files
from emostt.inference.options import EngineOptions
from emostt.inference.ort_session import EncoderThreads
from emostt.inference.revision import file_digest
from emostt.inference.sensevoice import SenseVoiceEngine
from emostt.inference.serving import load_engine
from tests.conftest import espeak, noise_utterances
from tests.deploy.slim import PYTHON_FLAGS, as_in_slim_image
from tests.integration.server import free_port, pcm16, stream

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
TOLERANCE = 1e-5
START_TIMEOUT_S = 120.0


def auto_options(cache: Path) -> EngineOptions:
    return EngineOptions(device="cpu", backend="auto", onnx_cache_dir=str(cache))


def onnx_options(cache: Path) -> EngineOptions:
    return EngineOptions(device="cpu", precision="int8", backend="onnx", onnx_cache_dir=str(cache))


def clean_env(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EMOSTT_", "PROMETHEUS_"))}
    return {**clean, "EMOSTT_LOG_JSON": "false", **env}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def exported_demo(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real command: ``emostt model export demo OUT`` (exports into the cache first)."""
    out = tmp_path_factory.mktemp("exported") / "demo-onnx"
    done = subprocess.run(
        [sys.executable, "-m", "emostt", "model", "export", "demo", str(out)],
        env=clean_env(EMOSTT_ONNX_CACHE_DIR=str(cache)),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exported 'demo' (revision " in done.stdout and str(out) in done.stdout
    assert out.stat().st_mode & 0o777 == 0o755, "readable by a server running as another user"
    return out


@pytest.fixture(scope="module")
def torch_onnx_demo(exported_demo: Path, cache: Path) -> SenseVoiceEngine:
    """Today's ONNX path: funasr's model loaded with torch, the cached graph on ONNX Runtime."""
    engine = SenseVoiceEngine.load("demo", onnx_options(cache))
    assert engine.info.backend == "onnx"
    return engine


@pytest.fixture(scope="module")
def phrases(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("phrases")
    texts = ["turn left", "what time is it", "open the door please", "stop at the door"]
    clips = [read_audio_file(espeak(t, folder / f"{i}.wav", voice="en-us+m3")) for i, t in enumerate(texts)]
    return [*clips, read_audio_file(SAMPLE), *noise_utterances([0.5, 2.0], seed=3)]


def varied_requests(clips: Sequence[np.ndarray]) -> list[TranscriptionRequest]:
    """Every option that changes the decoding: hints, ITN, words, known emotion, keyterms."""
    requests = [TranscriptionRequest(clip, word_timestamps=True) for clip in clips]
    requests += [
        TranscriptionRequest(clips[0], language="en", use_itn=False, known_emotion_only=True),
        TranscriptionRequest(clips[1], language="zh", keyterms=("time", "left")),
        TranscriptionRequest(clips[2], keyterms=("door", "open the door"), word_timestamps=True),
    ]
    return requests


def worst_gap(got: list[TranscriptionResult], want: list[TranscriptionResult]) -> float:
    """Same text, words and labels; the largest score gap (languages, emotions, events,
    confidence, word confidences)."""
    worst = 0.0
    for mine, ref in zip(got, want, strict=True):
        assert (mine.text, mine.raw_text, mine.keyterms_matched) == (
            ref.text,
            ref.raw_text,
            ref.keyterms_matched,
        )
        assert [(w.word, w.start_ms, w.end_ms) for w in mine.words or []] == [
            (w.word, w.start_ms, w.end_ms) for w in ref.words or []
        ]
        pairs = [(mine.confidence, ref.confidence)]
        for a, b in ((mine.language, ref.language), (mine.emotion, ref.emotion), (mine.event, ref.event)):
            assert a.label == b.label and a.scores.keys() == b.scores.keys()
            pairs += [(a.scores[k], b.scores[k]) for k in a.scores]
        pairs += [
            (a.confidence, b.confidence) for a, b in zip(mine.words or [], ref.words or [], strict=True)
        ]
        worst = max(worst, *(abs(a - b) for a, b in pairs))
    return worst


def test_the_exported_dir_holds_the_graph_tokenizer_cmvn_settings_and_identity(
    exported_demo: Path, cache: Path, torch_onnx_demo: SenseVoiceEngine
) -> None:
    manifest = json.loads((exported_demo / EXPORTED_MANIFEST).read_text())
    assert manifest["name"] == "demo"
    assert manifest["revision"].startswith(torch_onnx_demo.info.revision) and len(manifest["revision"]) == 64
    assert manifest["frontend"]["lfr_m"] == 7 and manifest["frontend"]["lfr_n"] == 6
    names = {p.name for p in exported_demo.iterdir()}
    assert names == {EXPORTED_MANIFEST, "model_quant.onnx", "am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model"}
    assert manifest["quantization"] == QUANTIZATION
    assert weight_types(exported_demo / "model_quant.onnx") == {onnx.TensorProto.INT8}
    # The graph is the cache's, byte for byte: one export per revision.
    (entry,) = [p for p in cache.iterdir() if p.name.startswith(manifest["revision"])]
    assert (exported_demo / "model_quant.onnx").read_bytes() == (entry / "model_quant.onnx").read_bytes()


def weight_types(graph: Path) -> set[int]:
    """The element types of the graph's MatMulInteger weights."""
    model = onnx.load(str(graph))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return {inits[n.input[1]] for n in model.graph.node if n.op_type == "MatMulInteger"}


def test_an_older_export_with_unsigned_weights_still_serves_and_says_to_export_again(
    exported_demo: Path,
    cache: Path,
    tmp_path: Path,
    phrases: list[np.ndarray],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dir exported before the weights were signed (funasr's quantization: unsigned, and no
    ``quantization`` in its manifest) is served; the shift to unsigned weights is exact, so its
    results are the signed graph's."""
    older = tmp_path / "older"
    shutil.copytree(exported_demo, older)
    (older / "model_quant.onnx").write_bytes(unsigned_weights(exported_demo / "model_quant.onnx"))
    manifest = json.loads((older / EXPORTED_MANIFEST).read_text())
    del manifest["quantization"]
    manifest["graph"]["sha256"] = file_digest(older / "model_quant.onnx")
    (older / EXPORTED_MANIFEST).write_text(json.dumps(manifest))
    assert weight_types(older / "model_quant.onnx") == {onnx.TensorProto.UINT8}
    with caplog.at_level(logging.WARNING, logger="emostt.inference.onnx_model"):
        engine = load_engine(str(older), auto_options(cache))
    assert isinstance(engine, OnnxEngine) and engine.model.quantization == FUNASR_QUANTIZATION
    assert "export it again" in caplog.text
    signed = load_engine(str(exported_demo), auto_options(cache))
    requests = varied_requests(phrases)
    assert worst_gap(engine.transcribe(requests), signed.transcribe(requests)) <= TOLERANCE


def test_on_a_cpu_without_vnni_the_weights_are_made_unsigned_with_the_same_results(
    exported_demo: Path,
    cache: Path,
    phrases: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where u8 x s8 would sum in 16 bits and saturate (x86 without VNNI: the CPU's answer is
    injected here), the encoder shifts the signed weights to unsigned as it loads them."""
    signed = load_engine(str(exported_demo), auto_options(cache))
    monkeypatch.setattr(onnx_encoder, "signed_weights_exact", lambda: False)
    with caplog.at_level(logging.INFO, logger="emostt.inference.onnx_encoder"):
        shifted = load_engine(str(exported_demo), auto_options(cache))
    assert "shifted to unsigned" in caplog.text
    requests = varied_requests(phrases)
    assert worst_gap(shifted.transcribe(requests), signed.transcribe(requests)) <= TOLERANCE


def test_an_exported_dir_gives_the_torch_onnx_paths_results(
    exported_demo: Path, cache: Path, torch_onnx_demo: SenseVoiceEngine, phrases: list[np.ndarray]
) -> None:
    engine = load_engine(str(exported_demo), auto_options(cache))
    assert isinstance(engine, OnnxEngine) and engine.model.origin == "exported dir"
    assert engine.info == torch_onnx_demo.info
    requests = varied_requests(phrases)
    got, want = engine.transcribe(requests), torch_onnx_demo.transcribe(requests)
    assert got[4].text == "turn left"
    gap = worst_gap(got, want)
    print(f"demo, exported dir: worst score gap {gap:.2e}")
    assert gap <= TOLERANCE
    # One at a time too, as the CPU server batches them (int8 dynamic quantization scales by the
    # batch, so a batch of one is compared with a batch of one).
    for request in requests[:3]:
        assert worst_gap(engine.transcribe([request]), torch_onnx_demo.transcribe([request])) <= TOLERANCE
    logp_gap = max(
        float(np.abs(a - b).max())
        for a, b in zip(engine.log_probs(requests[:4]), torch_onnx_demo.log_probs(requests[:4]), strict=True)
    )
    print(f"demo: worst log-prob gap {logp_gap:.2e}")
    assert logp_gap <= 1e-4


def test_a_lone_call_on_the_wide_session_gives_the_same_results(
    exported_demo: Path, cache: Path, phrases: list[np.ndarray]
) -> None:
    """An idle server runs a lone utterance on the encoder's wide (2-thread, spinning) session
    (inference/lone_call.py): the results are those of the one-thread session the workers share."""
    options = EngineOptions(device="cpu", onnx_cache_dir=str(cache), lone_call_threads=2)
    engine = load_engine(str(exported_demo), options)
    assert isinstance(engine, OnnxEngine) and engine._encoder.threads == EncoderThreads(1, 2)
    for request in varied_requests(phrases):
        shared = engine.transcribe([request])
        with running_alone(True):
            assert engine._encoder.session_for_this_call().get_session_options().intra_op_num_threads == 2
            lone = engine.transcribe([request])
        assert worst_gap(lone, shared) <= TOLERANCE


def test_a_model_dir_whose_export_is_cached_is_served_torch_free(
    exported_demo: Path, cache: Path, torch_onnx_demo: SenseVoiceEngine, phrases: list[np.ndarray]
) -> None:
    engine = load_engine("demo", auto_options(cache))
    assert isinstance(engine, OnnxEngine) and engine.model.origin == "ONNX cache"
    assert engine.info == torch_onnx_demo.info
    requests = varied_requests(phrases[:3])
    assert worst_gap(engine.transcribe(requests), torch_onnx_demo.transcribe(requests)) <= TOLERANCE


def test_a_generated_model_gives_the_same_results(
    tmp_path: Path, tiny_model_dir: Path, phrases: list[np.ndarray]
) -> None:
    """Another vocabulary and size: a generated dir (random weights, the tiny size; the full size
    is checked by hand, docs/engine.md), exported into the cache by the torch path at load."""
    cache = tmp_path / "cache"
    reference = SenseVoiceEngine.load(str(tiny_model_dir), onnx_options(cache))
    engine = load_engine(str(tiny_model_dir), auto_options(cache))
    assert isinstance(engine, OnnxEngine)
    requests = varied_requests(phrases)
    gap = worst_gap(engine.transcribe(requests), reference.transcribe(requests))
    print(f"tiny generated model: worst score gap {gap:.2e}")
    assert gap <= TOLERANCE


def test_model_files_are_found_as_funasr_finds_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With configuration.json (file_path_metas) and without it (funasr's default names)."""
    from emostt.inference.funasr_import import auto_model_class

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "configuration.json").unlink()
    next(plain.glob("*.bpe.model")).rename(plain / "bpe.model")
    for model_dir in (tiny_model_dir, plain):
        kwargs = auto_model_class()(model=str(model_dir), device="cpu", disable_update=True).kwargs
        files = model_dir_files(model_dir)
        assert files.tokenizer.resolve() == Path(kwargs["tokenizer_conf"]["bpemodel"]).resolve()
        assert files.cmvn is not None
        assert files.cmvn.resolve() == Path(kwargs["frontend_conf"]["cmvn_file"]).resolve()


def test_an_exported_dir_is_refused_off_the_cpu_int8_path(exported_demo: Path, cache: Path) -> None:
    options = EngineOptions(device="cpu", precision="fp32", onnx_cache_dir=str(cache))
    with pytest.raises(ModelLoadError, match=r"exported ONNX model dir.*precision fp32"):
        load_engine(str(exported_demo), options)


def test_a_changed_file_in_an_exported_dir_is_refused(
    exported_demo: Path, cache: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(exported_demo, changed)
    with (changed / "am.mvn").open("a") as mvn:
        mvn.write("\n")
    with pytest.raises(ModelLoadError, match=r"am\.mvn differs from the file exported"):
        load_engine(str(changed), auto_options(cache))


def imported_modules(log: str) -> set[str]:
    """Every module ``python -X importtime`` reported importing. Its times can be negative: the
    interpreter keeps one running total for all threads, and the server imports in two at once
    (the model and, beside it, the VAD and the turn model)."""
    return set(re.findall(r"^import time:\s+-?\d+ \|\s+-?\d+ \|\s*(\S+)\s*$", log, flags=re.MULTILINE))


@pytest.fixture
def serve_exported(
    exported_demo: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``python -X importtime -m emostt serve --model EXPORTED_DIR``: every module the process
    imports, for its whole life, is in its log; it can import only what the slim image installs
    (tests/deploy/slim.py), so it serves as the slim image would."""
    port = free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, *PYTHON_FLAGS, "-X", "importtime", "-m", "emostt", "serve"]
    command += ["--model", str(exported_demo), "--host", "127.0.0.1", "--port", str(port)]
    env = clean_env(EMOSTT_ONNX_CACHE_DIR=str(tmp_path / "empty-cache"), EMOSTT_MAX_REALTIME_FACTOR="100")
    env = as_in_slim_image(env, tmp_path)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_serve_on_an_exported_dir_never_imports_torch_or_funasr(
    serve_exported: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log = serve_exported
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert proc.poll() is None, f"server exited:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"not ready:\n{log.read_text(errors='replace')[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    model = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["model"]
    assert (model["name"], model["backend"], model["device"]) == ("demo", "onnx", "cpu")

    transcript = asyncio.run(stream(f"ws://127.0.0.1:{port}/ws/stt/robot-1", pcm16(read_audio_file(SAMPLE))))
    assert [e["text"] for e in transcript.of("final")] == ["turn left"], transcript.events
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)

    text = log.read_text(errors="replace")
    assert "engine: torch-free ONNX Runtime on the CPU, from the exported dir" in text
    modules = imported_modules(text)
    assert {"emostt.inference.onnx_engine", "onnxruntime", "kaldi_native_fbank", "uvicorn"} <= modules
    runtimes = sorted(m for m in modules if m.split(".")[0] in ("torch", "funasr", "torchaudio"))
    assert runtimes == [], f"the server imported {runtimes[:10]}"


def test_transcribe_on_an_exported_dir_never_imports_torch_or_funasr(
    exported_demo: Path, tmp_path: Path
) -> None:
    command = [sys.executable, "-X", "importtime", "-m", "emostt", "transcribe", "--json"]
    command += ["--model", str(exported_demo), str(SAMPLE)]
    done = subprocess.run(
        command,
        env=clean_env(EMOSTT_ONNX_CACHE_DIR=str(tmp_path / "cache")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["text"] == "turn left"
    modules = imported_modules(done.stderr)
    assert "emostt.inference.onnx_engine" in modules
    assert not [m for m in modules if m.split(".")[0] in ("torch", "funasr")]


def test_the_slim_image_can_shift_weights_to_unsigned(exported_demo: Path, tmp_path: Path) -> None:
    """A slim pod on an x86 CPU without VNNI shifts the weights with onnx, which it installs."""
    script = (
        "import sys; from pathlib import Path; from emostt.inference.int8_weights import unsigned_weights; "
        "print(len(unsigned_weights(Path(sys.argv[1]))))"
    )
    command = [sys.executable, *PYTHON_FLAGS, "-c", script, str(exported_demo / "model_quant.onnx")]
    env = as_in_slim_image(clean_env(), tmp_path)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout) > 1_000_000


def test_without_torch_a_model_that_needs_it_is_a_clear_error(tmp_path: Path) -> None:
    """As in the slim image: a model dir with no cached export needs torch, which is not there."""
    command = [sys.executable, *PYTHON_FLAGS, "-m", "emostt", "transcribe", "--model", "demo", str(SAMPLE)]
    env = as_in_slim_image(clean_env(EMOSTT_ONNX_CACHE_DIR=str(tmp_path / "empty-cache")), tmp_path)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (
        "cannot serve 'demo' without torch: no ONNX export of this model revision is cached yet"
        in done.stderr
    )
    assert "emostt model export" in done.stderr


def test_export_takes_the_model_setting_when_no_model_is_named(
    exported_demo: Path, cache: Path, tmp_path: Path
) -> None:
    """``emostt model export OUT`` with EMOSTT_MODEL set (as the chart's export init container
    runs it): the same export as naming the model."""
    out = tmp_path / "from-setting"
    done = subprocess.run(
        [sys.executable, "-m", "emostt", "model", "export", str(out)],
        env=clean_env(EMOSTT_ONNX_CACHE_DIR=str(cache), EMOSTT_MODEL="demo"),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / EXPORTED_MANIFEST).read_text())
    assert manifest == json.loads((exported_demo / EXPORTED_MANIFEST).read_text())


def test_export_refuses_to_write_over_a_dir(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something").write_text("mine")
    done = subprocess.run(
        [sys.executable, "-m", "emostt", "model", "export", "demo", str(out)],
        env=clean_env(EMOSTT_ONNX_CACHE_DIR=str(tmp_path / "cache")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "exists and is not an empty dir" in done.stderr
    assert [p.name for p in out.iterdir()] == ["something"]
