"""CUDA against the CPU reference: fp32 parity, the GPU feature path, fp16 and bf16 on speech.

Tolerances (stated here, checked on the first GPU run; docs/engine.md "GPU checklist"):
- fp32, TF32 off: CTC log-probabilities within ``FP32_LOGP_ATOL`` of the CPU's on every
  frame and token; the demo model's text identical; on random-weight models every frame
  whose two best tokens are further apart than twice that tolerance has the same best token
  (a random model's near-ties may flip; its text is no check).
- features on the GPU (torchaudio's Kaldi fbank, LFR, CMVN) within ``FEATURE_ATOL`` of the
  CPU's (funasr's WavFrontend), after CMVN.
- fp16 / bf16 against CUDA fp32 on the demo model's held-out speech: the same text on at
  least ``HALF_TEXT_AGREEMENT`` of the clips, and every language, emotion and event score
  within ``HALF_SCORE_ATOL``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from emostt.inference.engine import TranscriptionRequest, TranscriptionResult
from tests.gpu.conftest import NEEDS_CUDA, Clip, EngineFactory

pytestmark = NEEDS_CUDA

FP32_LOGP_ATOL = 1e-3
FEATURE_ATOL = 2e-3
HALF_TEXT_AGREEMENT = {"fp16": 0.95, "bf16": 0.9}
HALF_SCORE_ATOL = {"fp16": 0.05, "bf16": 0.1}
PARITY_CLIPS = 8


def requests_of(clips: list[Clip], count: int | None = None) -> list[TranscriptionRequest]:
    return [TranscriptionRequest(c.audio) for c in clips[:count]]


@pytest.fixture(params=["tiny", "demo", "full"])
def model(request: pytest.FixtureRequest, tiny_model_dir: Path) -> str:
    if request.param == "tiny":
        return str(tiny_model_dir)
    if request.param == "full":
        return str(request.getfixturevalue("full_model_dir"))
    return "demo"


def test_cuda_fp32_matches_cpu(
    model: str, load_engine: EngineFactory, clips: list[Clip], exact_fp32: None
) -> None:
    cpu, gpu = load_engine(model, "cpu", "fp32"), load_engine(model, "cuda", "fp32")
    assert gpu.info.device.startswith("cuda") and gpu.info.backend == "torch"
    requests = requests_of(clips, PARITY_CLIPS)  # mixed lengths: padding is exercised too
    for ref, got in zip(cpu.log_probs(requests), gpu.log_probs(requests), strict=True):
        assert ref.shape == got.shape
        worst = float(np.abs(ref - got).max())
        assert worst <= FP32_LOGP_ATOL, f"CUDA fp32 log-probs differ from the CPU's by {worst:.2e}"
        top2 = np.sort(ref, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * FP32_LOGP_ATOL
        assert (ref.argmax(-1)[clear] == got.argmax(-1)[clear]).all()
    if model == "demo":
        cpu_text = [r.text for r in cpu.transcribe(requests)]
        assert [r.text for r in gpu.transcribe(requests)] == cpu_text


def _has_gpu_fbank() -> bool:
    if importlib.util.find_spec("torchaudio") is None:
        return False
    try:
        import torchaudio.compliance.kaldi  # noqa: F401  # type: ignore[import-not-found]
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _has_gpu_fbank(),
    reason="the GPU feature path needs torchaudio with torchaudio.compliance.kaldi (pip install "
    "emostt[gpu]); without it the engine computes features on the CPU, which the fp32 parity test covers",
)
def test_gpu_features_match_cpu_features(load_engine: EngineFactory, clips: list[Clip]) -> None:
    cpu, gpu = load_engine("demo", "cpu", "fp32"), load_engine("demo", "cuda", "fp32")
    assert gpu._features._kaldi is not None, "the CUDA engine did not take the GPU feature path"
    audio = [c.audio for c in clips[:PARITY_CLIPS]]
    ref, ref_lens = cpu._features(audio)
    got, got_lens = gpu._features(audio)
    assert got.device.type == "cuda"
    assert torch.equal(ref_lens, got_lens.cpu())
    worst = float((ref - got.cpu()).abs().max())
    assert worst <= FEATURE_ATOL, f"GPU features differ from the CPU's by {worst:.2e}"


def _max_score_gap(a: TranscriptionResult, b: TranscriptionResult) -> float:
    gaps = [
        abs(x.scores[label] - y.scores[label])
        for x, y in ((a.language, b.language), (a.emotion, b.emotion), (a.event, b.event))
        for label in x.scores
    ]
    return max(gaps)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_keeps_text_and_scores(
    precision: str, load_engine: EngineFactory, clips: list[Clip]
) -> None:
    reference = load_engine("demo", "cuda", "fp32").transcribe(requests_of(clips))
    results = load_engine("demo", "cuda", precision).transcribe(requests_of(clips))
    same_text = sum(r.text == f.text for r, f in zip(results, reference, strict=True)) / len(results)
    differing = [(f.text, r.text) for r, f in zip(results, reference, strict=True) if r.text != f.text]
    assert same_text >= HALF_TEXT_AGREEMENT[precision], (same_text, differing)
    worst = max(_max_score_gap(r, f) for r, f in zip(results, reference, strict=True))
    assert worst <= HALF_SCORE_ATOL[precision], f"{precision} scores moved by up to {worst:.3f}"
