"""CPU cost of the end-of-turn model (Smart Turn v3.2) per call, as the turn thread runs it.

    .venv/bin/python tools/bench_turn_model.py [--model PATH] [--batches 1,2,4,8] [--calls 20]

One ONNX Runtime intra-op thread, as served. Prints, per batch size, the CPU time of one call
(features and model), per turn, and the features' share; the best of three rounds of ``--calls``
calls (CPU time of this process, so other load on a shared machine inflates it least).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from emostt.inference.smart_turn import SmartTurn, locate_turn_model
from emostt.inference.turn_features import turn_feature_batch


def cpu_per_call(fn: Callable[[], object], calls: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="auto", help="auto (pipecat-ai's copy) or an .onnx path")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    path = locate_turn_model(args.model).path if args.model == "auto" else Path(args.model)
    if path is None:
        raise SystemExit("no turn model: install pipecat-ai or pass --model PATH")
    model = SmartTurn(path)
    rng = np.random.default_rng(0)
    # 5 s turns (padded to the model's 8 s window like any shorter turn): the cost does not
    # depend on the audio, only on the batch size.
    turns = [(rng.standard_normal(5 * 16_000) * 0.1).astype(np.float32) for _ in range(8)]
    print(f"model: {path}")
    print("| turns per call | CPU per call | CPU per turn | of which features |")
    print("|---|---|---|---|")
    for size in (int(b) for b in args.batches.split(",")):
        batch = [turns[i % len(turns)] for i in range(size)]
        model.predict(batch)  # warm-up: the first run allocates
        call = cpu_per_call(partial(model.predict, batch), args.calls)
        features = cpu_per_call(partial(turn_feature_batch, batch), args.calls)
        per_turn, feature_share = call / size * 1e3, features / size * 1e3
        print(f"| {size} | {call * 1e3:.0f} ms | {per_turn:.0f} ms | {feature_share:.0f} ms |")


if __name__ == "__main__":
    main()
