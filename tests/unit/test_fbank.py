"""The torch-free features (``fbank.py``: kaldi-native-fbank, LFR and CMVN in numpy) equal
funasr's ``WavFrontend`` (what ``features.py`` runs on the CPU) on real speech and edge lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from funasr.frontends.wav_frontend import WavFrontend, apply_lfr, load_cmvn

from emostt.errors import InvalidAudioError
from emostt.inference import fbank
from emostt.inference.fbank import FrontendConfig, NumpyFeatures
from emostt.inference.features import Features
from emostt.inference.model_source import BUNDLED_MODELS_DIR
from tests.conftest import noise_utterances

DEMO = BUNDLED_MODELS_DIR / "demo"
# kaldi-native-fbank on both sides here (funasr falls back to it without torchaudio); with
# torchaudio's fbank on funasr's side the features differ by float32 rounding (~1e-4 in log-mel).
TOLERANCE = 1e-5


def demo_conf() -> dict:
    return yaml.safe_load((DEMO / "config.yaml").read_text())["frontend_conf"]


def funasr_frontend(dither: float = 0.0) -> WavFrontend:
    conf = {**demo_conf(), "cmvn_file": str(DEMO / "am.mvn"), "dither": dither}
    return WavFrontend(**conf)


def numpy_features(dither: float = 0.0, pad_multiple: int = 1) -> NumpyFeatures:
    config = FrontendConfig.from_conf({**demo_conf(), "dither": dither})
    return NumpyFeatures(config, fbank.load_cmvn(DEMO / "am.mvn"), pad_multiple)


def reference(audio: np.ndarray, frontend: WavFrontend) -> np.ndarray:
    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, :]
    feats, _ = frontend(wav, [wav.shape[1]])
    return feats[0].numpy()


def test_the_frontend_config_is_funasrs_with_its_defaults() -> None:
    config = FrontendConfig.from_conf(demo_conf())
    frontend = funasr_frontend(dither=1.0)
    assert config == FrontendConfig(
        fs=frontend.fs,
        window=frontend.window,
        n_mels=frontend.n_mels,
        frame_length=frontend.frame_length,
        frame_shift=frontend.frame_shift,
        lfr_m=frontend.lfr_m,
        lfr_n=frontend.lfr_n,
        dither=frontend.dither,
        snip_edges=frontend.snip_edges,
        upscale_samples=frontend.upsacle_samples,
    )
    assert FrontendConfig.from_conf(config.to_conf()) == config
    assert FrontendConfig.from_conf({}) == FrontendConfig()  # WavFrontend's own defaults
    assert config.dim == 560


def test_cmvn_is_read_as_funasr_reads_it() -> None:
    np.testing.assert_array_equal(fbank.load_cmvn(DEMO / "am.mvn"), load_cmvn(str(DEMO / "am.mvn")).numpy())


def test_a_file_without_cmvn_is_refused(tmp_path: Path) -> None:
    (tmp_path / "am.mvn").write_text("<Nnet>\n</Nnet>\n")
    with pytest.raises(ValueError, match="no Kaldi CMVN"):
        fbank.load_cmvn(tmp_path / "am.mvn")


@pytest.mark.parametrize(("lfr_m", "lfr_n"), [(7, 6), (1, 1), (5, 3), (4, 4)])
def test_lfr_equals_funasrs_at_every_length(lfr_m: int, lfr_n: int) -> None:
    rng = np.random.default_rng(lfr_m * 10 + lfr_n)
    for frames in range(1, 40):
        feats = rng.standard_normal((frames, 3)).astype(np.float32)
        want = feats if (lfr_m, lfr_n) == (1, 1) else apply_lfr(torch.from_numpy(feats), lfr_m, lfr_n).numpy()
        np.testing.assert_array_equal(fbank.apply_lfr(feats, lfr_m, lfr_n), want)


def test_features_equal_funasrs_on_speech(speech_16k: np.ndarray) -> None:
    got = numpy_features().one(speech_16k)
    want = reference(speech_16k, funasr_frontend())
    assert got.shape == want.shape == (want.shape[0], 560)
    gap = float(np.abs(got - want).max())
    print(f"features on speech: worst gap {gap:.2e}")
    assert gap <= TOLERANCE


def test_features_equal_funasrs_at_edge_lengths() -> None:
    """One window, a window plus a sample, LFR boundaries, and longer noise."""
    frontend, ours = funasr_frontend(), numpy_features()
    lengths = [400, 401, 559, 560, 1360, 1361, 9760, 16_000, 48_123]
    for audio in noise_utterances([n / 16_000 for n in lengths], seed=5):
        np.testing.assert_allclose(ours.one(audio), reference(audio, frontend), atol=TOLERANCE, rtol=0)


def test_the_batch_equals_the_torch_engines_features_dither_included(speech_16k: np.ndarray) -> None:
    """``features.Features`` (the torch engine's) with the model's dither from its fixed seed."""
    audios = [speech_16k, speech_16k[:8000], np.zeros(4000, dtype=np.float32)]
    frontend = funasr_frontend()
    want, want_lens = Features(frontend, torch.device("cpu"), pad_multiple=8, dither=1.0)(audios)
    got, got_lens = numpy_features(dither=1.0, pad_multiple=8)(audios)
    np.testing.assert_array_equal(got_lens, want_lens.numpy())
    assert got.shape == tuple(want.shape) and got.shape[1] % 8 == 0
    np.testing.assert_allclose(got, want.numpy(), atol=TOLERANCE, rtol=0)
    assert np.isfinite(got).all(), "dither keeps digital silence off log(0)"


def test_too_short_audio_is_refused() -> None:
    with pytest.raises(InvalidAudioError, match="too short"):
        numpy_features()([np.zeros(399, dtype=np.float32)])


def test_an_utterance_shorter_than_the_window_gets_a_shorter_window_as_in_funasr() -> None:
    """funasr's WavFrontend shrinks the analysis window to a short utterance (here 50 ms windows)."""
    conf = {**demo_conf(), "frame_length": 50, "dither": 0.0, "cmvn_file": None}
    frontend = WavFrontend(**conf)
    ours = NumpyFeatures(FrontendConfig.from_conf(conf), None)
    for audio in noise_utterances([0.03, 0.05, 0.2], seed=9):
        np.testing.assert_allclose(ours.one(audio), reference(audio, frontend), atol=TOLERANCE, rtol=0)
