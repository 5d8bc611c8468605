#!/usr/bin/env python
"""Stream an audio file to emostt in real time, as a device would, and print the events.

    python clients/python/stream_file.py docs/samples/turn_left.wav [--url ws://localhost:8000] \
        [--device robot-1] [--token TOKEN] [--speed 1.0] [--json]

Needs numpy, soundfile, websockets and orjson (all installed with emostt).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np
import orjson
import soundfile as sf
from websockets.asyncio.client import connect

CHUNK_MS = 100


def pcm_chunks(path: Path) -> tuple[int, list[bytes]]:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    # A second of trailing silence lets the endpointer close the last utterance naturally.
    mono = np.concatenate((mono, np.zeros(rate, dtype=np.float32)))
    pcm = (np.clip(mono, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
    step = rate * CHUNK_MS // 1000 * 2
    return rate, [pcm[i : i + step] for i in range(0, len(pcm), step)]


def describe(event: dict) -> str:
    kind = event["type"]
    if kind == "final":
        return (
            f"[final {event['utterance_id']}] {event['text']!r}  emotion={event['emotion']['label']}"
            f" language={event['language']['label']} event={event['event']['label']}"
            f" confidence={event['confidence']:.2f} gated={event['gated']} latency={event['latency_ms']} ms"
        )
    if kind == "partial":
        return f"[partial {event['utterance_id']}] {event['text']!r}"
    if kind == "error":
        return f"[error] {event['code']}: {event['message']}"
    return f"[{kind}]"


async def run(args: argparse.Namespace) -> int:
    rate, chunks = pcm_chunks(Path(args.file))
    url = f"{args.url.rstrip('/')}/ws/stt/{args.device}?sample_rate={rate}"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    async with connect(url, additional_headers=headers) as ws:

        async def send() -> None:
            for chunk in chunks:
                await ws.send(chunk)
                await asyncio.sleep(CHUNK_MS / 1000 / args.speed)
            await ws.send('{"type": "close"}')

        sender = asyncio.create_task(send())
        async for raw in ws:
            event = orjson.loads(raw)
            print(raw if args.json else describe(event), flush=True)
        await sender
        return 0 if ws.close_code == 1000 else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file")
    parser.add_argument("--url", default="ws://localhost:8000")
    parser.add_argument("--device", default="demo-device")
    parser.add_argument("--token", default=None)
    parser.add_argument("--speed", type=float, default=1.0, help="1.0 = real time")
    parser.add_argument("--json", action="store_true")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
