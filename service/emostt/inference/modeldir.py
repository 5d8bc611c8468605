"""Generate SenseVoice model dirs that funasr's ``AutoModel`` loads as it loads the real one.

Weights cannot always be downloaded, so tests and benchmarks use dirs made here: random
weights at the exact SenseVoiceSmall shapes (``full``), a small fast one (``tiny``), or a
trained state dict (the bundled demo model).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from emostt.inference.funasr_import import sense_voice_class
from emostt.inference.tokenizer_builder import CONTROL_PIECES, default_text_pieces, write_sentencepiece
from emostt.vocabulary import SAMPLE_RATE

BPE_MODEL_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"
FEATURE_DIM = 560  # 80 mel bins x lfr_m 7


@dataclass(frozen=True)
class ModelSize:
    output_size: int
    attention_heads: int
    linear_units: int
    num_blocks: int
    tp_blocks: int
    vocab_size: int


SIZES: dict[str, ModelSize] = {
    # SenseVoiceSmall: 234M parameters, 50 + 20 SANM blocks, 512 dim, 25055 tokens.
    "full": ModelSize(512, 4, 2048, 50, 20, 25055),
    "tiny": ModelSize(64, 4, 128, 3, 1, 512),
}


def config_dict(size: ModelSize, dither: float = 1.0) -> dict[str, Any]:
    """config.yaml content: the inference blocks of SenseVoiceSmall's own config."""
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {
            "output_size": size.output_size,
            "attention_heads": size.attention_heads,
            "linear_units": size.linear_units,
            "num_blocks": size.num_blocks,
            "tp_blocks": size.tp_blocks,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
        },
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": SAMPLE_RATE,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "cmvn_file": None,
            # Kaldi dither in 16-bit sample units, as funasr's WavFrontend defaults to; the engine
            # applies it from a fixed seed, so results stay deterministic.
            "dither": dither,
        },
    }


def configuration_json() -> dict[str, Any]:
    return {
        "framework": "pytorch",
        "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"bpemodel": BPE_MODEL_NAME},
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    }


def write_cmvn(path: Path, means: np.ndarray, stds: np.ndarray) -> None:
    """Kaldi nnet1 text format: AddShift holds -mean, Rescale holds 1/std."""
    shift = " ".join(f"{-m:.6f}" for m in means)
    scale = " ".join(f"{1.0 / max(s, 1e-5):.6f}" for s in stds)
    dim = len(means)
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shift} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n"
        "</Nnet>\n",
        encoding="utf-8",
    )


def build_model(size: ModelSize, seed: int = 0) -> torch.nn.Module:
    """A SenseVoiceSmall module from funasr's own class, randomly initialised."""
    SenseVoiceSmall = sense_voice_class()  # noqa: N806

    torch.manual_seed(seed)
    conf = config_dict(size)
    model = SenseVoiceSmall(
        encoder=conf["encoder"],
        encoder_conf=conf["encoder_conf"],
        input_size=FEATURE_DIM,
        vocab_size=size.vocab_size,
        **conf["model_conf"],
    )
    return model.eval()


def write_model_dir(
    out: Path,
    size: ModelSize,
    *,
    seed: int = 0,
    text_pieces: Sequence[str] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    cmvn: tuple[np.ndarray, np.ndarray] | None = None,
    dither: float = 1.0,
) -> Path:
    """Write config.yaml, configuration.json, model.pt, am.mvn and the tokenizer into ``out``."""
    from emostt.inference.tokenizer_builder import RICH_BLOCK_SIZE

    n_text = size.vocab_size - len(CONTROL_PIECES) - RICH_BLOCK_SIZE
    pieces = list(text_pieces) if text_pieces is not None else default_text_pieces(n_text)
    if len(pieces) != n_text:
        raise ValueError(
            f"vocab_size {size.vocab_size} needs exactly {n_text} text pieces, got {len(pieces)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_sentencepiece(out / BPE_MODEL_NAME, pieces)
    (out / "config.yaml").write_text(
        yaml.safe_dump(config_dict(size, dither), sort_keys=False), encoding="utf-8"
    )
    (out / "configuration.json").write_text(json.dumps(configuration_json(), indent=2), encoding="utf-8")
    if cmvn is None:
        # Typical log-mel statistics of 16-bit speech; real dirs carry measured ones.
        cmvn = (np.full(FEATURE_DIM, 12.0), np.full(FEATURE_DIM, 3.0))
    write_cmvn(out / "am.mvn", *cmvn)
    if state_dict is None:
        state_dict = build_model(size, seed).state_dict()
    torch.save(dict(state_dict), out / "model.pt")
    return out
