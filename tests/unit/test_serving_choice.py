"""Which engine serves (``inference/serving.py``): torch-free on the CPU int8 path when an exported
dir or a cached export is there, torch otherwise, with the reason; exported dirs are read back
as written and refused when changed or asked for another path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emostt.errors import ModelLoadError
from emostt.inference import serving
from emostt.inference.fbank import FrontendConfig
from emostt.inference.model_source import BUNDLED_MODELS_DIR, EXPORTED_MANIFEST, resolve_model
from emostt.inference.onnx_model import ModelFiles, OnnxModel, model_dir_files, read_exported, write_exported
from emostt.inference.options import EngineOptions

DEMO = BUNDLED_MODELS_DIR / "demo"


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """An exported dir of the demo's files, with a stand-in graph (nothing here runs it)."""
    graph = tmp_path / "graph.onnx"
    graph.write_bytes(b"not really a graph")
    files = model_dir_files(DEMO)
    model = OnnxModel("demo", "ab" * 32, graph, files, "ONNX cache")
    return write_exported(model, tmp_path / "out")


def cpu(cache: Path, **overrides: object) -> EngineOptions:
    return EngineOptions(**{"device": "cpu", "onnx_cache_dir": str(cache), **overrides})  # type: ignore[arg-type]


def test_the_demo_dirs_files_are_found() -> None:
    files = model_dir_files(DEMO)
    assert files.tokenizer == DEMO / "chn_jpn_yue_eng_ko_spectok.bpe.model"
    assert files.cmvn == DEMO / "am.mvn"
    assert (files.frontend.lfr_m, files.frontend.lfr_n, files.frontend.dither) == (7, 6, 1.0)
    assert files.blank_id == 0


def test_an_exported_dir_reads_back_as_written(exported: Path, tmp_path: Path) -> None:
    assert resolve_model(str(exported)).exported
    model = read_exported(exported, tmp_path / "memo")
    assert (model.name, model.revision, model.origin) == ("demo", "ab" * 32, "exported dir")
    assert model.graph == exported / "model_quant.onnx"
    assert model.files == ModelFiles(
        exported / "chn_jpn_yue_eng_ko_spectok.bpe.model",
        exported / "am.mvn",
        FrontendConfig.from_conf(model_dir_files(DEMO).frontend.to_conf()),
        0,
    )


def test_an_exported_dir_is_never_written_over(exported: Path) -> None:
    model = read_exported(exported)
    with pytest.raises(ModelLoadError, match="not an empty dir"):
        write_exported(model, exported)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "model_quant.onnx").write_bytes(b"another graph"), "differs from the file exported"),
        (lambda d: (d / "am.mvn").unlink(), "am.mvn is missing"),
        (lambda d: _edit_manifest(d, format="emostt-onnx-model-0"), "export the model again"),
        (lambda d: _edit_manifest(d, blank_id=None), "malformed"),
    ],
)
def test_a_changed_exported_dir_is_refused(exported: Path, change: object, message: str) -> None:
    change(exported)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=message):
        read_exported(exported)


def _edit_manifest(export_dir: Path, **fields: object) -> None:
    path = export_dir / EXPORTED_MANIFEST
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"backend": "torch"}, "backend torch"),
        ({"precision": "fp32"}, "precision fp32"),
        ({"device": "cuda"}, "device cuda"),
        ({"compile": True}, "torch.compile requested"),
    ],
)
def test_off_the_cpu_int8_path_torch_serves_and_exported_dirs_are_refused(
    exported: Path, tmp_path: Path, overrides: dict[str, object], problem: str
) -> None:
    options = cpu(tmp_path / "cache", **overrides)
    assert serving.cpu_int8_problem(options) == problem
    assert serving.torch_free_model("demo", options) == (None, problem)
    with pytest.raises(ModelLoadError, match=f"exported ONNX model dir.*{problem}"):
        serving.torch_free_model(str(exported), options)


def test_device_auto_is_the_cpu_path_without_a_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(serving, "nvidia_gpu_present", lambda: False)
    assert serving.cpu_int8_problem(cpu(tmp_path, device="auto")) is None
    monkeypatch.setattr(serving, "nvidia_gpu_present", lambda: True)
    assert serving.cpu_int8_problem(cpu(tmp_path, device="auto")) == "device auto with an NVIDIA GPU present"


def test_without_a_cached_export_or_for_a_hub_id_torch_serves(tmp_path: Path) -> None:
    model, why = serving.torch_free_model("demo", cpu(tmp_path / "empty"))
    assert model is None and why == "no ONNX export of this model revision is cached yet"
    model, why = serving.torch_free_model("iic/SenseVoiceSmall", cpu(tmp_path / "empty"))
    assert model is None and why.startswith("a hub id")


def test_a_model_dir_the_torch_free_engine_cannot_read_goes_to_torch(tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(DEMO, other)
    config = (
        (other / "config.yaml").read_text().replace("frontend: WavFrontend", "frontend: WavFrontendOnline")
    )
    (other / "config.yaml").write_text(config)
    model, why = serving.torch_free_model(str(other), cpu(tmp_path / "cache"))
    assert model is None and "WavFrontend" in why
