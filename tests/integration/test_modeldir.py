"""Generated model dirs have SenseVoiceSmall's true shapes and load through funasr."""

from __future__ import annotations

from pathlib import Path

from emostt.inference.funasr_import import auto_model_class
from emostt.inference.modeldir import SIZES, build_model


def test_full_size_has_sensevoice_small_shapes() -> None:
    model = build_model(SIZES["full"])
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert round(count(model) / 1e6, 1) == 234.0
    assert round(count(model.encoder) / 1e6, 1) == 221.1
    assert round(count(model.ctc) / 1e6, 2) == 12.85
    assert len(model.encoder.encoders0) + len(model.encoder.encoders) == 50
    assert len(model.encoder.tp_encoders) == 20
    assert model.ctc.ctc_lo.out_features == 25055 and model.ctc.ctc_lo.in_features == 512


def test_funasr_automodel_loads_a_generated_dir(tiny_model_dir: Path) -> None:
    auto = auto_model_class()(model=str(tiny_model_dir), device="cpu", disable_update=True, disable_pbar=True)
    assert type(auto.model).__name__ == "SenseVoiceSmall"
    assert auto.kwargs["tokenizer"].sp.get_piece_size() == SIZES["tiny"].vocab_size
    assert auto.kwargs["frontend"].cmvn is not None  # am.mvn found through configuration.json
