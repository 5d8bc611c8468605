#!/usr/bin/env python
"""Read a device's results from the server's Redis Streams sink and print them.

With EMOSTT_RESULTS_REDIS_URL set, the server appends every ``final`` and ``emotion_changed``
event to the stream ``emostt:results:<device_id>``, the event's JSON in the field ``event``.

    python examples/redis_consumer.py redis://localhost:6379/0 robot-1            # new events (XREAD)
    python examples/redis_consumer.py redis://localhost:6379/0 robot-1 --from-start
    python examples/redis_consumer.py redis://localhost:6379/0 robot-1 --group agents --consumer a1

With ``--group``, the consumers of one group share the events (each is delivered to one of them)
and each is acknowledged (XACK) once printed; a consumer that restarts first re-reads what it had
been delivered but not acknowledged. Needs ``pip install 'emostt-client[redis]'``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from emostt_client import Event, parse_message
from emostt_client.cli import as_json, describe


def handle(fields: dict[bytes, bytes], raw_json: bool) -> Event:
    event = parse_message(fields.get(b"event", b"{}"))
    print(as_json(event) if raw_json else describe(event), flush=True)
    return event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("redis_url", help="e.g. redis://localhost:6379/0")
    parser.add_argument("device_id")
    parser.add_argument("--from-start", action="store_true", help="read the stream from its first entry")
    parser.add_argument("--group", help="read as this consumer group (created if missing)")
    parser.add_argument("--consumer", default="consumer-1", help="this consumer's name in --group")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events (0: never)")
    parser.add_argument("--block-ms", type=int, default=5000, help="how long one read waits for entries")
    parser.add_argument("--json", action="store_true", help="print each event as JSON")
    args = parser.parse_args(argv)
    try:
        redis: Any = importlib.import_module("redis")
    except ImportError:
        print("needs the redis package: pip install 'emostt-client[redis]'", file=sys.stderr)
        return 2

    client = redis.Redis.from_url(args.redis_url)
    key = f"emostt:results:{args.device_id}"
    start = "0" if args.from_start else "$"
    if args.group:
        try:
            client.xgroup_create(key, args.group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # "0" first: entries delivered to this consumer before a restart and never acknowledged.
        cursor = "0"
    elif start == "$" and client.exists(key):
        cursor = client.xinfo_stream(key)["last-generated-id"]  # "$" once: then entry by entry
    else:
        cursor = "0"
    seen = 0
    try:
        while not args.count or seen < args.count:
            if args.group:
                batch = client.xreadgroup(
                    args.group, args.consumer, {key: cursor}, count=100, block=args.block_ms
                )
            else:
                batch = client.xread({key: cursor}, count=100, block=args.block_ms)
            entries = batch[0][1] if batch else []
            if args.group and cursor == "0" and not entries:
                cursor = ">"  # the backlog is done: from now on, new entries
                continue
            for entry_id, fields in entries:
                if fields:  # a pending entry trimmed from the stream since has none
                    handle(fields, args.json)
                if args.group:
                    client.xack(key, args.group, entry_id)
                else:
                    cursor = entry_id
                seen += 1
                if args.count and seen >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
