"""OpenAI Realtime transcription sessions: a client's ``session.update`` (GA) or
``transcription_session.update`` (beta) to our session config, and the session object that
``session.created`` / ``session.updated`` show back. Pure; docs/openai.md ("Realtime").

Both shapes set the same four things: the input format (PCM16; 24 kHz, OpenAI's only rate, or
any rate ``/ws/stt`` takes), the transcription hints (``language`` is used; ``model`` and
``prompt`` are accepted and echoed: one model serves every name, and CTC takes no prompt),
``turn_detection`` (``server_vad`` → our VAD settings; ``semantic_vad`` → semantic turns by the
turn model, with its eagerness (docs/protocol.md, "Turns"); ``null`` → the client's commits end
turns) and noise reduction (accepted, echoed, not
applied). As in OpenAI's API only the fields present change. Fields this server does not know
are ignored rather than refused: OpenAI keeps adding hints (``delay``, ``keywords``) that clients
send unconditionally, and refusing them would break those clients for nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from emostt.errors import ProtocolError, validation_problem_list
from emostt.transport.openai_params import language_hint
from emostt.vocabulary import SUPPORTED_INPUT_RATES
from emostt.vocabulary.session_config import EndpointConfig, SessionConfig, keyterms_from_prompt

OPENAI_RATE = 24_000
# OpenAI's G.711 formats (GA format types; the beta's input_audio_format names): 8 kHz phone audio.
G711_RATE = 8_000
G711_TYPES = {"audio/pcmu": "mulaw", "audio/pcma": "alaw"}
G711_BETA = {"g711_ulaw": "mulaw", "g711_alaw": "alaw"}
# Served by OpenAI without server-side turn detection: a session naming one of these (and no
# turn_detection) gets commit-driven turns, as LiveKit and Pipecat expect of them.
MANUAL_TURN_MODELS = ("gpt-realtime-whisper", "gpt-live-transcribe")
VAD_FIELDS = ("threshold", "prefix_padding_ms", "silence_duration_ms")
TURN_TYPES = ("server_vad", "semantic_vad")
EAGERNESS = ("low", "medium", "high", "auto")
NOISE_REDUCTION_TYPES = ("near_field", "far_field")
# What a client may set and the server shows back, bounded: OpenAI's own values are short (model
# names, ISO-639 codes, ids); a prompt is a few sentences or a list of words. Without bounds a
# client could park megabytes in its session and have them echoed in every session.updated.
TRANSCRIPTION_LIMITS = {"model": 256, "language": 32, "prompt": 4096}
MAX_EVENT_ID_CHARS = 256
MAX_INCLUDE = 16
MAX_INCLUDE_CHARS = 128
MAX_UNKNOWN_HINTS = 16
MAX_UNKNOWN_HINT_BYTES = 1024


def check_text(value: object, name: str, limit: int, param: str) -> str:
    """``value`` when it is a string of at most ``limit`` characters; else an error naming ``param``."""
    if not isinstance(value, str):
        raise RealtimeRequestError(f"{name} must be a string", param=param)
    if len(value) > limit:
        raise RealtimeRequestError(f"{name} is longer than {limit} characters", param=param)
    return value


class RealtimeRequestError(ProtocolError):
    """A client event that cannot be applied: one OpenAI ``error`` event, and the session goes on.

    ``code`` is ours (metrics), ``openai_code`` and ``param`` are what OpenAI's error carries, and
    ``event_id`` is the client event's own id (OpenAI echoes it so a client can match the two)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        openai_code: str = "invalid_value",
        code: str = "invalid_message",
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.param = param
        self.openai_code = openai_code
        self.event_id = event_id


@dataclass(frozen=True)
class RealtimeView:
    """What the client configured, as the session object shows it back."""

    id: str
    beta: bool  # the client speaks the beta shape: answer transcription_session.*
    transcription: dict[str, Any] = field(default_factory=dict)
    manual_turns: bool = False
    turn_type: str = "server_vad"
    eagerness: str | None = None  # semantic_vad's, echoed
    turn_detection_set: bool = False  # the client chose turn detection (or null) itself
    noise_reduction: dict[str, Any] | None = None
    include: list[str] | None = None


@dataclass(frozen=True)
class Update:
    view: RealtimeView
    changes: dict[str, Any]  # for SessionConfig.updated
    manual_turns: bool


def parse_update(
    event: Mapping[str, Any], view: RealtimeView, config: SessionConfig, default_language: str
) -> Update:
    """A ``session.update`` or ``transcription_session.update`` applied to ``view``; raises
    ``RealtimeRequestError`` naming the offending field."""
    session = event.get("session")
    if not isinstance(session, dict):
        raise RealtimeRequestError("session must be an object", param="session")
    beta = event.get("type") == "transcription_session.update"
    found = _beta_fields(session) if beta else _ga_fields(session)
    changes: dict[str, Any] = {}
    updates: dict[str, Any] = {"beta": beta}
    if found.rate is not None:
        changes["sample_rate"] = found.rate
    if found.encoding is not None:
        changes["encoding"] = found.encoding
    if found.transcription is not None:
        transcription = {**view.transcription, **found.transcription}
        _check_unknown_hints(transcription, found.prefix)
        for key, limit in TRANSCRIPTION_LIMITS.items():
            if transcription.get(key) is not None:
                check_text(transcription[key], key, limit, f"{found.prefix}.{key}")
        languages = transcription.get("languages")
        if languages is not None:
            param = f"{found.prefix}.languages"
            if not isinstance(languages, list) or len(languages) > MAX_INCLUDE:
                raise RealtimeRequestError(f"languages must be a list of at most {MAX_INCLUDE}", param=param)
            for language in languages:
                check_text(language, "languages", TRANSCRIPTION_LIMITS["language"], param)
        changes["language"] = _language(transcription, default_language)
        if "prompt" in found.transcription:  # the prompt's terms bias decoding (docs/openai.md)
            changes["keyterms"] = keyterms_from_prompt(found.transcription["prompt"] or "")
        updates["transcription"] = transcription
    manual = view.manual_turns
    if found.has_turn_detection:
        turn = found.turn_detection
        updates["turn_detection_set"] = True
        manual = turn is None
        if turn is not None:
            vad, turn_type, eagerness = _turn_detection(turn, config, found.turn_prefix)
            changes["vad"] = vad
            # semantic_vad is served by the turn model, with OpenAI's eagerness; server_vad by silence.
            semantic = {"type": "semantic", "eagerness": eagerness or "auto"}
            changes["turn_detection"] = semantic if turn_type == "semantic_vad" else {"type": "silence"}
            updates.update(turn_type=turn_type, eagerness=eagerness)
    elif not view.turn_detection_set and found.transcription is not None:
        # OpenAI's default for these models is no server VAD: clients commit each turn.
        manual = str(updates["transcription"].get("model") or "").startswith(MANUAL_TURN_MODELS)
    updates["manual_turns"] = manual
    if found.has_noise_reduction:
        updates["noise_reduction"] = found.noise_reduction
    if found.include is not None:
        updates["include"] = found.include
    return Update(dataclasses.replace(view, **updates), changes, manual)


def render(view: RealtimeView, config: Mapping[str, Any]) -> dict[str, Any]:
    """The session object for ``session.created/updated`` (GA) or ``transcription_session.*``
    (beta), from the view and the session's effective config (``SessionConfig.model_dump()``)."""
    turn: dict[str, Any] | None = None
    if not view.manual_turns:
        vad = config["vad"]
        turn = {"type": view.turn_type, **{k: vad[k] for k in VAD_FIELDS}}
        if view.eagerness is not None:
            turn["eagerness"] = view.eagerness
    if view.beta:
        return {
            "id": view.id,
            "object": "realtime.transcription_session",
            "input_audio_format": {v: k for k, v in G711_BETA.items()}.get(config["encoding"], "pcm16"),
            "input_audio_transcription": view.transcription,
            "turn_detection": turn,
            "input_audio_noise_reduction": view.noise_reduction,
            "include": view.include,
            "modalities": ["text"],
        }
    audio_input = {
        "format": _ga_format(config),
        "transcription": view.transcription,
        "turn_detection": turn,
        "noise_reduction": view.noise_reduction,
    }
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": view.id,
        "audio": {"input": audio_input},
        "include": view.include,
    }


def _ga_format(config: Mapping[str, Any]) -> dict[str, Any]:
    for kind, encoding in G711_TYPES.items():
        if config["encoding"] == encoding:
            return {"type": kind}
    return {"type": "audio/pcm", "rate": config["sample_rate"]}


@dataclass
class _Fields:
    """What one update sets, in either shape (None: absent; turn detection and noise reduction
    may be set to null, so they have a presence flag)."""

    prefix: str  # where transcription fields live, for error params
    turn_prefix: str
    rate: int | None = None
    encoding: str | None = None
    transcription: dict[str, Any] | None = None
    has_turn_detection: bool = False
    turn_detection: dict[str, Any] | None = None
    has_noise_reduction: bool = False
    noise_reduction: dict[str, Any] | None = None
    include: list[str] | None = None


def _ga_fields(session: dict[str, Any]) -> _Fields:
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise RealtimeRequestError(
            "this server serves transcription sessions only: session.type must be 'transcription'",
            param="session.type",
        )
    base = "session.audio.input"
    audio = _object(session, "audio", "session.audio") or {}
    audio_input = _object(audio, "input", base) or {}
    found = _Fields(prefix=f"{base}.transcription", turn_prefix=f"{base}.turn_detection")
    fmt = _object(audio_input, "format", f"{base}.format")
    if fmt is not None and fmt.get("type") in G711_TYPES:
        found.rate, found.encoding = G711_RATE, G711_TYPES[fmt["type"]]
    elif fmt is not None:
        if fmt.get("type", "audio/pcm") != "audio/pcm":
            raise RealtimeRequestError(
                "input formats are audio/pcm (16-bit little-endian mono), audio/pcmu and audio/pcma",
                param=f"{base}.format.type",
            )
        found.encoding = "pcm16"
        rate = fmt.get("rate", OPENAI_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in SUPPORTED_INPUT_RATES:
            rates = ", ".join(map(str, SUPPORTED_INPUT_RATES))
            raise RealtimeRequestError(f"rate must be one of {rates}", param=f"{base}.format.rate")
        found.rate = rate
    found.transcription = _object(audio_input, "transcription", found.prefix)
    _presence(found, audio_input, "turn_detection", "noise_reduction", f"{base}.noise_reduction")
    found.include = _include(session)
    return found


def _beta_fields(session: dict[str, Any]) -> _Fields:
    found = _Fields(prefix="session.input_audio_transcription", turn_prefix="session.turn_detection")
    if "input_audio_format" in session:
        fmt = session["input_audio_format"]
        if fmt in G711_BETA:
            found.rate, found.encoding = G711_RATE, G711_BETA[fmt]
        elif fmt == "pcm16":
            found.rate, found.encoding = OPENAI_RATE, "pcm16"
        else:
            raise RealtimeRequestError(
                "input_audio_format is pcm16 (24 kHz, 16-bit little-endian mono), g711_ulaw or g711_alaw",
                param="session.input_audio_format",
            )
    found.transcription = _object(session, "input_audio_transcription", found.prefix)
    _presence(
        found, session, "turn_detection", "input_audio_noise_reduction", "session.input_audio_noise_reduction"
    )
    found.include = _include(session)
    return found


def _presence(
    found: _Fields, parent: dict[str, Any], turn_key: str, noise_key: str, noise_param: str
) -> None:
    if turn_key in parent:
        found.has_turn_detection = True
        found.turn_detection = _object(parent, turn_key, found.turn_prefix)
    if noise_key in parent:
        found.has_noise_reduction = True
        noise = _object(parent, noise_key, noise_param)
        if noise is not None:
            kind = noise.get("type")
            if kind not in NOISE_REDUCTION_TYPES:
                types = ", ".join(NOISE_REDUCTION_TYPES)
                raise RealtimeRequestError(f"type must be one of {types}", param=f"{noise_param}.type")
            noise = {"type": kind}
        found.noise_reduction = noise


def _turn_detection(
    turn: dict[str, Any], config: SessionConfig, prefix: str
) -> tuple[dict[str, Any], str, str | None]:
    """Our VAD settings, the turn detection type and semantic_vad's eagerness (echoed)."""
    turn_type = turn.get("type", "server_vad")  # the beta shape may leave the type out
    if turn_type not in TURN_TYPES:
        raise RealtimeRequestError(
            f"turn_detection.type must be one of {', '.join(TURN_TYPES)} (or turn_detection null)",
            param=f"{prefix}.type",
        )
    # server_vad's settings are our VAD's; semantic_vad's turns are the turn model's (its eagerness).
    vad = {k: turn[k] for k in VAD_FIELDS if turn_type == "server_vad" and turn.get(k) is not None}
    try:
        EndpointConfig.model_validate({**config.vad.model_dump(), **vad})
    except ValidationError as exc:
        name, problem = validation_problem_list(exc, "turn_detection")[0]
        raise RealtimeRequestError(f"{name}: {problem}", param=f"{prefix}.{name}") from None
    eagerness = turn.get("eagerness") if turn_type == "semantic_vad" else None
    if eagerness is not None and eagerness not in EAGERNESS:
        raise RealtimeRequestError(
            f"eagerness must be one of {', '.join(EAGERNESS)}", param=f"{prefix}.eagerness"
        )
    return vad, turn_type, eagerness


def _language(transcription: Mapping[str, Any], default: str) -> str:
    """``language`` (ISO 639) as SenseVoice's hint; a single entry of ``languages`` counts too;
    several languages, or none, leave detection to the model (or the server's default)."""
    language = transcription.get("language")
    languages = transcription.get("languages")
    if not language and isinstance(languages, list) and languages:
        language = languages[0] if len(languages) == 1 and isinstance(languages[0], str) else "auto"
    return language_hint(language, default)


def _check_unknown_hints(transcription: Mapping[str, Any], prefix: str) -> None:
    """Hints this server does not use are kept and echoed (see the module doc), within bounds."""
    unknown = [key for key in transcription if key not in TRANSCRIPTION_LIMITS and key != "languages"]
    if len(unknown) > MAX_UNKNOWN_HINTS:
        raise RealtimeRequestError(f"at most {MAX_UNKNOWN_HINTS} other transcription fields", param=prefix)
    for key in unknown:
        if len(key) > MAX_INCLUDE_CHARS or len(orjson.dumps(transcription[key])) > MAX_UNKNOWN_HINT_BYTES:
            raise RealtimeRequestError(
                f"{key[:40]} is larger than {MAX_UNKNOWN_HINT_BYTES} bytes", param=f"{prefix}.{key[:40]}"
            )


def _object(parent: Mapping[str, Any], key: str, param: str) -> dict[str, Any] | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, dict):
        raise RealtimeRequestError(f"{key} must be an object or null", param=param)
    return value


def _include(session: Mapping[str, Any]) -> list[str] | None:
    value = session.get("include")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_INCLUDE:
        raise RealtimeRequestError(
            f"include must be a list of at most {MAX_INCLUDE} strings", param="session.include"
        )
    for item in value:
        check_text(item, "include", MAX_INCLUDE_CHARS, "session.include")
    return value
