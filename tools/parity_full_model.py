#!/usr/bin/env python
"""The torch-free engine against the torch-loaded ONNX path on a full-size model, by hand.

    emostt model make-random /tmp/sv-full --size full
    emostt model export /tmp/sv-full /tmp/sv-full-onnx        # fills the ONNX cache too
    python tools/parity_full_model.py --model /tmp/sv-full --exported /tmp/sv-full-onnx

tests/integration/test_torch_free_engine.py checks the demo and a tiny generated model in CI;
the full size (234M parameters, 25055 tokens) needs ~3.3 GB and minutes to export, so it is
checked here with the test's own requests and comparison (every decoding option, keyterms and
word times included; text, words and labels equal, the worst score gap printed): the exported
dir and the model dir served from the cache, each batched and one request at a time, and the
worst CTC log-probability gap. docs/engine.md, "Parity and tolerances", records the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from tests.integration.test_torch_free_engine import varied_requests, worst_gap  # noqa: E402

from emostt.audio import read_audio_file  # noqa: E402
from emostt.inference.onnx_engine import OnnxEngine  # noqa: E402
from emostt.inference.options import EngineOptions  # noqa: E402
from emostt.inference.sensevoice import SenseVoiceEngine  # noqa: E402
from emostt.inference.serving import load_engine  # noqa: E402
from peer_clips import make_clips  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="the model dir (its export cached)")
    parser.add_argument("--exported", type=Path, required=True, help="its exported dir")
    parser.add_argument(
        "--cache", type=Path, default=None, help="EMOSTT_ONNX_CACHE_DIR (default: the default)"
    )
    parser.add_argument("--clips", type=Path, default=Path("/tmp/emostt-peers/clips.npz"))
    args = parser.parse_args()
    cache = str(args.cache) if args.cache else None
    clips = make_clips(args.clips)
    audio = [read_audio_file(ROOT / "docs" / "samples" / "turn_left.wav"), *clips["s2"][:4], clips["s10"][0]]
    requests = varied_requests(audio)
    onnx = EngineOptions(device="cpu", precision="int8", backend="onnx", onnx_cache_dir=cache)
    reference = SenseVoiceEngine.load(str(args.model), onnx)
    assert reference.info.backend == "onnx", "the torch-loaded path must run the cached graph"
    for where in (args.exported, args.model):
        engine = load_engine(str(where), EngineOptions(device="cpu", backend="auto", onnx_cache_dir=cache))
        assert isinstance(engine, OnnxEngine), f"{where} was not served torch-free"
        batched = worst_gap(engine.transcribe(requests), reference.transcribe(requests))
        alone = max(worst_gap(engine.transcribe([r]), reference.transcribe([r])) for r in requests)
        logp = max(
            float(np.abs(a - b).max())
            for a, b in zip(engine.log_probs(requests[:4]), reference.log_probs(requests[:4]), strict=True)
        )
        print(
            f"{engine.model.origin}: scores batched {batched:.1e}, one at a time {alone:.1e};",
            f"log-probs {logp:.1e}",
        )


if __name__ == "__main__":
    main()
