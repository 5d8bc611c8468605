#!/usr/bin/env python
"""The peers' model files for tools/bench_peers.py, made from one SenseVoice model dir.

- **sherpa-onnx**: sherpa-onnx's own export, ``scripts/sense-voice/export-onnx.py`` of
  k2-fsa/sherpa-onnx (read at commit 634265c9, 2026-08-08), adapted to a local model dir: the
  model is funasr's ``SenseVoiceSmall`` built from the dir's config.yaml and model.pt (the
  script loads the same class from FunAudioLLM/SenseVoice's ``model.py``, a copy of funasr's,
  for the hub's weights); the forward is the script's ``modified_forward`` (language, event
  and emotion, text-norm queries before the features; logits only); traced by torch's legacy
  exporter (``dynamo=False``: the script predates the dynamo exporter, torch 2.9+'s default),
  opset 13; its metadata (LFR, CMVN as ``neg_mean``/``inv_stddev``, the language and text-norm
  ids, ``normalize_samples`` 0); quantized as the script does (``quantize_dynamic``, MatMul
  only, QUInt8: the script notes QInt8 gives wrong results in sherpa-onnx's C++ ONNX Runtime);
  and ``tokens.txt`` (``piece id`` per line) from the dir's sentencepiece model;
- **funasr-onnx**: its ``SenseVoiceSmall(model_dir, quantize=True)`` reads ``model_quant.onnx``,
  ``config.yaml``, ``am.mvn`` and the sentencepiece model from one dir. funasr-onnx exports with
  funasr's exporter (``AutoModel.export(type="onnx", quantize=True)``: unsigned int8 weights per
  channel) when the graph is missing; ``export_funasr`` runs that exporter, and the dir links its
  graph beside the model dir's other files. emostt exports the same fp32 graph but quantizes its
  weights signed (emostt.inference.int8_weights); ``funasr-onnx-signed`` is funasr-onnx given
  emostt's graph instead, which tells the engine's share from the quantization's.

Run in a child process by tools/bench_peers.py (``python tools/peer_export.py sherpa|funasr
MODEL_DIR OUT_DIR``) and tools/bench_int8_weights.py (``funasr-fp32``): the export holds the fp32
model, the traced graph and the quantizer's copies, several GiB, which must not count against any
engine's memory.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SHERPA_MODEL = "model.int8.onnx"
SHERPA_TOKENS = "tokens.txt"
FUNASR_ONNX_GRAPH = "model_quant.onnx"
# funasr-onnx opens these names in its model dir.
FUNASR_ONNX_TOKENIZER = "chn_jpn_yue_eng_ko_spectok.bpe.model"


def sherpa_forward(model: Any) -> Any:
    """sherpa-onnx's ``modified_forward`` around funasr's model, as a module to trace."""
    import torch

    class SherpaSenseVoice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, x: torch.Tensor, x_length: torch.Tensor, language: torch.Tensor, text_norm: torch.Tensor
        ) -> torch.Tensor:
            m = self.model
            language_query = m.embed(language).unsqueeze(1)
            text_norm_query = m.embed(text_norm).unsqueeze(1)
            event_emo_query = m.embed(torch.LongTensor([[1, 2]])).repeat(x.size(0), 1, 1)
            x = torch.cat((language_query, event_emo_query, text_norm_query, x), dim=1)
            x_length = x_length + 4
            encoder_out, _ = m.encoder(x, x_length)
            if isinstance(encoder_out, tuple):
                encoder_out = encoder_out[0]
            return m.ctc.ctc_lo(encoder_out)

    return SherpaSenseVoice().eval()


def load_cmvn(path: Path) -> tuple[str, str]:
    """``neg_mean`` and ``inv_stddev`` as comma-separated text, read as the script reads am.mvn."""
    rows = [
        line.split()[3:-1] for line in path.read_text().splitlines() if line.startswith("<LearnRateCoef>")
    ]
    return ",".join(rows[0]), ",".join(rows[1])


def add_meta_data(path: Path, meta_data: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    while len(model.metadata_props):
        model.metadata_props.pop()
    for key, value in meta_data.items():
        meta = model.metadata_props.add()
        meta.key = key
        meta.value = str(value)
    onnx.save(model, str(path))


def export_sherpa(model_dir: Path, out: Path) -> None:
    """``out/model.int8.onnx`` and ``out/tokens.txt`` for sherpa-onnx from ``model_dir``."""
    import sentencepiece
    import torch
    from funasr import AutoModel
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from emostt.inference.onnx_model import model_dir_files

    out.mkdir(parents=True, exist_ok=True)
    files = model_dir_files(model_dir)
    auto = AutoModel(model=str(model_dir), device="cpu", disable_update=True, disable_pbar=True)
    model = auto.model.eval()
    sp = sentencepiece.SentencePieceProcessor(model_file=str(files.tokenizer))
    with (out / SHERPA_TOKENS).open("w", encoding="utf-8") as f:
        for i in range(sp.vocab_size()):
            f.write(f"{sp.id_to_piece(i)} {i}\n")

    torch.manual_seed(20240717)  # the script's seed (its dummy inputs are random)
    x = torch.randn(2, 100, 560, dtype=torch.float32)
    x_length = torch.tensor([80, 100], dtype=torch.int32)
    language = torch.tensor([0, 3], dtype=torch.int32)
    text_norm = torch.tensor([14, 15], dtype=torch.int32)
    fp32 = out / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            sherpa_forward(model),
            (x, x_length, language, text_norm),
            str(fp32),
            opset_version=13,
            input_names=["x", "x_length", "language", "text_norm"],
            output_names=["logits"],
            dynamic_axes={
                "x": {0: "N", 1: "T"},
                "x_length": {0: "N"},
                "language": {0: "N"},
                "text_norm": {0: "N"},
                "logits": {0: "N", 1: "T"},
            },
            dynamo=False,
        )
    assert files.cmvn is not None, "sherpa-onnx needs the model's CMVN (am.mvn)"
    neg_mean, inv_stddev = load_cmvn(files.cmvn)
    lid, textnorm = model.lid_dict, model.textnorm_dict
    add_meta_data(
        fp32,
        {
            "lfr_window_size": files.frontend.lfr_m,
            "lfr_window_shift": files.frontend.lfr_n,
            "normalize_samples": 0,  # samples in [-32768, 32767]
            "neg_mean": neg_mean,
            "inv_stddev": inv_stddev,
            "model_type": "sense_voice_ctc",
            "version": "2",  # QUInt8
            "model_author": "iic",
            "maintainer": "k2-fsa",
            "vocab_size": sp.vocab_size(),
            "comment": f"SenseVoiceSmall from {model_dir.name}",
            **{f"lang_{k}": lid[k] for k in ("auto", "zh", "en", "yue", "ja", "ko", "nospeech")},
            "with_itn": textnorm["withitn"],
            "without_itn": textnorm["woitn"],
        },
    )
    quantize_dynamic(
        model_input=str(fp32),
        model_output=str(out / SHERPA_MODEL),
        op_types_to_quantize=["MatMul"],
        weight_type=QuantType.QUInt8,
    )
    fp32.unlink()
    for extra in out.glob("*.data"):  # external data of a >2 GB fp32 graph, if any
        extra.unlink()


def export_funasr(model_dir: Path, out: Path, quantize: bool = True) -> None:
    """funasr's own export of ``model_dir``: ``out/model_quant.onnx``, quantized as funasr does;
    without ``quantize``, the fp32 graph ``out/model.onnx`` and its external data
    (tools/bench_int8_weights.py quantizes it other ways)."""
    from funasr import AutoModel

    out.mkdir(parents=True, exist_ok=True)
    auto = AutoModel(model=str(model_dir), device="cpu", disable_update=True, disable_pbar=True)
    auto.export(type="onnx", quantize=quantize, output_dir=str(out), device="cpu")
    if quantize:
        for path in out.iterdir():  # the fp32 graph and its external data
            if path.name != FUNASR_ONNX_GRAPH:
                path.unlink()


def funasr_onnx_dir(model_dir: Path, graph: Path, out: Path) -> None:
    """A funasr-onnx model dir: ``graph`` (the int8 graph) and the model dir's config, CMVN and
    sentencepiece model, linked."""
    from emostt.inference.onnx_model import model_dir_files

    files = model_dir_files(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    links = {
        FUNASR_ONNX_GRAPH: graph,
        "config.yaml": model_dir / "config.yaml",
        FUNASR_ONNX_TOKENIZER: files.tokenizer,
    }
    if files.cmvn is not None:
        links["am.mvn"] = files.cmvn
    for name, target in links.items():
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("peer", choices=["sherpa", "funasr", "funasr-fp32"])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.peer == "sherpa":
        export_sherpa(args.model_dir, args.out)
    else:
        export_funasr(args.model_dir, args.out, quantize=args.peer == "funasr")


if __name__ == "__main__":
    main()
