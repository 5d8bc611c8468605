#!/usr/bin/env python
"""Keyterm decoding cost: what the engine does after the encoder, per 5 s utterance, one core.

Times ``SenseVoiceEngine.results_from_logits`` (everything ``transcribe`` does after the
encoder pass: the greedy reductions, and for a request with keyterms the top-k of its text
frames, the biased beam search, the alignment and the matches) for one 5 s utterance at a
time with 0, 10 and 100 keyterms. The posteriors are real: the demo model's CTC output on
held-out espeak-ng phrases joined into 5 s utterances (tools/demo_data.py). Their rows are
widened to SenseVoiceSmall's 25,055 tokens (``--vocab``) with logits far below the row's own,
so the softmax and top-k run at the real model's width while the decoding sees the demo
model's peaks. The keyterms are the demo model's own words and phrases first (the model puts
weight on them, so the beam has work), then words it has never seen.

    python tools/bench_keyterms_decode.py --out docs/bench/keyterms-decode.json

The process is pinned to one core with one torch thread. Graph compilation is cached per
distinct keyterm set in the engine; its cold cost is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import timeit
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostt.inference.engine import TranscriptionRequest
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_data
from bench_engine import machine

SECONDS = 5.0
GAP_S = 0.15
UNSEEN = [
    "anthropic",
    "kubernetes",
    "zebra",
    "pancake",
    "violin",
    "tornado",
    "quantum",
    "saxophone",
    "giraffe",
    "lantern",
    "marble",
    "oyster",
    "penguin",
    "rhubarb",
    "sapphire",
    "tulip",
    "umbrella",
    "vortex",
    "walnut",
    "yacht",
    "bamboo",
    "cactus",
    "dolphin",
    "eclipse",
    "falcon",
    "glacier",
    "harbor",
    "iguana",
    "jasmine",
    "kettle",
    "lobster",
    "meadow",
    "nectar",
    "orchid",
    "parrot",
    "quiver",
    "raven",
    "saffron",
    "thistle",
    "unicorn",
    "velvet",
    "willow",
    "xylophone",
    "yogurt",
    "zucchini",
    "acorn",
    "blossom",
]


def utterances(count: int) -> list[np.ndarray]:
    """``count`` utterances of exactly SECONDS: held-out speech clips with short gaps between."""
    clips = [c.audio for c in demo_data.generate("heldout") if c.text]
    rng = np.random.default_rng(0)
    gap = np.zeros(int(GAP_S * 16000), dtype=np.float32)
    out = []
    for _ in range(count):
        parts: list[np.ndarray] = []
        while sum(len(p) for p in parts) < SECONDS * 16000:
            parts += [clips[int(rng.integers(len(clips)))], gap]
        out.append(np.concatenate(parts)[: int(SECONDS * 16000)])
    return out


def keyterm_list(count: int) -> tuple[str, ...]:
    """The demo model's own phrases and words, then unseen words: ``count`` distinct terms."""
    known = list(
        dict.fromkeys(
            [p for p, _ in demo_data.PHRASES] + [w for p, _ in demo_data.PHRASES for w in p.split()]
        )
    )
    terms = list(dict.fromkeys(known[: max(count - 10, count // 2)] + UNSEEN + known))
    return tuple(terms[:count])


def widen(logp: np.ndarray, vocab: int, seed: int) -> torch.Tensor:
    """(T, V) log-probs as (1, T, vocab) logits; the added tokens sit 20-30 nats below each row's best."""
    rng = np.random.default_rng(seed)
    extra = logp.max(axis=1, keepdims=True) - rng.uniform(20.0, 30.0, (len(logp), vocab - logp.shape[1]))
    return torch.from_numpy(np.concatenate([logp, extra.astype(np.float32)], axis=1))[None]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--vocab", type=int, default=25055)
    parser.add_argument("--keyterms", type=int, nargs="+", default=[0, 10, 100])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    engine = SenseVoiceEngine.load(args.model, EngineOptions(device="cpu", precision="fp32", threads=1))
    torch.set_num_threads(1)
    audio = utterances(args.utterances)
    inputs = []
    for i, samples in enumerate(audio):
        logp = engine.log_probs([TranscriptionRequest(samples)])[0]
        logits = widen(logp, max(args.vocab, logp.shape[1]), i)
        inputs.append((TranscriptionRequest(samples), logits, torch.tensor([logits.shape[1]])))
    frames = [int(lens[0]) for _, _, lens in inputs]

    rows: list[dict[str, Any]] = []
    for count in args.keyterms:
        terms = keyterm_list(count)
        start = time.perf_counter()
        graph = engine.keyterm_graphs.compile(terms) if terms else None
        compile_ms = (time.perf_counter() - start) * 1e3
        times: list[float] = []
        matched = 0
        with torch.inference_mode():
            for request, logits, lens in inputs:
                request = replace(request, keyterms=terms)
                engine.results_from_logits([request], logits, lens)  # warm: the graph cache
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    result = engine.results_from_logits([request], logits, lens)[0]
                    times.append(time.perf_counter() - start)
                matched += len(result.keyterms_matched or [])
        rows.append(
            {
                "keyterms": count,
                "p50_ms": round(percentile(times, 50), 3),
                "p95_ms": round(percentile(times, 95), 3),
                "max_ms": round(percentile(times, 100), 3),
                "graph_states": graph.num_states if graph is not None else 0,
                "graph_compile_ms": round(compile_ms, 2),
                "matched_per_utterance": round(matched / len(inputs), 2),
            }
        )
        print(rows[-1], flush=True)

    requests = [inputs[0][0]] * 16
    check = timeit.timeit(lambda: {i: r for i, r in enumerate(requests) if r.keyterms}, number=20000) / 20000
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "cores": 1,
        "torch_threads": torch.get_num_threads(),
        "model": args.model,
        "vocab": args.vocab,
        "utterance_s": SECONDS,
        "text_frames": sorted(set(f - 4 for f in frames)),
        "utterances": args.utterances,
        "repeats": args.repeats,
        "rows": rows,
        "no_keyterm_check_us_per_batch_of_16": round(check * 1e6, 3),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
