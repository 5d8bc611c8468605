"""Messages between front-end processes and the model process (pure encode/decode).

One message per ``Connection.send_bytes``; the first byte names its kind:

- ``J`` job (front end -> model): ``<u32 header length><orjson header><float32 samples>``; the
  samples travel as raw bytes (no per-sample encoding, one copy each side).
- ``C`` cancel (front end -> model): a job nobody waits for any more.
- ``O`` outcome (model -> front end): a served result, a named failure, or a refusal
  (``overloaded``/``shutting_down``: the job was never queued).
- ``S`` status (model -> front end): readiness, load and the model serving, sent periodically.

Both ends run the same code version (the model process starts its front ends), so there is
no versioning; a message that does not decode is a bug and raises ``ValueError``.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import orjson

from emostt.inference.engine import (
    Distribution,
    ModelInfo,
    TranscriptionRequest,
    TranscriptionResult,
    Word,
)
from emostt.policy.outcome import Failed, Outcome, Served
from emostt.vocabulary.labels import JobKind

RefusalCode = Literal["overloaded", "shutting_down"]
_HEADER_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class JobMessage:
    job_id: int
    kind: JobKind
    session_id: str
    request: TranscriptionRequest


@dataclass(frozen=True)
class CancelMessage:
    job_id: int


@dataclass(frozen=True)
class Refused:
    """The model process did not queue the job (its waiting list is full, or it is stopping)."""

    code: RefusalCode
    message: str


@dataclass(frozen=True)
class OutcomeMessage:
    job_id: int
    outcome: Outcome | Refused


@dataclass(frozen=True)
class StatusMessage:
    ready: bool
    failure: str | None
    model: ModelInfo
    depth: int
    open_sessions: int
    capacity_sessions: float | None
    overloaded: bool
    partial_interval_scale: float


Message = JobMessage | CancelMessage | OutcomeMessage | StatusMessage


def encode_job(job: JobMessage) -> bytes:
    req = job.request
    header = orjson.dumps(
        {
            "id": job.job_id,
            "kind": job.kind,
            "session": job.session_id,
            "language": req.language,
            "itn": req.use_itn,
            "words": req.word_timestamps,
            "known_emotion": req.known_emotion_only,
            "keyterms": list(req.keyterms),
        }
    )
    audio = np.ascontiguousarray(req.audio, dtype=np.float32)
    return b"J" + _HEADER_LEN.pack(len(header)) + header + audio.tobytes()


def encode_cancel(job_id: int) -> bytes:
    return b"C" + orjson.dumps(job_id)


def encode_outcome(message: OutcomeMessage) -> bytes:
    outcome = message.outcome
    body: dict[str, Any] = {"id": message.job_id}
    if isinstance(outcome, Served):
        body["served"] = outcome.result.to_dict()
        body["degraded"] = outcome.degraded
    elif isinstance(outcome, Failed):
        body["failed"] = asdict(outcome)
    else:
        body["refused"] = asdict(outcome)
    return b"O" + orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_status(status: StatusMessage) -> bytes:
    return b"S" + orjson.dumps(asdict(status))


def decode(data: bytes) -> Message:
    kind, body = data[:1], memoryview(data)[1:]
    if kind == b"J":
        (size,) = _HEADER_LEN.unpack_from(body)
        header = orjson.loads(body[_HEADER_LEN.size : _HEADER_LEN.size + size])
        # A copy: the request outlives this message's buffer and must be writable like any array.
        audio = np.frombuffer(body[_HEADER_LEN.size + size :], dtype=np.float32).copy()
        request = TranscriptionRequest(
            audio,
            language=header["language"],
            use_itn=header["itn"],
            word_timestamps=header["words"],
            known_emotion_only=header["known_emotion"],
            keyterms=tuple(header["keyterms"]),
        )
        return JobMessage(header["id"], header["kind"], header["session"], request)
    if kind == b"C":
        return CancelMessage(orjson.loads(body))
    if kind == b"O":
        return _decode_outcome(orjson.loads(body))
    if kind == b"S":
        fields = orjson.loads(body)
        return StatusMessage(**{**fields, "model": ModelInfo(**fields["model"])})
    raise ValueError(f"unknown message kind {bytes(kind)!r}")


def _decode_outcome(body: dict[str, Any]) -> OutcomeMessage:
    job_id = body["id"]
    if "served" in body:
        return OutcomeMessage(job_id, Served(_result(body["served"]), body["degraded"]))
    if "failed" in body:
        return OutcomeMessage(job_id, Failed(**body["failed"]))
    return OutcomeMessage(job_id, Refused(**body["refused"]))


def _result(fields: dict[str, Any]) -> TranscriptionResult:
    words = fields.get("words")
    return TranscriptionResult(
        text=fields["text"],
        language=Distribution(**fields["language"]),
        emotion=Distribution(**fields["emotion"]),
        event=Distribution(**fields["event"]),
        confidence=fields["confidence"],
        duration_ms=fields["duration_ms"],
        raw_text=fields["raw_text"],
        words=[Word(**w) for w in words] if words is not None else None,
        extras=fields.get("extras", {}),
        keyterms_matched=fields.get("keyterms_matched"),
    )
