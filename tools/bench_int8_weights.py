#!/usr/bin/env python
"""How the int8 encoder's weights are quantized, measured: speed and error against fp32.

    emostt model make-random /tmp/sv-full --size full
    python tools/bench_int8_weights.py --model /tmp/sv-full --out docs/bench/int8-weights-$(date +%F).json

One fp32 graph per model (funasr's exporter, ``quantize=False``, in a child process: it holds
the fp32 model), quantized five ways with ONNX Runtime's ``quantize_dynamic`` (MatMuls, the
nodes funasr leaves in float left in float): unsigned or signed weights, per channel or per
tensor, and signed 7-bit (``reduce_range``). emostt's export is ``signed per channel``
(emostt.inference.int8_weights); funasr's is ``unsigned per channel``; sherpa-onnx's is
``unsigned per tensor``.

- **speed** (``--model`` only): the encoder call alone, interleaved ``--reps`` times, on
  tools/bench_peers.py's clips: a lone 2 s call on 2 spinning threads (the server's wide
  session), 4 x 2 s in one call on 1 thread and a 10 s call on 1 thread (a model worker's);
- **batching** (``--model`` only, emostt's graph): thread CPU per utterance on 1 thread with B
  clips in one call, 2 s x 1..16 and 10 s x 1..8 (what the server's padded-audio cap per batch
  trades: docs/engine.md, "CPU threads");
- **error**: mean |log p - log p_fp32| over every frame and token, the mean largest probability
  gap per clip, and how often the argmax agrees, on the peer clips (``--model``) and on 120 of
  the demo model's held-out clips (the demo model, trained, exported the same way).

The variants and their fp32 graphs stay in ``--work``; a rerun reuses them.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_data
from emostt.inference.fbank import NumpyFeatures, load_cmvn
from emostt.inference.int8_weights import quantize_encoder
from emostt.inference.model_source import bundled_models
from emostt.inference.onnx_model import model_dir_files
from emostt.inference.ort_session import CPU_PROVIDERS, session_options
from peer_clips import make_clips
from peer_report import git_revision
from reliability import machine_info

TOOLS = Path(__file__).resolve().parent
# name: (per channel, signed, reduce_range)
VARIANTS = {
    "unsigned per channel (funasr)": (True, False, False),
    "unsigned per tensor (sherpa-onnx)": (False, False, False),
    "signed per channel (emostt)": (True, True, False),
    "signed per tensor": (False, True, False),
    "signed per channel, 7-bit": (True, True, True),
}
TIMED = [name for name, (_, _, reduce_range) in VARIANTS.items() if not reduce_range]
WITH_ITN = 14


def export_fp32(model_dir: Path, out: Path) -> Path:
    graph = out / "model.onnx"
    if not graph.is_file():
        export = [sys.executable, str(TOOLS / "peer_export.py"), "funasr-fp32", str(model_dir), str(out)]
        subprocess.run(export, check=True)  # a child: it holds the fp32 model
    return graph


def quantize(fp32: Path, out: Path, per_channel: bool, signed: bool, reduce_range: bool) -> Path:
    if not out.is_file():
        logging.disable(logging.WARNING)  # the quantizer's advice to pre-process, per call
        quantize_encoder(fp32, out, signed=signed, per_channel=per_channel, reduce_range=reduce_range)
        logging.disable(logging.NOTSET)
    return out


def graphs(model_dir: Path, work: Path) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    fp32 = export_fp32(model_dir, work / "fp32")
    out = {"fp32": fp32}
    for i, (name, spec) in enumerate(VARIANTS.items()):
        out[name] = quantize(fp32, work / f"variant{i}.onnx", *spec)
    return out


class Encoder:
    def __init__(self, graph: Path, threads: int, spinning: bool = False) -> None:
        import onnxruntime as ort

        options = session_options(threads, spinning=spinning)
        self.session = ort.InferenceSession(str(graph), options, providers=CPU_PROVIDERS)

    def __call__(self, feats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        f, lengths = feats
        n = len(f)
        feed = {
            "speech": f,
            "speech_lengths": lengths.astype(np.int32),
            "language": np.zeros(n, np.int32),
            "textnorm": np.full(n, WITH_ITN, np.int32),
        }
        return np.asarray(self.session.run(None, feed)[0])


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return np.asarray(x - np.log(np.exp(x).sum(-1, keepdims=True)))


def errors(paths: dict[str, Path], clips: list[np.ndarray], features: NumpyFeatures) -> dict[str, Any]:
    feats = [features([c]) for c in clips]
    out: dict[str, list[np.ndarray]] = {}
    for name, path in paths.items():
        encoder = Encoder(path, 2)
        out[name] = [log_softmax(encoder(f)[0]) for f in feats]
    ref = out.pop("fp32")
    return {
        name: {
            "mean_abs_dlogp": round(
                float(np.mean([np.abs(a - b).mean() for a, b in zip(r, ref, strict=True)])), 5
            ),
            "mean_max_dp": round(
                float(np.mean([np.abs(np.exp(a) - np.exp(b)).max() for a, b in zip(r, ref, strict=True)])), 5
            ),
            "argmax_agreement": round(
                float(
                    np.mean(
                        np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(r, ref, strict=True)])
                    )
                ),
                5,
            ),
        }
        for name, r in out.items()
    }


def speed(
    paths: dict[str, Path], clips: dict[str, np.ndarray], features: NumpyFeatures, reps: int
) -> dict[str, Any]:
    wide = {n: Encoder(paths[n], 2, spinning=True) for n in TIMED}
    one = {n: Encoder(paths[n], 1) for n in TIMED}
    cells = {
        "lone_2s_2_spinning_threads_ms": (wide, [features([c]) for c in clips["s2"]]),
        "batch4_2s_1_thread_ms": (one, [features(list(clips["s2"][i : i + 4])) for i in range(0, 16, 4)]),
        "10s_1_thread_ms": (one, [features([c]) for c in clips["s10"]]),
    }
    times: dict[str, dict[str, list[float]]] = {cell: {n: [] for n in TIMED} for cell in cells}
    for encoders, inputs in cells.values():
        for n in TIMED:
            encoders[n](inputs[0])  # first-call set-up
    for rep in range(reps):
        order = TIMED[rep % len(TIMED) :] + TIMED[: rep % len(TIMED)]
        for cell, (encoders, inputs) in cells.items():
            for n in order:
                time.sleep(0.2)  # spinning threads of the call before have stopped
                began = time.perf_counter()
                encoders[n](inputs[rep % len(inputs)])
                times[cell][n].append((time.perf_counter() - began) * 1000)
    return {
        cell: {
            n: {"median": round(statistics.median(v), 1), "runs": [round(x, 1) for x in v]}
            for n, v in by.items()
        }
        for cell, by in times.items()
    }


def batching(
    graph: Path, clips: dict[str, np.ndarray], features: NumpyFeatures, reps: int
) -> dict[str, float]:
    encoder = Encoder(graph, 1)
    cells = {
        f"{seconds}s_x{batch}": features(list(clips[f"s{seconds}"][:batch]))
        for seconds in (2, 10)
        for batch in (1, 2, 4, 8, 16)
        if seconds * batch <= 80
    }
    for feats in cells.values():
        encoder(feats)
    per_utterance: dict[str, list[float]] = {cell: [] for cell in cells}
    for _ in range(reps):
        for cell, feats in cells.items():
            began = time.thread_time()
            encoder(feats)
            per_utterance[cell].append((time.thread_time() - began) * 1000 / len(feats[0]))
    return {cell: round(statistics.median(v), 1) for cell, v in per_utterance.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a SenseVoice model dir (make-random)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emostt-int8"))
    parser.add_argument("--reps", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    clips = make_clips(args.work / "clips.npz")
    files = model_dir_files(args.model)
    features = NumpyFeatures(files.frontend, load_cmvn(files.cmvn) if files.cmvn else None)
    full = graphs(args.model, args.work / "model")
    demo_files = model_dir_files(bundled_models()["demo"])
    demo_features = NumpyFeatures(
        demo_files.frontend, load_cmvn(demo_files.cmvn) if demo_files.cmvn else None
    )
    demo = graphs(bundled_models()["demo"], args.work / "demo")
    held_out = [c.audio for c in demo_data.generate("heldout")[:120]]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "revision": git_revision(),
        "machine": machine_info(),
        "model": str(args.model),
        "variants": {
            name: dict(zip(("per_channel", "signed", "reduce_range"), spec, strict=True))
            for name, spec in VARIANTS.items()
        },
        "speed": speed(full, clips, features, args.reps),
        "batching_thread_cpu_ms_per_utterance": batching(
            full["signed per channel (emostt)"], clips, features, max(args.reps // 3, 3)
        ),
        "error_vs_fp32": {
            "model_peer_clips": errors(full, list(clips["s2"]) + list(clips["s10"][:4]), features),
            "demo_heldout_120": errors(demo, held_out, demo_features),
        },
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    for cell, by in report["speed"].items():
        print(cell, "  ".join(f"{n}: {v['median']}" for n, v in by.items()))
    print("batching", report["batching_thread_cpu_ms_per_utterance"])
    for where, by in report["error_vs_fp32"].items():
        print(where, json.dumps(by))


if __name__ == "__main__":
    main()
