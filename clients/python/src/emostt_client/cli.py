"""emostt-client: stream a file or the microphone to emostt and print the events.

    emostt-client file ws://localhost:8000 docs/samples/turn_left.wav [--device robot-1]
        [--token TOKEN] [--speed 1.0 | --fast] [--json] [--turns semantic [--eagerness auto]]
        [--keyterm TERM ...]
    emostt-client mic ws://localhost:8000 [--device robot-1] [--token TOKEN] [--json] [--turns ...]
        [--keyterm TERM ...]

With ``--turns semantic`` the server's turn model ends each turn: a final is followed by
``[turn end 0.93]`` (the model's confidence), an eager end of turn prints ``[eager end of turn]``.
``--keyterm`` (repeatable) biases decoding towards a word or phrase; finals then show
``keyterms=[...]``, the keyterms they hold.

The token may also come from $EMOSTT_TOKEN (kept out of the process list). Exit status: 0 when
the session closed normally (1000), 1 when the server or the network ended it otherwise,
2 for a usage error or a missing optional dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from typing import Any

from emostt_client.audio import SUPPORTED_RATES, read_audio
from emostt_client.client import Stream, connect
from emostt_client.errors import EmosttClientError, MissingDependencyError
from emostt_client.events import (
    EagerEndOfTurn,
    EmotionChanged,
    Error,
    Event,
    Final,
    Partial,
    Reconnected,
    TurnResumed,
    Unknown,
)
from emostt_client.reconnect import ReconnectPolicy
from emostt_client.turns import EAGERNESS, TURN_TYPES, TurnDetection

MIC_RATE = 16000
MIC_BLOCK_MS = 100


def describe(event: Event) -> str:
    """One line per event, as the original stream_file.py printed them."""
    if isinstance(event, Final):
        mood = f" mood={event.mood.label}" if event.mood is not None else ""
        if event.keyterms_matched is not None:
            mood += f" keyterms={list(event.keyterms_matched)}"
        turn = event.end_of_turn_confidence  # semantic turns: the final ends the turn
        return (
            f"[final {event.utterance_id}] {event.text!r}  emotion={event.emotion.label}{mood}"
            f" language={event.language.label} event={event.event.label}"
            f" confidence={event.confidence:.2f} gated={event.gated} latency={event.timings.latency_ms} ms"
            + (f"\n[turn end {turn:.2f}]" if turn is not None else "")
        )
    if isinstance(event, Partial):
        return f"[partial {event.utterance_id}] {event.text!r}"
    if isinstance(event, EagerEndOfTurn):
        return f"[eager end of turn {event.utterance_id} {event.confidence:.2f}] {event.text!r}"
    if isinstance(event, TurnResumed):
        return f"[turn resumed {event.utterance_id}]"
    if isinstance(event, Error):
        return f"[error] {event.code}: {event.message}"
    if isinstance(event, EmotionChanged):
        return f"[emotion_changed {event.utterance_id}] {event.from_label} -> {event.to_label}"
    if isinstance(event, Reconnected):
        lost = f"; lost {', '.join(event.lost_utterance_ids)}" if event.lost_utterance_ids else ""
        return f"[reconnected after close {event.close_code}, attempt {event.attempt}{lost}]"
    if isinstance(event, Unknown):
        return f"[{event.type or 'unknown'}]"
    return f"[{event.raw.get('type', type(event).__name__.lower())}]"


def as_json(event: Event) -> str:
    if isinstance(event, Reconnected):
        body: Any = {
            "type": "reconnected",
            "attempt": event.attempt,
            "close_code": event.close_code,
            "lost_utterance_ids": list(event.lost_utterance_ids),
        }
    else:
        body = event.raw
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


async def _print_events(stream: Stream, raw_json: bool) -> None:
    async for event in stream:
        print(as_json(event) if raw_json else describe(event), flush=True)


def _policy(args: argparse.Namespace) -> ReconnectPolicy:
    return ReconnectPolicy(max_attempts=0) if args.no_reconnect else ReconnectPolicy()


def _turns(args: argparse.Namespace) -> TurnDetection | None:
    if args.turns is None:
        return None
    return TurnDetection(args.turns, eagerness=args.eagerness if args.turns == "semantic" else None)


async def _session(args: argparse.Namespace, stream: Stream, send: Any) -> int:
    """Print events while ``send()`` streams, then close; the exit status."""
    printer = asyncio.create_task(_print_events(stream, args.json))
    try:
        await send()
        await stream.close()
    except EmosttClientError:
        await printer  # the stream has ended: print what came before the failure, then raise it
        raise
    except BaseException:
        printer.cancel()
        raise
    await printer
    return 0 if stream.close_code == 1000 else 1


async def run_file(args: argparse.Namespace) -> int:
    audio, rate = await asyncio.to_thread(read_audio, args.path)  # fail before connecting
    session_rate = rate if rate in SUPPORTED_RATES else 16000  # others are resampled
    async with connect(
        args.url,
        args.device,
        token=args.token,
        sample_rate=session_rate,
        reconnect=_policy(args),
        turn_detection=_turns(args),
        keyterms=args.keyterms,
    ) as stream:

        async def send() -> None:
            await stream.send_audio(audio, rate, realtime=not args.fast, speed=args.speed)

        return await _session(args, stream, send)


async def run_mic(args: argparse.Namespace) -> int:
    try:
        sounddevice: Any = importlib.import_module("sounddevice")
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library is missing
        raise MissingDependencyError(
            f"the microphone needs sounddevice ({exc}); install it with: pip install 'emostt-client[mic]'"
        ) from None
    loop = asyncio.get_running_loop()
    blocks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=50)  # 5 s; the oldest is dropped beyond
    stop = asyncio.Event()

    def put(block: bytes) -> None:
        if blocks.full():
            blocks.get_nowait()
        blocks.put_nowait(block)

    def on_audio(indata: Any, frames: int, time: Any, status: Any) -> None:  # PortAudio's thread
        loop.call_soon_threadsafe(put, bytes(indata))

    def stop_recording() -> None:  # the first Ctrl-C: flush and close; a second one: exit now
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_recording)
    if args.seconds:
        loop.call_later(args.seconds, stop.set)
    async with connect(
        args.url,
        args.device,
        token=args.token,
        sample_rate=MIC_RATE,
        reconnect=_policy(args),
        turn_detection=_turns(args),
        keyterms=args.keyterms,
    ) as stream:

        async def send() -> None:
            with sounddevice.RawInputStream(
                samplerate=MIC_RATE,
                channels=1,
                dtype="int16",
                blocksize=MIC_RATE * MIC_BLOCK_MS // 1000,
                callback=on_audio,
            ):
                print("listening (Ctrl-C to stop)", file=sys.stderr, flush=True)
                stopping = asyncio.ensure_future(stop.wait())
                try:
                    while not stop.is_set():
                        block = asyncio.ensure_future(blocks.get())
                        await asyncio.wait({block, stopping}, return_when=asyncio.FIRST_COMPLETED)
                        if block.done():
                            await stream.send(block.result())
                        else:
                            block.cancel()  # the queue keeps its items
                finally:
                    stopping.cancel()
            while not blocks.empty():  # what was recorded before the stop
                await stream.send(blocks.get_nowait())

        return await _session(args, stream, send)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostt-client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("url", help="the server, e.g. ws://localhost:8000 (http(s):// works too)")
        sub.add_argument("--device", default="emostt-client", help="device id (default: emostt-client)")
        sub.add_argument("--token", default=os.environ.get("EMOSTT_TOKEN"), help="default: $EMOSTT_TOKEN")
        sub.add_argument("--json", action="store_true", help="print each event as JSON")
        sub.add_argument("--no-reconnect", action="store_true", help="fail at once when the connection drops")
        sub.add_argument("--turns", choices=TURN_TYPES, help="turn detection (default: the server's)")
        sub.add_argument("--eagerness", choices=EAGERNESS, help="semantic turns: how soon a turn ends")
        sub.add_argument(
            "--keyterm",
            action="append",
            dest="keyterms",
            metavar="TERM",
            help="a word or phrase to bias decoding towards (repeatable, up to 100)",
        )

    file = commands.add_parser("file", help="stream an audio file (PCM WAV; other formats need [files])")
    common(file)
    file.add_argument("path", help="the audio file")
    pace = file.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="x real time (default 1.0)")
    pace.add_argument("--fast", action="store_true", help="as fast as the server's rate limit safely allows")
    mic = commands.add_parser("mic", help="stream the default microphone (needs [mic])")
    common(mic)
    mic.add_argument("--seconds", type=float, default=None, help="stop after this long")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "file" and args.speed <= 0:
        print("emostt-client: --speed must be > 0", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_file(args) if args.command == "file" else run_mic(args))
    except MissingDependencyError as exc:
        print(f"emostt-client: {exc}", file=sys.stderr)
        return 2
    except (EmosttClientError, OSError, ValueError) as exc:
        print(f"emostt-client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
