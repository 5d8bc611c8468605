"""GPU tests: the engine and the server on CUDA, against the CPU reference.

They need a CUDA GPU and are skipped without one (CI has none): tools/gpu/run_gpu_checklist.sh
runs them on a GPU machine (``tests`` step). Speech comes from ``EMOSTT_GPU_CLIPS`` (the
bundle's clips.npz, tools/gpu/save_clips.py: that machine has no espeak-ng) or, where
espeak-ng is installed, is rendered here. The full random-weight SenseVoiceSmall dir comes
from ``EMOSTT_GPU_FULL_MODEL`` or is generated once per session.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

NEEDS_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: run tools/gpu/run_gpu_checklist.sh on a GPU machine",
)
CLIP_COUNT = 40


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray  # 16 kHz float32
    text: str
    language: str
    emotion: str
    event: str


def _saved_clips(path: Path) -> list[Clip]:
    with np.load(path) as saved:
        audio, bounds = saved["audio"], saved["bounds"]
        fields = ("text", "language", "emotion", "event")
        texts, languages, emotions, events = (saved[k].tolist() for k in fields)
    return [
        Clip(audio[a:b].astype(np.float32) / 32768, texts[i], languages[i], emotions[i], events[i])
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    """Held-out espeak-ng phrases (speech only), several languages, voices and styles."""
    saved = os.environ.get("EMOSTT_GPU_CLIPS")
    if saved:
        return _saved_clips(Path(saved))[:CLIP_COUNT]
    if shutil.which("espeak-ng") is None:
        pytest.skip("no speech: set EMOSTT_GPU_CLIPS (tools/gpu/save_clips.py) or install espeak-ng")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import demo_data

    rendered = [c for c in demo_data.generate("heldout", limit=60) if c.text]
    return [Clip(c.audio, c.text, c.language, c.emotion, c.event) for c in rendered][:CLIP_COUNT]


@pytest.fixture(scope="session")
def full_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SenseVoiceSmall's exact shapes (234M parameters, vocabulary 25055), random weights."""
    given = os.environ.get("EMOSTT_GPU_FULL_MODEL")
    if given and (Path(given) / "model.pt").is_file():
        return Path(given)
    from emostt.inference.modeldir import SIZES, write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("models") / "full", SIZES["full"], seed=0)


EngineFactory = Callable[[str, str, str], SenseVoiceEngine]


@pytest.fixture(scope="session")
def load_engine() -> EngineFactory:
    """``load_engine(model, device, precision)``: torch backend, cached for the session."""
    cache: dict[tuple[str, str, str], SenseVoiceEngine] = {}

    def load(model: str, device: str, precision: str) -> SenseVoiceEngine:
        key = (model, device, precision)
        if key not in cache:
            options = EngineOptions(device=device, precision=precision, backend="torch")
            cache[key] = SenseVoiceEngine.load(model, options)
        return cache[key]

    return load


@pytest.fixture
def exact_fp32() -> Iterator[None]:
    """fp32 on CUDA without TF32 (cuDNN convolutions use it by default): the CPU reference's
    arithmetic, so the parity tolerance can be tight. Restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
