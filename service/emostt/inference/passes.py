"""Encoder passes: the query frames, the encoder and the CTC projection over one padded batch,
on torch (``TorchPass``) or on ONNX Runtime (``OnnxPass``), behind one protocol.

Concurrency: a pass keeps no per-call state, so several threads may call one at once. A pass
holds its model; a call that started on a pass keeps that model alive until it returns, even
after the engine switched to another pass.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from emostt.inference.onnx_encoder import OnnxEncoder
from emostt.inference.rich_tokens import EMOTION_QUERY_INDEX, EVENT_QUERY_INDEX, QUERY_FRAMES

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# Per utterance: the language, emotion, event and text-normalization query indices.
QueryRows = list[tuple[int, int, int, int]]


def dtype_of(precision: str) -> torch.dtype:
    """The dtype features and the torch model run in (int8 runs fp32 activations)."""
    return DTYPES.get(precision, torch.float32)


class EncoderPass(Protocol):
    """Query frames + encoder + CTC projection: CTC logits (B, T+4, V) and valid lengths."""

    @property
    def backend(self) -> str: ...

    def __call__(
        self, feats: torch.Tensor, lengths: torch.Tensor, query_rows: QueryRows
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class TorchPass:
    """The encoder pass on a torch model."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self._device = device
        self._dtype = dtype

    def __call__(
        self, feats: torch.Tensor, lengths: torch.Tensor, query_rows: QueryRows
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model: Any = self.model
        idx = torch.tensor(query_rows, dtype=torch.long).to(self._device)
        queries = model.embed(idx).to(self._dtype)
        assert queries.shape[:2] == (len(query_rows), QUERY_FRAMES)
        encoder_in = torch.cat((queries, feats), dim=1)
        encoder_out, out_lens = model.encoder(encoder_in, lengths + QUERY_FRAMES)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        return model.ctc.ctc_lo(encoder_out).float(), out_lens


class OnnxPass:
    """The encoder pass on ONNX Runtime (see ``OnnxEncoder``)."""

    backend = "onnx"

    def __init__(self, encoder: OnnxEncoder) -> None:
        self.encoder = encoder

    def __call__(
        self, feats: torch.Tensor, lengths: torch.Tensor, query_rows: QueryRows
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # funasr's exported graph embeds the emotion and event queries itself, at these indices.
        assert (EMOTION_QUERY_INDEX, EVENT_QUERY_INDEX) == (1, 2)
        rows = np.asarray(query_rows, dtype=np.int32)
        logits, out_lens = self.encoder.run(feats.numpy(), lengths.numpy(), rows[:, 0], rows[:, 3])
        return torch.from_numpy(logits), torch.from_numpy(out_lens)


def serving_torch_model(model: torch.nn.Module, precision: str, compile_encoder: bool) -> torch.nn.Module:
    """The serving torch model: a quantized copy for int8 (``model`` stays fp32), else cast."""
    if precision == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif precision in DTYPES:
        model = model.to(DTYPES[precision])
    if compile_encoder:
        # Bucketed time axis (pad_multiple) keeps the number of compiled shapes small.
        funasr_model: Any = model
        funasr_model.encoder = torch.compile(funasr_model.encoder, dynamic=False)
    return model
