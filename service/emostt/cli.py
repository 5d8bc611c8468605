"""Command line: ``emostt transcribe``, ``emostt model make-random``, ``emostt model export``,
``emostt serve``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import orjson
from pydantic import ValidationError

from emostt.errors import EmosttError, validation_problem_list

if TYPE_CHECKING:
    from emostt.config import EngineSettings

# Settings a flag can set, by field name: an invalid value is reported by its flag. A flag left
# out is None, so the setting comes from EMOSTT_* or its default.
ENGINE_FLAGS = {
    "model": "--model",
    "hub": "--hub",
    "device": "--device",
    "precision": "--precision",
    "threads": "--threads",
    "backend": "--backend",
    "fallback_model": "--fallback-model",
}
SERVE_FLAGS = {
    **ENGINE_FLAGS,
    "model_workers": "--model-workers",
    "frontend_processes": "--frontends",
    "host": "--host",
    "port": "--port",
}

SettingsT = TypeVar("SettingsT", bound="EngineSettings")


class InvalidSettingsError(Exception):
    """Settings refused at start-up; ``report`` writes one line per problem."""

    def __init__(self, error: ValidationError, flags: dict[str, str]) -> None:
        super().__init__(str(error))
        self.error = error
        self.flags = flags

    def report(self) -> None:
        """``emostt: invalid setting <field> (<flag or EMOSTT_ variable>): <problem>``; never the value."""
        for name, problem in validation_problem_list(self.error, "settings"):
            field = name.partition(".")[0]
            source = self.flags.get(field) or f"EMOSTT_{field.upper()}"
            sys.stderr.write(f"emostt: invalid setting {name} ({source}): {problem}\n")


def _settings_from_args(cls: type[SettingsT], args: argparse.Namespace, flags: dict[str, str]) -> SettingsT:
    """``cls`` from the flags given (the rest from EMOSTT_* or defaults), validated."""
    given = {field: getattr(args, field) for field in flags if getattr(args, field) is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        raise InvalidSettingsError(exc, {field: flags[field] for field in given}) from None


def _device(value: str) -> str:
    """argparse type for --device: the same check the settings make."""
    from emostt.config.checks import DEVICE_CHOICES, DEVICE_PATTERN

    if not DEVICE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"must be {DEVICE_CHOICES}, got {value!r}")
    return value


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    """The model flags shared by transcribe and serve; closed sets are argparse choices."""
    from emostt.vocabulary import Backend, Hub, Precision

    parser.add_argument("--model", help="hub id, model dir, or bundled name (default iic/SenseVoiceSmall)")
    parser.add_argument("--hub", choices=get_args(Hub), help="model hub (default ms)")
    parser.add_argument("--device", type=_device, help="cpu, cuda[:N] or auto (default)")
    parser.add_argument("--precision", choices=get_args(Precision), help="default auto")
    parser.add_argument(
        "--backend",
        choices=get_args(Backend),
        help="encoder runtime (default auto: onnx int8 on CPU, torch on CUDA)",
    )
    parser.add_argument("--threads", type=int, help="torch threads per model worker")
    parser.add_argument(
        "--fallback-model",
        help="model to load when --model cannot be loaded (e.g. 'demo' when offline); off by default",
    )


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
    from emostt.config import EngineSettings
    from emostt.server.offline import transcribe_files

    settings = _settings_from_args(EngineSettings, args, ENGINE_FLAGS)
    results = transcribe_files(
        settings,
        [Path(name) for name in args.files],
        language=args.language,
        use_itn=not args.no_itn,
        word_timestamps=args.words,
        known_emotion_only=args.known_emotion,
    )
    for name, result in zip(args.files, results, strict=True):
        payload = {"file": name, **result}
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


def cmd_export(args: argparse.Namespace) -> int:
    from emostt.config import EngineSettings
    from emostt.inference.model_export import export_model
    from emostt.server.engines import engine_options

    settings = _settings_from_args(EngineSettings, args, {"model": "MODEL", "hub": "--hub"})
    out = Path(args.out)
    model = export_model(settings.model, out, engine_options(settings), name=args.name)
    size_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6
    sys.stdout.write(
        f"exported {model.name!r} (revision {model.revision[:12]}) to {out}: {size_mb:.1f} MB; "
        f"serve it with `emostt serve --model {out}` (CPU, no torch)\n"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from emostt.config import Settings
    from emostt.server.run import run_server

    run_server(_settings_from_args(Settings, args, SERVE_FLAGS))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from emostt.vocabulary import Hub

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
    _add_engine_args(serve)
    serve.add_argument("--host", default=None)
    serve.add_argument(
        "--model-workers", type=int, default=None, help="model threads (default: one per core on CPU)"
    )
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument(
        "--frontends",
        dest="frontend_processes",
        default=None,
        help="front-end processes serving the connections, or 'auto' (default: 1 on CPU, several on "
        "GPU servers with the cores for them)",
    )
    serve.set_defaults(func=cmd_serve)

    model = sub.add_parser("model", help="model dir utilities")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    mr = model_sub.add_parser("make-random", help="write a random-weight SenseVoice dir funasr can load")
    mr.add_argument("out")
    mr.add_argument("--size", choices=["tiny", "full"], default="tiny")
    mr.add_argument("--seed", type=int, default=0)
    mr.set_defaults(func=cmd_make_random)
    ex = model_sub.add_parser(
        "export",
        help="write a self-contained ONNX model dir (int8 graph, tokenizer, CMVN, frontend settings, "
        "identity) that `emostt serve` runs on the CPU without torch",
    )
    ex.add_argument(
        "model", nargs="?", help="model dir, bundled name or hub id to export (default: the model setting)"
    )
    ex.add_argument("out", help="the dir to write (must not exist, or be empty)")
    ex.add_argument("--hub", choices=get_args(Hub), help="model hub for hub ids (default ms)")
    ex.add_argument("--name", help="the model's name in results (default: bundled name, hub id or dir name)")
    ex.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        return int(args.func(args))
    except InvalidSettingsError as exc:
        exc.report()
        return 2
    except (EmosttError, ValueError) as exc:
        sys.stderr.write(f"emostt: error: {exc}\n")
        return 2
