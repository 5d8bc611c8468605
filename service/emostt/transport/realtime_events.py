"""Session events to OpenAI Realtime server events, one connection's worth of state. Pure (no I/O).

Mapping (docs/openai.md, "Realtime"): ``ready`` → ``session.created``, ``config`` →
``session.updated`` (``transcription_session.*`` for a beta client), ``speech_started`` →
``input_audio_buffer.speech_started``, ``speech_ended`` → ``input_audio_buffer.speech_stopped``
and ``input_audio_buffer.committed``, ``partial`` → ``conversation.item.input_audio_transcription.delta``
(only text that has become stable), ``final`` → the last delta and ``.completed`` (with our
scores), an utterance's ``error`` → ``.failed``, any other ``error`` → ``error``. Every event gets
an ``event_id``. Utterance ``uN`` of session ``S`` is item ``item_S_uN``, so an item names the
session and utterance that the Redis results stream and the logs carry.

Deltas are append-only, as OpenAI's clients assume (LiveKit concatenates them into its interim
text). Our partials re-decode a growing utterance and may revise earlier words, so a delta carries
only what two successive partials agree on, up to a word boundary both show, never the newest
word of the latest partial (it may still grow: "turn" → "turned"); see ``stable_prefix``. The
final's text is authoritative: when the delta text so far is a prefix of it, a last delta adds
the rest (so the deltas add up to the transcript, as OpenAI's do); when the final revised stable
text (rare), no delta is sent and ``.completed`` carries the full transcript, which clients use
as the final word. Deltas of an item wait until every earlier item has completed or failed:
clients keep one running interim text and reset it at ``.completed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emostt.transport.realtime_config import RealtimeRequestError, RealtimeView, render

WireEvent = dict[str, Any]

# Our error codes that are the client's doing; every other code is a server_error.
CLIENT_ERRORS = frozenset(
    {
        "unauthorized",
        "invalid_device_id",
        "origin_not_allowed",
        "invalid_config",
        "invalid_message",
        "unknown_message_type",
        "idle_timeout",
        "session_too_long",
        "rate_limited",
        "too_fast",
    }
)
# What the completed event copies from a final besides the text (which becomes ``transcript``).
_NOT_COPIED = frozenset({"type", "text", "utterance_id", "session_id", "seq"})
_INNER_WORD = "'’-"  # characters that join a word's parts ("don't", "well-known")


def stable_prefix(previous: str, current: str) -> str:
    """The part of ``current`` that ``previous`` agrees with, cut back to the end of a word that
    both show complete. The newest word of ``current`` never counts (nothing after it shows that
    it is complete), nor does punctuation that ends ``previous`` (the model's guess at the end of
    the audio it had): both count once a later partial agrees with them followed by more text."""
    common = 0
    for a, b in zip(previous, current, strict=False):
        if a != b:
            break
        common += 1
    for cut in range(min(common, len(current) - 1), 0, -1):
        if _word_ends(current, cut) and _word_ends(previous, cut):
            return current[:cut]
    return ""


def _word_ends(text: str, cut: int) -> bool:
    """Whether ``text[:cut]`` ends with a whole word (separators go with the next delta)."""
    before = text[cut - 1]
    if before.isspace():
        return False
    if cut >= len(text):
        return _is_word(before)
    after = text[cut]
    if _is_word(before) and _is_word(after):
        # Chinese and Japanese write no spaces: each character is its own unit.
        return _unspaced(before) or _unspaced(after)
    return True


def _is_word(char: str) -> bool:
    return char.isalnum() or char in _INNER_WORD


def _unspaced(char: str) -> bool:
    code = ord(char)
    return 0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF


@dataclass
class _Item:
    item_id: str
    announced: bool  # speech_started was sent for it (server VAD turns)
    last_partial: str | None = None
    stable: str = ""
    sent: str = ""  # the deltas so far, joined


class Translator:
    """One connection's translation state. Calls are serialized by the connection's send lock,
    so the events each call returns go on the wire in the order the calls were made."""

    def __init__(self, session_id: str, view: RealtimeView) -> None:
        self.session_id = session_id
        self.view = view  # the connection replaces it on each session update, before it applies
        self._events = 0
        # Items not yet completed or failed, in utterance order: only the first sends deltas.
        self._items: dict[str, _Item] = {}
        self._last_committed: str | None = None

    def item_id(self, utterance_id: str) -> str:
        return f"item_{self.session_id}_{utterance_id}"

    def translate(self, event: Mapping[str, Any]) -> list[WireEvent]:
        kind = event["type"]
        if kind == "ready":
            # Ours, beside OpenAI's fields: the device id this session publishes results under.
            ours = {"device_id": event["device_id"], "model": event["model"]}
            return [self._session_event("created", event["config"], ours)]
        if kind == "config":
            return [self._session_event("updated", event["config"])]
        if kind == "speech_started":
            return self._speech_started(event)
        if kind == "speech_ended":
            return self._speech_ended(event)
        if kind == "partial":
            return self._partial(event)
        if kind == "final":
            return self._final(event)
        if kind == "error":
            if "utterance_id" in event:
                return self._failed(event)
            return [self._error(event["code"], event["message"], retryable=event["retryable"])]
        # emotion_changed: the mood rides on each completed event; OpenAI has no event for it.
        return []

    def cleared(self, utterance_id: str | None, audio_end_ms: int) -> list[WireEvent]:
        """``input_audio_buffer.clear`` dropped ``utterance_id`` (None: nothing was open)."""
        out: list[WireEvent] = []
        item = self._items.pop(utterance_id, None) if utterance_id is not None else None
        if item is not None and item.announced:
            # Every speech_started gets its speech_stopped: turn-taking clients wait for it.
            out.append(self._wire("input_audio_buffer.speech_stopped", item, audio_end_ms=audio_end_ms))
        out.append(self._wire("input_audio_buffer.cleared"))
        return out + self._head_deltas()

    def request_error(self, exc: RealtimeRequestError) -> WireEvent:
        return self._error(
            exc.code, str(exc), openai_code=exc.openai_code, param=exc.param, client_event_id=exc.event_id
        )

    # -- session events --------------------------------------------------------------------------

    def _session_event(
        self, which: str, config: Mapping[str, Any], ours: dict[str, Any] | None = None
    ) -> WireEvent:
        session = render(self.view, config)
        if ours is not None:
            session["emostt"] = ours
        prefix = "transcription_session" if self.view.beta else "session"
        return self._wire(f"{prefix}.{which}", session=session)

    def _speech_started(self, event: Mapping[str, Any]) -> list[WireEvent]:
        utterance_id = event["utterance_id"]
        # Manual turns open an utterance with the first audio after a commit: no speech to announce.
        item = _Item(self.item_id(utterance_id), announced=not self.view.manual_turns)
        self._items[utterance_id] = item
        if not item.announced:
            return []
        return [self._wire("input_audio_buffer.speech_started", item, audio_start_ms=event["audio_start_ms"])]

    def _speech_ended(self, event: Mapping[str, Any]) -> list[WireEvent]:
        item = self._items.get(event["utterance_id"])
        if item is None:
            return []
        out = []
        if item.announced:
            end_ms = event["audio_end_ms"]
            out.append(self._wire("input_audio_buffer.speech_stopped", item, audio_end_ms=end_ms))
        out.append(self._wire("input_audio_buffer.committed", item, previous_item_id=self._last_committed))
        self._last_committed = item.item_id
        return out

    # -- transcription events --------------------------------------------------------------------

    def _partial(self, event: Mapping[str, Any]) -> list[WireEvent]:
        item = self._items.get(event["utterance_id"])
        if item is None:
            return []
        text = event["text"]
        if item.last_partial is not None:
            item.stable = stable_prefix(item.last_partial, text)
        item.last_partial = text
        return self._head_deltas()

    def _final(self, event: Mapping[str, Any]) -> list[WireEvent]:
        item = self._finish(event["utterance_id"])
        text = event["text"]
        out = []
        if item.sent != text and text.startswith(item.sent):
            out.append(self._delta(item, text[len(item.sent) :]))
        body = {k: v for k, v in event.items() if k not in _NOT_COPIED}
        language = (event.get("language") or {}).get("label")
        seconds = event.get("duration_ms", event["audio_end_ms"] - event["audio_start_ms"]) / 1000
        completed = self._wire(
            "conversation.item.input_audio_transcription.completed",
            item,
            content_index=0,
            transcript=text,
            usage={"type": "duration", "seconds": round(seconds, 3)},
            logprobs=None,
            languages=[{"code": language}] if language and language != "nospeech" else [],
            **body,
        )
        return [*out, completed, *self._head_deltas()]

    def _failed(self, event: Mapping[str, Any]) -> list[WireEvent]:
        item = self._finish(event["utterance_id"])
        error = {
            "type": _error_type(event["code"]),
            "code": event["code"],
            "message": event["message"],
            "param": None,
            "retryable": event["retryable"],
        }
        failed = self._wire(
            "conversation.item.input_audio_transcription.failed", item, content_index=0, error=error
        )
        return [failed, *self._head_deltas()]

    def _finish(self, utterance_id: str) -> _Item:
        """Forget the item and any before it (items end once each, in order: an earlier one still
        here would never end, and must not hold back the deltas of the ones after it)."""
        if utterance_id not in self._items:  # cleared, or gone: still answer with its id
            return _Item(self.item_id(utterance_id), announced=False)
        while True:
            key = next(iter(self._items))
            item = self._items.pop(key)
            if key == utterance_id:
                return item

    def _head_deltas(self) -> list[WireEvent]:
        """The first unfinished item's stable text not yet sent."""
        item = next(iter(self._items.values()), None)
        if item is None or len(item.stable) <= len(item.sent) or not item.stable.startswith(item.sent):
            return []
        return [self._delta(item, item.stable[len(item.sent) :])]

    def _delta(self, item: _Item, text: str) -> WireEvent:
        item.sent += text
        return self._wire(
            "conversation.item.input_audio_transcription.delta", item, content_index=0, delta=text
        )

    # -- framing ---------------------------------------------------------------------------------

    def _error(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        openai_code: str | None = None,
        param: str | None = None,
        client_event_id: str | None = None,
    ) -> WireEvent:
        body = {
            "type": _error_type(code),
            "code": openai_code or ("invalid_api_key" if code == "unauthorized" else code),
            "message": message,
            "param": param,
            "event_id": client_event_id,
            "retryable": retryable,
        }
        return self._wire("error", error=body)

    def _wire(self, kind: str, item: _Item | None = None, **fields: Any) -> WireEvent:
        self._events += 1
        event: WireEvent = {"type": kind, "event_id": f"event_{self.session_id}_{self._events}"}
        if item is not None:
            event["item_id"] = item.item_id
        event.update(fields)
        return event


def _error_type(code: str) -> str:
    return "invalid_request_error" if code in CLIENT_ERRORS else "server_error"
