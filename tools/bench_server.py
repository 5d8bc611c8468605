#!/usr/bin/env python
"""BENCH ONLY: the ``emostt serve`` server with the instant engine (a measurement harness that
answers every utterance with a fixed result in ~0 time) instead of a model.

This script is the only way to run a server with ``emostt.inference.instant.InstantEngine``;
``emostt serve`` cannot select it. It runs the same server code as ``emostt serve``
(``emostt.cli.run_server``: app, batcher, VAD, transports, drain), settings from
``EMOSTT_*`` as usual, and binds a loopback address only. ``tools/bench_stream.py --model
instant`` starts it to measure what the front end costs per stream:

    python tools/bench_server.py --port 8765            # then stream to ws://127.0.0.1:8765/ws/stt/dev

``--device`` only shapes the worker plan as for a model on that device (cuda: one model
worker and partials between finals); nothing runs on a GPU. ``--batch-ms`` sleeps that long
per batch, a stand-in for a fixed model time.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from emostt.config import Settings
from emostt.inference.instant import INSTANT_MODEL_NAME, InstantEngine
from emostt.server.run import run_server


def loopback(host: str) -> str:
    """argparse type: a loopback address (this server must never face real clients)."""
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"the bench server binds loopback addresses only, got {host!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", type=loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="worker plan only")
    parser.add_argument("--batch-ms", type=float, default=0.0, help="sleep per batch (default 0)")
    args = parser.parse_args(argv)
    # The model fields are not used: the engine is passed in. Everything else as `emostt serve`.
    settings = Settings(host=args.host, port=args.port, model="instant", device=args.device)
    engine = InstantEngine(device=args.device, batch_delay_s=args.batch_ms / 1000)
    sys.stderr.write(f"emostt bench server: {INSTANT_MODEL_NAME}; results are NOT transcriptions\n")
    run_server(settings, engine=engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
