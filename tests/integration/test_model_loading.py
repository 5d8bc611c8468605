"""Loading failures give a message that says what went wrong and what to pass instead."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from emostt.errors import ModelLoadError
from emostt.inference.modeldir import SIZES, ModelSize, write_model_dir
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

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


def test_offline_hub_id_fails_fast_with_advice() -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="pass --model"):
        SenseVoiceEngine.load("iic/SenseVoiceSmall", EngineOptions(device="cpu", load_timeout_s=120))
    assert time.monotonic() - start < 125


def test_load_timeout_is_enforced() -> None:
    with pytest.raises(ModelLoadError, match="took longer than"):
        SenseVoiceEngine.load("iic/SenseVoiceSmall", EngineOptions(device="cpu", load_timeout_s=0.01))


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
