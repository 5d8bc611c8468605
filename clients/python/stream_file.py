#!/usr/bin/env python
"""Kept for old command lines: ``emostt-client file`` with this script's original arguments.

    python clients/python/stream_file.py docs/samples/turn_left.wav [--url ws://localhost:8000] \
        [--device robot-1] [--token TOKEN] [--speed 1.0] [--json]

Works from a checkout without installing the SDK (it needs numpy and websockets, which emostt
installs); new code should use ``emostt-client file URL PATH`` (see clients/python/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from emostt_client.cli import main as cli_main
except ImportError:  # a checkout without `pip install clients/python`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from emostt_client.cli import main as cli_main


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
    args = parser.parse_args()
    argv = ["file", args.url, args.file, "--device", args.device, "--speed", str(args.speed)]
    if args.token:
        argv += ["--token", args.token]
    if args.json:
        argv.append("--json")
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
