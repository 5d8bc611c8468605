#!/usr/bin/env python
"""Keyterm decoding cost: what the engine does after the encoder, per 5 s utterance, one core.

Times everything ``transcribe`` does after the encoder pass (the greedy reductions, and for a
request with keyterms the top-k of its text frames, the biased beam search, the alignment and
the matches) for one 5 s utterance at a time with 0, 10 and 100 keyterms, on both engines'
paths: ``torch`` (``SenseVoiceEngine.results_from_logits``: on a CPU, the numpy reductions below on
the torch tensor's memory; torch reductions are its GPU path) and ``numpy``
(the torch-free CPU engine's ``ctc_batch.reduce_logits`` and ``decode_batch``). The posteriors
are real: the demo model's CTC output on held-out espeak-ng phrases joined into 5 s utterances
(tools/demo_data.py). Their rows are widened to SenseVoiceSmall's 25,055 tokens (``--vocab``)
with logits far below the row's own, so the softmax and top-k run at the real model's width
while the decoding sees the demo model's peaks. The keyterms are the demo model's own words and
phrases first (the model puts weight on them, so the beam has work), then words it has never
seen.

    python tools/bench_keyterms_decode.py --out docs/bench/keyterms-decode.json

The process is pinned to one core with one torch thread (torch then runs in the calling
thread), and each run is timed in this thread's CPU time (what decoding costs the core, not
counting time the scheduler gave to other processes on a shared machine) and in wall time.
The paths and keyterm counts take turns on each utterance, so a change in a shared machine's
load falls on all of them alike. Graph compilation is cached per distinct keyterm set in the
engine; its cold cost is reported separately. tools/bench_keyterms.py runs this cost beside its
quality and streaming must-shows.

``--quality`` instead sweeps (token bonus, term cap) over the held-out speech clips, through
the same engine path: how many come out right with their own words (or their own phrase)
among ten keyterms, how many change with every other word and phrase of the demo as keyterms
(confusable: "on" for "off"), and how many change with 100 keyterms the model never heard:

    python tools/bench_keyterms_decode.py --quality --out docs/bench/keyterms-quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostt.inference.beam_search import BEAM, TOP_K
from emostt.inference.ctc_batch import decode_batch, reduce_logits
from emostt.inference.engine import TranscriptionRequest, TranscriptionResult
from emostt.inference.keyterms import TERM_CAP, TOKEN_BONUS, KeytermGraphs
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_data
from bench_engine import machine
from eval_demo_model import normalise

SECONDS = 5.0
# The post-encoder step of each engine: SenseVoiceEngine (torch), the torch-free engine (numpy).
PATHS = ("torch", "numpy")
GAP_S = 0.15
# Words the demo model has never heard (they fall apart into letters it rarely writes).
UNSEEN = (
    "anthropic", "kubernetes", "zebra", "pancake", "violin", "tornado", "quantum", "saxophone",
    "giraffe", "lantern", "marble", "oyster", "penguin", "rhubarb", "sapphire", "tulip", "umbrella",
    "vortex", "walnut", "yacht", "bamboo", "cactus", "dolphin", "eclipse", "falcon", "glacier",
)  # fmt: skip


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
    """``count`` distinct terms: the demo model's own phrases and words (it weighs them, so the
    beam has work), the last ten (half of ten) words it has never heard."""
    known = list(
        dict.fromkeys(
            [p for p, _ in demo_data.PHRASES] + [w for p, _ in demo_data.PHRASES for w in p.split()]
        )
    )
    terms = list(dict.fromkeys([*known[: max(count - 10, count // 2)], *UNSEEN, *known]))
    return tuple(terms[:count])


def widen(logp: np.ndarray, vocab: int, seed: int) -> torch.Tensor:
    """(T, V) log-probs as (1, T, vocab) logits; the added tokens sit 20-30 nats below each row's best."""
    rng = np.random.default_rng(seed)
    extra = logp.max(axis=1, keepdims=True) - rng.uniform(20.0, 30.0, (len(logp), vocab - logp.shape[1]))
    return torch.from_numpy(np.concatenate([logp, extra.astype(np.float32)], axis=1))[None]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def post_encoder(
    engine: SenseVoiceEngine, path: str
) -> Callable[[TranscriptionRequest, torch.Tensor, torch.Tensor], TranscriptionResult]:
    """One request's post-encoder step on ``path``: "torch" (``SenseVoiceEngine``: torch
    reductions) or "numpy" (the torch-free engine's reductions, ``ctc_batch``), then decoding."""
    if path == "torch":
        return lambda request, logits, lens: engine.results_from_logits([request], logits, lens)[0]
    vocab, sp, rich = engine.vocab, engine.tokenizer.sp, engine.vocab.rich_ids()

    def numpy_path(
        request: TranscriptionRequest, logits: torch.Tensor, lens: torch.Tensor
    ) -> TranscriptionResult:
        keyed = [0] if request.keyterms else []
        batch = reduce_logits(logits.numpy(), lens.numpy(), vocab.blank_id, rich, keyed)
        return decode_batch([request], batch, vocab, sp, engine.keyterm_graphs)[0]

    return numpy_path


def cost(engine: SenseVoiceEngine, args: argparse.Namespace) -> dict[str, Any]:
    """Post-encoder time per 5 s utterance with 0/10/100 keyterms, pinned to one core."""
    audio = utterances(args.utterances)
    inputs = []
    for i, samples in enumerate(audio):
        logp = engine.log_probs([TranscriptionRequest(samples)])[0]
        logits = widen(logp, max(args.vocab, logp.shape[1]), i)
        inputs.append((TranscriptionRequest(samples), logits, torch.tensor([logits.shape[1]])))
    # Every path and keyterm count runs on each utterance in turn, so a change in the machine's
    # load falls on all of them alike and their ratios hold.
    terms = {count: keyterm_list(count) for count in args.keyterms}
    graphs, compile_ms = {}, {}
    for count in args.keyterms:
        start = time.perf_counter()
        graphs[count] = engine.keyterm_graphs.compile(terms[count]) if terms[count] else None
        compile_ms[count] = (time.perf_counter() - start) * 1e3
    runs = [(path, count) for path in PATHS for count in args.keyterms]
    wall: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    cpu: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    matched = dict.fromkeys(runs, 0)
    decoders = {path: post_encoder(engine, path) for path in PATHS}
    with torch.inference_mode():
        for request, logits, lens in inputs:
            for path, count in runs:
                keyed, decode = replace(request, keyterms=terms[count]), decoders[path]
                decode(keyed, logits, lens)  # warm: the graph cache
                for _ in range(args.repeats):
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    result = decode(keyed, logits, lens)
                    cpu[(path, count)].append(time.thread_time() - start_cpu)
                    wall[(path, count)].append(time.perf_counter() - start)
                matched[(path, count)] += len(result.keyterms_matched or [])
    rows: list[dict[str, Any]] = []
    for path, count in runs:
        graph, run = graphs[count], (path, count)
        rows.append(
            {
                "path": path,
                "keyterms": count,
                "cpu_p50_ms": round(percentile(cpu[run], 50), 3),
                "cpu_p95_ms": round(percentile(cpu[run], 95), 3),
                "cpu_max_ms": round(percentile(cpu[run], 100), 3),
                "wall_p50_ms": round(percentile(wall[run], 50), 3),
                "wall_p95_ms": round(percentile(wall[run], 95), 3),
                "graph_states": graph.num_states if graph is not None else 0,
                "graph_compile_ms": round(compile_ms[count], 2),
                "matched_per_utterance": round(matched[run] / len(inputs), 2),
            }
        )
        print(rows[-1], flush=True)
    requests = [inputs[0][0]] * 16
    check = timeit.timeit(lambda: {i: r for i, r in enumerate(requests) if r.keyterms}, number=20000) / 20000
    return {
        "vocab": args.vocab,
        "utterance_s": SECONDS,
        "text_frames": sorted({int(lens[0]) - 4 for _, _, lens in inputs}),
        "utterances": args.utterances,
        "repeats": args.repeats,
        "rows": rows,
        "no_keyterm_check_us_per_batch_of_16": round(check * 1e6, 3),
    }


def words_of(text: str) -> list[str]:
    return text.split() if text.isascii() else [text]


def quality(engine: SenseVoiceEngine, args: argparse.Namespace) -> dict[str, Any]:
    """Per (token bonus, term cap): held-out speech clips decoded with keyterms that help, with
    the demo's other (confusable) words and phrases, and with words it never heard."""
    clips = [c for c in demo_data.generate("heldout") if c.text]
    with torch.inference_mode():
        passes = [engine.log_probs([TranscriptionRequest(c.audio)])[0] for c in clips]
    phrases = [p for p, _ in demo_data.PHRASES]
    words = sorted({w for p, lang in demo_data.PHRASES if lang == "en" for w in p.split()})
    unseen = UNSEEN[:10] + tuple(f"{a} {b}" for a in UNSEEN[:10] for b in UNSEEN[10:19])
    rows = []
    for bonus, cap in args.bonuses:
        engine.keyterm_graphs = KeytermGraphs(engine.tokenizer.sp, engine.vocab.blank_id, bonus, cap)
        counts = dict.fromkeys(
            ("greedy", "own_words", "own_phrase", "confusable_changed", "unseen_changed"), 0
        )
        counts["confusable_broke_correct"] = 0
        for i, (clip, logp) in enumerate(zip(clips, passes, strict=True)):
            rng = np.random.default_rng(i)
            own = words_of(clip.text)
            others = [w for w in words if w not in own]
            lists = {
                "own_words": tuple(own + list(rng.choice(others, 9, replace=False))),
                "own_phrase": (
                    clip.text,
                    *rng.choice([p for p in phrases if p != clip.text], 9, replace=False),
                ),
                "confusable": tuple(
                    t for t in phrases + words if t != clip.text and not set(t.split()) & set(own)
                ),
                "unseen": unseen,
            }
            logits, lens = torch.from_numpy(logp)[None], torch.tensor([len(logp)])
            requests = [TranscriptionRequest(clip.audio)]
            requests += [
                TranscriptionRequest(clip.audio, keyterms=tuple(map(str, t))) for t in lists.values()
            ]
            plain, own_words, own_phrase, confusable, other = engine.results_from_logits(
                requests, logits.expand(len(requests), -1, -1), lens.expand(len(requests))
            )
            right = normalise(plain.text) == normalise(clip.text)
            counts["greedy"] += right
            counts["own_words"] += normalise(own_words.text) == normalise(clip.text)
            counts["own_phrase"] += normalise(own_phrase.text) == normalise(clip.text)
            counts["confusable_changed"] += confusable.text != plain.text
            counts["confusable_broke_correct"] += right and confusable.text != plain.text
            counts["unseen_changed"] += other.text != plain.text
        rows.append({"token_bonus": bonus, "term_cap": cap, "speech_clips": len(clips), **counts})
        print(rows[-1], flush=True)
    return {"clips": "heldout speech", "unseen_keyterms": len(unseen), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--vocab", type=int, default=25055)
    parser.add_argument("--keyterms", type=int, nargs="+", default=[0, 10, 100])
    parser.add_argument("--quality", action="store_true", help="the bonus sweep on held-out clips instead")
    parser.add_argument(
        "--bonuses", type=lambda v: tuple(map(float, v.split(":"))), nargs="+",
        default=[(1.0, 3.0), (1.5, 4.5), (2.0, 6.0), (2.5, 7.5)], help="TOKEN_BONUS:TERM_CAP pairs",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    engine = SenseVoiceEngine.load(args.model, EngineOptions(device="cpu", precision="fp32", threads=1))
    torch.set_num_threads(1)
    body = quality(engine, args) if args.quality else cost(engine, args)
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "cores": 1,
        "torch_threads": torch.get_num_threads(),
        "model": args.model,
        "beam": BEAM,
        "top_k": TOP_K,
        "token_bonus": TOKEN_BONUS,
        "term_cap": TERM_CAP,
        **body,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
