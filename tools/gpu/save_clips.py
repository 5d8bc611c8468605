#!/usr/bin/env python
"""Save espeak-ng phrases for machines without espeak-ng (the GPU machine): one .npz.

The held-out phrases tools/bench_stream.py streams (``demo_data.generate("heldout")``, speech
clips only), 16 kHz PCM16 concatenated, with their bounds, texts, languages, emotions and events:

    python tools/gpu/save_clips.py .gpu-bundle/clips.npz --limit 160

``bench_stream.py --clips FILE`` streams them; tests/gpu reads them (``EMOSTT_GPU_CLIPS``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import demo_data


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=160, help="held-out specs to render (speech kept)")
    args = parser.parse_args()
    clips = [c for c in demo_data.generate("heldout", limit=args.limit) if c.text]
    pcm = [(np.clip(c.audio, -1, 32767 / 32768) * 32768).astype("<i2") for c in clips]
    bounds = np.cumsum([0, *(len(p) for p in pcm)]).astype(np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        audio=np.concatenate(pcm),
        bounds=bounds,
        text=np.array([c.text for c in clips]),
        language=np.array([c.language for c in clips]),
        emotion=np.array([c.emotion for c in clips]),
        event=np.array([c.event for c in clips]),
    )
    seconds = bounds[-1] / 16000
    size_mib = args.out.stat().st_size / 2**20
    print(f"wrote {len(clips)} clips ({seconds:.0f} s of audio, {size_mib:.1f} MiB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
