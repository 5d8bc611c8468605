"""Loading failures give a message that says what went wrong and what to pass instead."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from emostt.config import Settings
from emostt.errors import ModelLoadError
from emostt.inference.engine import TranscriptionRequest
from emostt.inference.modeldir import SIZES, ModelSize, write_model_dir
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from emostt.server.engines import load_engines

CPU = EngineOptions(device="cpu", precision="fp32")


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"does not exist.*hub id"):
        SenseVoiceEngine.load(str(tmp_path / "nope"), CPU)


def test_dir_without_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = copy_dir(tiny_model_dir, tmp_path / "m")
    (broken / "model.pt").unlink()
    with pytest.raises(ModelLoadError, match=r"missing model\.pt"):
        SenseVoiceEngine.load(str(broken), CPU)


def test_corrupt_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = copy_dir(tiny_model_dir, tmp_path / "m")
    (broken / "model.pt").write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(ModelLoadError, match="cannot load model dir"):
        SenseVoiceEngine.load(str(broken), CPU)


def test_checkpoint_that_does_not_match_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = write_model_dir(tmp_path / "other", ModelSize(32, 4, 64, 2, 1, SIZES["tiny"].vocab_size))
    broken = copy_dir(tiny_model_dir, tmp_path / "m")
    shutil.copy(other / "model.pt", broken / "model.pt")
    with pytest.raises(ModelLoadError, match=r"does not match config\.yaml"):
        SenseVoiceEngine.load(str(broken), CPU)


# A hub id nobody publishes: it fails to load whether or not the hub can be reached.
MISSING_HUB_ID = "emostt-tests/no-such-model-3f9c1d"


def test_unloadable_hub_id_fails_with_advice() -> None:
    with pytest.raises(ModelLoadError, match="pass --model"):
        SenseVoiceEngine.load(MISSING_HUB_ID, EngineOptions(device="cpu", load_timeout_s=120))


def test_load_timeout_is_enforced() -> None:
    with pytest.raises(ModelLoadError, match="took longer than"):
        SenseVoiceEngine.load(MISSING_HUB_ID, EngineOptions(device="cpu", load_timeout_s=0.01))


def test_load_engines_falls_back_to_the_fallback_model_loudly(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What `emostt serve --fallback-model demo` does when the hub cannot serve the model."""
    settings = Settings(model=MISSING_HUB_ID, fallback_model=str(tiny_model_dir), backend="torch")
    with caplog.at_level("WARNING"):
        primary, fallback_device_engine = load_engines(settings)
    assert primary.info.name == str(tiny_model_dir)
    assert fallback_device_engine is None
    assert "FALLING BACK" in caplog.text
    result = primary.transcribe([TranscriptionRequest(np.zeros(16_000, dtype=np.float32))])[0]
    assert set(result.emotion.scores) >= {"happy", "neutral"}


def test_load_engines_without_a_fallback_model_fails(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="pass --model"):
        load_engines(Settings(model=MISSING_HUB_ID, backend="torch", load_timeout_s=120))


def test_load_engines_loads_a_fallback_device_copy(tiny_model_dir: Path) -> None:
    settings = Settings(model=str(tiny_model_dir), backend="torch", fallback_device="cpu")
    primary, copy = load_engines(settings)
    assert copy is not None and copy is not primary
    assert copy.info.name == primary.info.name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (EngineOptions(device="cpu", precision="fp16"), "fp16 is for CUDA"),
        (EngineOptions(device="cpu", precision="int4"), "precision must be one of"),
        (EngineOptions(device="tpu"), "device must be"),
    ],
)
def test_bad_device_or_precision(tiny_model_dir: Path, options: EngineOptions, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        SenseVoiceEngine.load(str(tiny_model_dir), options)


def test_not_an_id_or_path() -> None:
    with pytest.raises(ModelLoadError, match="neither a model dir nor a hub id"):
        SenseVoiceEngine.load("no-such-model", CPU)
