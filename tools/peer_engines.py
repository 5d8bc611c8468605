#!/usr/bin/env python
"""One engine of tools/bench_peers.py in its own process, driven over stdin/stdout.

    python tools/peer_engines.py ENGINE --clips CLIPS.npz --threads 2 --dir DIR

Each engine decodes the clips the parent saved (float32 16 kHz, ``s2`` and ``s10``: 16 clips of
2 s and of 10 s), so every engine sees the same samples. Engines:

- ``emostt``: the model side of ``emostt serve`` in-process: ``server.engines.start_batcher``
  with the server's settings (``--dir``: an exported dir, so the torch-free engine serves), its
  worker plan, its batch-size rule and its warm-up; a call of B clips submits B finals at once,
  as B sessions ending an utterance together would, and waits for all of them;
- ``emostt-engine``: the same engine called like the peers: one ``transcribe`` of the B clips,
  ``--threads`` ONNX Runtime threads;
- ``sherpa-onnx``: ``OfflineRecognizer.from_sense_voice`` (``--dir``: sherpa's export,
  tools/peer_export.py), one ``decode_streams`` of B streams, ``--threads`` threads;
- ``funasr-onnx``: ``SenseVoiceSmall(dir, batch_size=16, quantize=True)``, one call of B clips,
  ``--threads`` intra-op threads; ``funasr-onnx-signed``: the same on a dir holding emostt's graph.

Every engine: language auto, ITN on (emostt's default), no dither. The first line out is
``{"ready": ..., "load_s": ...}``; then one JSON line per command in: ``{"op": "run",
"seconds": 2, "batch": 4}`` answers ``{"wall_s", "cpu_s"}`` (the call, and this process's CPU
seconds during it); ``{"op": "texts", "seconds": 2}`` answers ``{"texts": [...]}``, each clip
decoded alone, rich tags removed; ``{"op": "quit"}`` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emostt.inference.rich_tokens import QUERY_FRAMES, strip_rich_tags

ENGINES = ("emostt", "emostt-engine", "sherpa-onnx", "funasr-onnx", "funasr-onnx-signed")

Decode = Callable[[list[np.ndarray]], list[str]]


def emostt_serving(model_dir: Path) -> tuple[Decode, Callable[[], None]]:
    """The server's model side on ``model_dir``, on an event loop of its own thread."""
    import threading

    from emostt.config import Settings
    from emostt.inference.engine import TranscriptionRequest
    from emostt.policy.outcome import Served
    from emostt.server.engines import start_batcher

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="bench-loop", daemon=True).start()
    settings = Settings(model=str(model_dir), log_json=False)
    batcher = asyncio.run_coroutine_threadsafe(start_batcher(settings), loop).result()

    async def finals(clips: list[np.ndarray]) -> list[Any]:
        return await asyncio.gather(
            *(
                batcher.submit(TranscriptionRequest(clip), is_final=True, session_id=f"s{i}")
                for i, clip in enumerate(clips)
            )
        )

    def decode(clips: list[np.ndarray]) -> list[str]:
        outcomes = asyncio.run_coroutine_threadsafe(finals(clips), loop).result()
        failed = [o for o in outcomes if not isinstance(o, Served)]
        if failed:
            raise RuntimeError(f"emostt failed {len(failed)} of {len(clips)} finals: {failed[0]}")
        return [o.result.text for o in outcomes if isinstance(o, Served)]

    return decode, batcher.stop


def emostt_engine(model_dir: Path, threads: int) -> Decode:
    from emostt.inference.engine import TranscriptionRequest
    from emostt.inference.options import EngineOptions
    from emostt.inference.serving import load_engine

    engine = load_engine(str(model_dir), EngineOptions(device="cpu", threads=threads))

    def decode(clips: list[np.ndarray]) -> list[str]:
        return [r.text for r in engine.transcribe([TranscriptionRequest(c) for c in clips])]

    return decode


def sherpa(model_dir: Path, threads: int) -> Decode:
    import sherpa_onnx

    from peer_export import SHERPA_MODEL, SHERPA_TOKENS

    recognizer = sherpa_onnx.OfflineRecognizer.from_sense_voice(
        model=str(model_dir / SHERPA_MODEL),
        tokens=str(model_dir / SHERPA_TOKENS),
        num_threads=threads,
        use_itn=True,
    )

    def decode(clips: list[np.ndarray]) -> list[str]:
        streams = []
        for clip in clips:
            stream = recognizer.create_stream()
            stream.accept_waveform(16000, clip)
            streams.append(stream)
        recognizer.decode_streams(streams)
        return [s.result.text for s in streams]

    return decode


def funasr_onnx(model_dir: Path, threads: int) -> tuple[Decode, Decode]:
    """Its own call (timed), and the text of the text frames (its ``__call__`` decodes the four
    query frames too, which a random-weight model fills with arbitrary tokens)."""
    from funasr_onnx import SenseVoiceSmall

    model = SenseVoiceSmall(str(model_dir), batch_size=16, quantize=True, intra_op_num_threads=threads)
    model.frontend.opts.frame_opts.dither = 0.0
    model.load_data = lambda wav_content, fs=None: list(wav_content)  # arrays, not paths

    def decode(clips: list[np.ndarray]) -> list[str]:
        return list(model(clips, language="auto", textnorm="withitn"))

    def text_frames(clips: list[np.ndarray]) -> list[str]:
        feats, lengths = model.extract_feat(clips)
        language = np.zeros(len(clips), dtype=np.int32)
        textnorm = np.full(len(clips), model.textnorm_dict["withitn"], dtype=np.int32)
        logits, out_lens = model.infer(feats, lengths, language, textnorm)
        texts = []
        for row, n in zip(logits, out_lens, strict=True):
            ids = row[QUERY_FRAMES : int(n)].argmax(axis=-1)
            keep = np.concatenate(([True], np.diff(ids) != 0)) & (ids != model.blank_id)
            texts.append(model.tokenizer.decode(ids[keep].tolist()))
        return texts

    return decode, text_frames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    # The protocol has stdout to itself: whatever the engines print goes to stderr.
    global PROTOCOL
    PROTOCOL = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    clips = dict(np.load(args.clips))
    began = time.perf_counter()
    stop: Callable[[], None] = lambda: None  # noqa: E731
    if args.engine == "emostt":
        decode, stop = emostt_serving(args.dir)
        texts = decode
    elif args.engine == "emostt-engine":
        decode = texts = emostt_engine(args.dir, args.threads)
    elif args.engine == "sherpa-onnx":
        decode = texts = sherpa(args.dir, args.threads)
    else:
        decode, texts = funasr_onnx(args.dir, args.threads)
    decode([clips["s2"][0]])  # one-off set-up, as a server's warm-up
    decode([clips["s10"][0]])
    answer({"ready": True, "load_s": round(time.perf_counter() - began, 2)})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        batch = [np.ascontiguousarray(c) for c in clips[f"s{command['seconds']}"]]
        if command["op"] == "texts":
            answer({"texts": [strip_rich_tags(t) for clip in batch for t in texts([clip])]})
            continue
        cpu, wall = time.process_time(), time.perf_counter()
        decode(batch[: command["batch"]])
        answer({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu})
    stop()


PROTOCOL = sys.stdout


def answer(message: dict[str, Any]) -> None:
    PROTOCOL.write(json.dumps(message) + "\n")
    PROTOCOL.flush()


if __name__ == "__main__":
    main()
