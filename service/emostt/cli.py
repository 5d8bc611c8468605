"""Command line: ``emostt transcribe``, ``emostt model make-random``, ``emostt serve``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from emostt.errors import EmosttError

if TYPE_CHECKING:
    from emostt.inference.sensevoice import SenseVoiceEngine

MAX_FILE_SECONDS = 30.0


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    from emostt.config import EngineSettings

    defaults = EngineSettings()
    parser.add_argument("--model", default=defaults.model, help="hub id, model dir, or bundled name")
    parser.add_argument("--hub", default=defaults.hub, choices=["ms", "hf"])
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda[:N] or auto")
    parser.add_argument("--precision", default=defaults.precision, help="auto, fp32, int8, fp16, bf16")
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--backend", default=defaults.backend, choices=["torch", "onnx"])
    parser.add_argument(
        "--fallback-model",
        default=defaults.fallback_model,
        help="model to load when --model cannot be loaded (e.g. 'demo' when offline); off by default",
    )


def _engine_from_args(args: argparse.Namespace) -> SenseVoiceEngine:
    from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

    options = EngineOptions(
        device=args.device, precision=args.precision, hub=args.hub, threads=args.threads, backend=args.backend
    )
    return SenseVoiceEngine.load_with_fallback(args.model, args.fallback_model, options)


def _format_result(name: str, result: dict[str, Any]) -> str:
    lang, emo, event = result["language"], result["emotion"], result["event"]
    return (
        f"{name}: {result['text']}\n"
        f"    language {lang['label']} ({lang['scores'][lang['label']]:.2f})"
        f" · emotion {emo['label']} ({emo['scores'][emo['label']]:.2f})"
        f" · event {event['label']} ({event['scores'][event['label']]:.2f})"
        f" · confidence {result['confidence']:.2f} · {result['duration_ms'] / 1000:.2f} s"
    )


def cmd_transcribe(args: argparse.Namespace) -> int:
    from emostt.audio import SAMPLE_RATE, read_audio_file
    from emostt.inference.engine import TranscriptionRequest

    requests = []
    for name in args.files:
        audio = read_audio_file(Path(name))
        if len(audio) > MAX_FILE_SECONDS * SAMPLE_RATE:
            raise EmosttError(
                f"{name} is {len(audio) / SAMPLE_RATE:.0f} s long; transcribe takes utterances up to "
                f"{MAX_FILE_SECONDS:.0f} s (stream longer audio to the service, which segments it)"
            )
        requests.append(
            TranscriptionRequest(
                audio,
                language=args.language,
                use_itn=not args.no_itn,
                word_timestamps=args.words,
                known_emotion_only=args.known_emotion,
            )
        )
    engine = _engine_from_args(args)
    for name, result in zip(args.files, engine.transcribe(requests), strict=True):
        payload = {"file": name, **result.to_dict()}
        if args.json:
            sys.stdout.write(orjson.dumps(payload).decode() + "\n")
        else:
            sys.stdout.write(_format_result(name, payload) + "\n")
    return 0


def cmd_make_random(args: argparse.Namespace) -> int:
    from emostt.inference.modeldir import SIZES, write_model_dir

    out = write_model_dir(Path(args.out), SIZES[args.size], seed=args.seed)
    sys.stdout.write(f"wrote {args.size} random-weight SenseVoice model dir to {out}\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from emostt.app import DrainingServer, create_app
    from emostt.config import Settings
    from emostt.observability.logging import configure

    overrides = {
        key: value
        for key, value in {
            "model": args.model,
            "hub": args.hub,
            "device": args.device,
            "precision": args.precision,
            "threads": args.threads,
            "backend": args.backend,
            "model_workers": args.model_workers,
            "fallback_model": args.fallback_model,
            "host": args.host,
            "port": args.port,
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    configure(json_logs=settings.log_json)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_message_bytes,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 10,
    )
    DrainingServer(config).run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emostt", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("transcribe", help="transcribe audio files with text, emotion, language and event")
    tr.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG...; any rate; stereo is downmixed)")
    _add_engine_args(tr)
    tr.add_argument("--language", default="auto", help="auto, zh, en, yue, ja, ko")
    tr.add_argument("--no-itn", action="store_true", help="no inverse text normalization / punctuation")
    tr.add_argument("--words", action="store_true", help="word timestamps with per-word confidence")
    tr.add_argument("--known-emotion", action="store_true", help="never answer 'unknown' emotion")
    tr.add_argument("--json", action="store_true", help="one JSON object per file")
    tr.set_defaults(func=cmd_transcribe)

    serve = sub.add_parser(
        "serve", help="run the streaming WebSocket service (settings also from EMOSTT_* env)"
    )
    for flag in ("--model", "--hub", "--device", "--precision", "--fallback-model", "--host"):
        serve.add_argument(flag, default=None)
    serve.add_argument("--backend", default=None, choices=["torch", "onnx"], help="encoder runtime")
    serve.add_argument("--threads", type=int, default=None, help="torch threads per model worker")
    serve.add_argument(
        "--model-workers", type=int, default=None, help="model threads (default: one per core on CPU)"
    )
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

    model = sub.add_parser("model", help="model dir utilities")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    mr = model_sub.add_parser("make-random", help="write a random-weight SenseVoice dir funasr can load")
    mr.add_argument("out")
    mr.add_argument("--size", choices=["tiny", "full"], default="tiny")
    mr.add_argument("--seed", type=int, default=0)
    mr.set_defaults(func=cmd_make_random)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        return int(args.func(args))
    except (EmosttError, ValueError) as exc:
        sys.stderr.write(f"emostt: error: {exc}\n")
        return 2
