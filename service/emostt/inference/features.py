"""Feature extraction (fbank 80 + LFR 7/6 + CMVN) for a batch, on the CPU or on the GPU.

The CPU path is the model's own funasr ``WavFrontend``, one utterance at a time (the
torch-free engine computes the same features in numpy: ``fbank.py``). On CUDA,
when torchaudio is installed (the ``gpu`` extra), the same Kaldi fbank runs on the device
and only raw samples cross the bus; funasr's LFR and CMVN functions are device-agnostic.
The padded time axis can be rounded up to a bucket size so that compiled or graph-captured
encoders see a small set of shapes; the encoder masks padding, so results do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from emostt.errors import InvalidAudioError
from emostt.inference.fbank import MIN_SAMPLES, seeded_dither

__all__ = ["MIN_SAMPLES", "Features"]


class Features:
    def __init__(
        self, frontend: Any, device: torch.device, pad_multiple: int = 1, dither: float = 0.0
    ) -> None:
        self._frontend = frontend
        self._dither = dither
        self._device = device
        self._pad_multiple = max(pad_multiple, 1)
        self._kaldi: Any = None
        if device.type == "cuda":
            try:
                import torchaudio.compliance.kaldi as kaldi  # type: ignore[import-not-found]

                self._kaldi = kaldi
            except ImportError:
                self._kaldi = None

    def __call__(self, audios: Sequence[npt.NDArray[np.float32]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (B, T, 560) features on the target device and their lengths (B,)."""
        for audio in audios:
            if len(audio) < MIN_SAMPLES:
                raise InvalidAudioError(f"utterance too short: {len(audio)} samples (< {MIN_SAMPLES})")
        if self._dither > 0:
            audios = [seeded_dither(a, self._dither) for a in audios]
        feats = self._on_device(audios) if self._kaldi is not None else self._on_cpu(audios)
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int32)
        longest = int(lengths.max())
        target = -(-longest // self._pad_multiple) * self._pad_multiple
        padded = feats[0].new_zeros((len(feats), target, feats[0].shape[1]))
        for i, f in enumerate(feats):
            padded[i, : f.shape[0]] = f
        if padded.device != self._device:
            if self._device.type == "cuda":
                padded = padded.pin_memory()
            padded = padded.to(self._device, non_blocking=True)
        return padded, lengths.to(self._device)

    def _on_cpu(self, audios: Sequence[npt.NDArray[np.float32]]) -> list[torch.Tensor]:
        feats = []
        for audio in audios:
            wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, :]
            feat, _ = self._frontend(wav, [wav.shape[1]])
            feats.append(feat[0])
        return feats

    def _on_device(self, audios: Sequence[npt.NDArray[np.float32]]) -> list[torch.Tensor]:
        from funasr.frontends.wav_frontend import apply_cmvn, apply_lfr

        fe = self._frontend
        feats = []
        for audio in audios:
            wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(
                self._device, non_blocking=True
            )
            mat = self._kaldi.fbank(
                (wav * (1 << 15))[None, :],
                num_mel_bins=fe.n_mels,
                frame_length=fe.frame_length,
                frame_shift=fe.frame_shift,
                dither=0.0,
                energy_floor=0.0,
                window_type=fe.window,
                sample_frequency=fe.fs,
                snip_edges=fe.snip_edges,
            )
            mat = apply_lfr(mat, fe.lfr_m, fe.lfr_n)
            if fe.cmvn is not None:
                mat = apply_cmvn(mat, fe.cmvn)
            feats.append(mat)
        return feats
