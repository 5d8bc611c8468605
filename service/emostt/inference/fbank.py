"""Speech features without torch: Kaldi fbank (kaldi-native-fbank), LFR and CMVN in numpy.

The torch-free engine's frontend (``onnx_engine.py``). It computes what the model's funasr
``WavFrontend`` computes (``features.py`` on the CPU), step for step:

1. the samples scaled to 16-bit units (``upsacle_samples``), after the same seeded dither as
   ``features.py`` when the model's config asks for dither (``seeded_dither``, shared);
2. Kaldi fbank with funasr's settings: ``n_mels`` bins, ``frame_length``/``frame_shift`` ms,
   ``window`` (hamming), ``snip_edges``, energy floor 0, and Kaldi's defaults for the rest
   (pre-emphasis 0.97, DC offset removed, power spectrum, log mel, FFT size a power of two,
   mel bins from 20 Hz to Nyquist), no dither inside the fbank. kaldi-native-fbank is the
   C++ Kaldi fbank that funasr itself falls back to without torchaudio, and that its ONNX
   runtime uses;
3. low frame rate: ``lfr_m`` stacked frames every ``lfr_n`` (7/6 for SenseVoice), the first
   frame repeated ``(lfr_m - 1) // 2`` times in front and the last one at the end;
4. CMVN from the model's ``am.mvn`` (Kaldi nnet text: ``<AddShift>`` then ``<Rescale>``),
   ``(x + shift) * scale`` in float32.

Parity: ``tests/unit/test_fbank.py`` checks the features against funasr's ``WavFrontend`` on
espeak-ng speech and on edge lengths.

Concurrency: ``NumpyFeatures`` keeps no per-call state; any number of threads may call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt.errors import InvalidAudioError

MIN_SAMPLES = 400  # one 25 ms analysis window at 16 kHz

FloatArray = npt.NDArray[np.float32]
# funasr's WavFrontend key for "scale samples to 16-bit units" (its spelling).
UPSCALE_KEY = "upsacle_samples"


@dataclass(frozen=True)
class FrontendConfig:
    """A model's ``frontend_conf``, with funasr ``WavFrontend``'s defaults for absent keys."""

    fs: int = 16000
    window: str = "hamming"
    n_mels: int = 80
    frame_length: float = 25.0  # ms
    frame_shift: float = 10.0  # ms
    lfr_m: int = 1
    lfr_n: int = 1
    # Kaldi dither in 16-bit sample units; applied from a fixed seed (``seeded_dither``).
    dither: float = 1.0
    snip_edges: bool = True
    upscale_samples: bool = True

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> FrontendConfig:
        """From a config.yaml ``frontend_conf`` block (unknown keys, such as ``cmvn_file``, ignored)."""
        defaults = cls()
        values: dict[str, Any] = {}
        for item in fields(cls):
            value = conf.get(UPSCALE_KEY if item.name == "upscale_samples" else item.name)
            default = getattr(defaults, item.name)
            values[item.name] = default if value is None else type(default)(value)
        return cls(**values)

    def to_conf(self) -> dict[str, Any]:
        """The ``frontend_conf`` block that ``from_conf`` reads back."""
        conf = asdict(self)
        conf[UPSCALE_KEY] = conf.pop("upscale_samples")
        return conf

    @property
    def dim(self) -> int:
        return self.n_mels * self.lfr_m


def load_cmvn(path: Path) -> FloatArray:
    """The (2, D) CMVN of a Kaldi nnet text file: row 0 the ``<AddShift>`` (minus the means),
    row 1 the ``<Rescale>`` (one over the standard deviations); as funasr reads it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    shift: list[str] = []
    scale: list[str] = []
    for i, line in enumerate(lines[:-1]):
        head = line.split()[:1]
        body = lines[i + 1].split()
        if head in (["<AddShift>"], ["<Rescale>"]) and body[:1] == ["<LearnRateCoef>"]:
            values = body[3:-1]
            if head == ["<AddShift>"]:
                shift = values
            else:
                scale = values
    if not shift or len(shift) != len(scale):
        raise ValueError(f"{path} holds no Kaldi CMVN (<AddShift> and <Rescale> of one size)")
    return np.array([shift, scale], dtype=np.float32)


def seeded_dither(audio: FloatArray, amount: float) -> FloatArray:
    """Kaldi-style dither (``amount`` in 16-bit sample units) from a fixed seed: digital silence
    never reaches log(0), and the same audio always gets the same noise."""
    noise = np.random.default_rng(len(audio)).standard_normal(len(audio)).astype(np.float32)
    return audio + noise * np.float32(amount / 32768)


def apply_lfr(feats: FloatArray, lfr_m: int, lfr_n: int) -> FloatArray:
    """Low frame rate: output frame i stacks input frames ``i*lfr_n - (lfr_m-1)//2`` onwards,
    ``lfr_m`` of them, the first and last frames repeated where that runs past the ends."""
    if lfr_m == 1 and lfr_n == 1:
        return feats
    frames = feats.shape[0]
    count = -(-frames // lfr_n)
    index = np.arange(count)[:, None] * lfr_n + np.arange(lfr_m)[None, :] - (lfr_m - 1) // 2
    stacked = feats[np.clip(index, 0, frames - 1)]
    return np.ascontiguousarray(stacked.reshape(count, lfr_m * feats.shape[1]), dtype=np.float32)


class NumpyFeatures:
    """fbank + LFR + CMVN for a batch, zero-padded: what ``features.Features`` gives on the CPU."""

    def __init__(self, config: FrontendConfig, cmvn: FloatArray | None, pad_multiple: int = 1) -> None:
        import kaldi_native_fbank as knf

        self.config = config
        self._cmvn = cmvn
        self._pad_multiple = max(pad_multiple, 1)
        self._knf = knf
        self._opts = self._fbank_options(float(config.frame_length))

    def _fbank_options(self, frame_length_ms: float) -> Any:
        config = self.config
        opts = self._knf.FbankOptions()
        frame = opts.frame_opts
        frame.samp_freq = float(config.fs)
        frame.frame_length_ms = frame_length_ms
        frame.frame_shift_ms = float(config.frame_shift)
        frame.dither = 0.0  # applied before, from a fixed seed
        frame.snip_edges = bool(config.snip_edges)
        frame.window_type = config.window
        frame.preemph_coeff = 0.97
        frame.remove_dc_offset = True
        frame.round_to_power_of_two = True
        opts.mel_opts.num_bins = config.n_mels
        opts.mel_opts.low_freq = 20.0
        opts.mel_opts.high_freq = 0.0
        opts.energy_floor = 0.0
        opts.raw_energy = True
        opts.use_energy = False
        opts.use_log_fbank = True
        opts.use_power = True
        opts.htk_compat = False
        return opts

    def __call__(self, audios: Sequence[FloatArray]) -> tuple[FloatArray, npt.NDArray[np.int32]]:
        """Padded (B, T, D) float32 features and their lengths (B,) int32."""
        for audio in audios:
            if len(audio) < MIN_SAMPLES:
                raise InvalidAudioError(f"utterance too short: {len(audio)} samples (< {MIN_SAMPLES})")
        feats = [self.one(audio) for audio in audios]
        lengths = np.array([f.shape[0] for f in feats], dtype=np.int32)
        target = -(-int(lengths.max()) // self._pad_multiple) * self._pad_multiple
        padded = np.zeros((len(feats), target, self.config.dim), dtype=np.float32)
        for i, f in enumerate(feats):
            padded[i, : f.shape[0]] = f
        return padded, lengths

    def one(self, audio: FloatArray) -> FloatArray:
        """(T, D) features of one utterance (16 kHz float32 samples in [-1, 1])."""
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        if self.config.dither > 0:
            samples = seeded_dither(samples, self.config.dither)
        if self.config.upscale_samples:
            samples = samples * np.float32(1 << 15)
        # funasr shortens the window to the utterance when the utterance is shorter than it.
        length_ms = len(samples) / self.config.fs * 1000
        opts = self._opts if length_ms >= self.config.frame_length else self._fbank_options(length_ms)
        fbank = self._knf.OnlineFbank(opts)
        fbank.accept_waveform(float(self.config.fs), samples)
        fbank.input_finished()
        mat = np.array([fbank.get_frame(i) for i in range(fbank.num_frames_ready)], dtype=np.float32)
        mat = apply_lfr(mat.reshape(-1, self.config.n_mels), self.config.lfr_m, self.config.lfr_n)
        if self._cmvn is not None:
            dim = mat.shape[1]
            mat = mat + self._cmvn[0, :dim]
            mat *= self._cmvn[1, :dim]
        return mat
