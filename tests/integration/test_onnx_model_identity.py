"""The ONNX cache cannot confuse models: two model dirs with the same config and the same
model.pt size but different weights (a fine-tune) each get their own export and their own
results, and an entry written under the old key (config + weights' size) is never read."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from emostt.inference.engine import TranscriptionRequest
from emostt.inference.modeldir import SIZES, write_model_dir
from emostt.inference.onnx_cache import COMPLETE_MARKER, QUANTIZED_FILE, cached_export
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

AUDIO = (np.random.default_rng(0).standard_normal(32_000) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Same size, same config, different weights."""
    root = tmp_path_factory.mktemp("twins")
    first, second = (
        write_model_dir(root / n, SIZES["tiny"], seed=s, dither=0.0) for n, s in (("a", 1), ("b", 2))
    )
    assert (first / "config.yaml").read_bytes() == (second / "config.yaml").read_bytes()
    assert (first / "model.pt").stat().st_size == (second / "model.pt").stat().st_size
    return first, second


def onnx(model: Path, cache: Path) -> SenseVoiceEngine:
    return SenseVoiceEngine.load(
        str(model), EngineOptions(device="cpu", precision="int8", backend="onnx", onnx_cache_dir=str(cache))
    )


def reference(model: Path) -> np.ndarray:
    """What the model's own weights compute (torch fp32)."""
    engine = SenseVoiceEngine.load(str(model), EngineOptions(device="cpu", precision="fp32", backend="torch"))
    return engine.log_probs([TranscriptionRequest(AUDIO)])[0]


def served(engine: SenseVoiceEngine) -> np.ndarray:
    return engine.log_probs([TranscriptionRequest(AUDIO)])[0]


def assert_computes(got: np.ndarray, own: np.ndarray, other: np.ndarray) -> None:
    """``got`` (int8 ONNX) is the own model's output, not the other's: closer to it by far."""
    own_error, other_error = np.abs(got - own).mean(), np.abs(got - other).mean()
    assert own_error < other_error / 5, (own_error, other_error)
    assert (got.argmax(-1) == own.argmax(-1)).mean() > 0.9


def test_two_models_of_the_same_config_and_size_get_their_own_exports(
    twins: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = twins
    want = [reference(first), reference(second)]
    engines = [onnx(first, tmp_path), onnx(second, tmp_path)]
    assert [e.info.backend for e in engines] == ["onnx", "onnx"]
    assert engines[0].info.revision != engines[1].info.revision
    assert_computes(served(engines[0]), want[0], want[1])
    assert_computes(served(engines[1]), want[1], want[0])
    results = [e.transcribe([TranscriptionRequest(AUDIO)])[0] for e in engines]
    assert (results[0].text, results[0].confidence) != (results[1].text, results[1].confidence)
    entries = sorted(p for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(entries) == 2 and all(cached_export(e) is not None for e in entries)


def old_key_entry(model: Path, cache: Path) -> Path:
    """The cache entry emostt wrote for ``model`` before keys were by content."""
    digest = hashlib.sha1((model / "config.yaml").read_bytes())
    digest.update(str((model / "model.pt").stat().st_size).encode())
    return cache / f"{digest.hexdigest()[:12]}-torch{torch.__version__.split('+')[0]}-ort{ort.__version__}"


def test_an_entry_written_under_the_old_key_is_never_used(twins: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = twins
    # The first model's export, where the old key put it: the second model's old key too.
    exported = onnx(first, tmp_path / "scratch").info
    (scratch_entry,) = [p for p in (tmp_path / "scratch").iterdir() if not p.name.startswith(".")]
    stale = old_key_entry(second, tmp_path / "cache")
    assert stale == old_key_entry(first, tmp_path / "cache")
    shutil.copytree(scratch_entry, stale)
    assert cached_export(stale) is not None and exported.backend == "onnx"

    engine = onnx(second, tmp_path / "cache")
    assert_computes(served(engine), reference(second), reference(first))
    # The old entry is left as it was, unread; the model got an entry of its own.
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert len(entries) == 2 and stale.name in entries
    assert sorted(p.name for p in stale.iterdir()) == [COMPLETE_MARKER, QUANTIZED_FILE]
