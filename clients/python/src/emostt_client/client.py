"""The asyncio client: one ``Stream`` per device session, reconnecting on retryable drops.

Concurrency: a stream lives on one event loop. One background task, the reader, owns the
connection: it reads events into an unbounded queue (so a caller that sends a whole file before
iterating never stalls the server) and, after a retryable drop, reconnects with backoff while
``send``/``finalize``/``configure`` wait for the new session. Call those from any task of the
loop; iterate the events from one task.

What a reconnect keeps: the device id, token, sample rate and every field given to ``config=``,
``turn_detection=``, ``keyterms=`` or ``configure()`` (re-sent before any audio). What it does
not: audio sent before the drop is not replayed; utterances in flight are lost (listed in the
``Reconnected`` event) and utterance ids start again at ``u1``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy.typing as npt
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from emostt_client.audio import SUPPORTED_RATES, AudioInput, read_audio, to_pcm16
from emostt_client.errors import StreamClosedError
from emostt_client.handshake import close_failure
from emostt_client.pacing import FAST, REALTIME, Pacing, SessionClock, clip_pcm16
from emostt_client.protocol import (
    CLOSE_NORMAL,
    CLOSE_RESTART,
    Error,
    Event,
    Final,
    Ready,
    Reconnected,
    ServerEvent,
    SpeechStarted,
    TurnDetectionLike,
    build_url,
    config_fields,
    merge_config,
    reconnects_after,
)
from emostt_client.reconnect import ReconnectPolicy
from emostt_client.session import open_with_retry, read_until_closed

__all__ = ["FAST", "REALTIME", "Pacing", "Stream", "connect"]

# send() splits larger audio: the server refuses messages over max_message_bytes (256 KiB default).
MAX_MESSAGE_BYTES = 64 * 1024


_END = object()


def connect(
    url: str,
    device_id: str,
    token: str | None = None,
    sample_rate: int = 16000,
    config: Mapping[str, Any] | None = None,
    reconnect: ReconnectPolicy | None = None,
    *,
    turn_detection: TurnDetectionLike | None = None,
    keyterms: Sequence[str] | None = None,
    fast_pacing: Pacing = FAST,
    open_timeout: float = 10.0,
    close_timeout: float = 35.0,
) -> Stream:
    """A stream to ``url`` as ``device_id``: ``async with connect(...) as stream`` or
    ``stream = await connect(...)``. Opening waits for the server's ``ready`` (retrying per
    ``reconnect``, default ``ReconnectPolicy()``; ``ReconnectPolicy(max_attempts=0)`` never
    retries) and raises ``AuthError``, ``ServerClosedError`` or ``ConnectionFailedError``.
    ``turn_detection``: the config's ``turn_detection`` (a ``TurnDetection`` or a dict); ``keyterms``:
    words to bias decoding towards (see ``Final.keyterms_matched``; ``configure(keyterms=)`` changes them)."""
    if sample_rate not in SUPPORTED_RATES:
        raise ValueError(f"sample_rate must be one of {sorted(SUPPORTED_RATES)}")
    given = {"turn_detection": turn_detection, "keyterms": keyterms}
    return Stream(
        build_url(url, device_id, sample_rate),
        token=token,
        sample_rate=sample_rate,
        config=config_fields({**(config or {}), **{k: v for k, v in given.items() if v is not None}}),
        policy=reconnect if reconnect is not None else ReconnectPolicy(),
        fast_pacing=fast_pacing,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
    )


class Stream:
    """One device session (and its successors after reconnects). Iterate it for events."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        sample_rate: int,
        config: Mapping[str, Any] | None,
        policy: ReconnectPolicy,
        fast_pacing: Pacing,
        open_timeout: float,
        close_timeout: float,
    ) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._policy = policy
        self._fast = fast_pacing
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._config: dict[str, Any] = {}
        merge_config(self._config, config_fields(config or {}))
        self._initial_rate = sample_rate
        self._ws: ClientConnection | None = None
        self._ready: Ready | None = None
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._finished = asyncio.Event()
        self._failure: BaseException | None = None
        self._failure_raised = False
        self._closing = False
        self._close_code: int | None = None
        self._open_utterances: dict[str, None] = {}
        # The current session, for pacing: its number, start (loop clock), audio sent, rate.
        self._clock = SessionClock(sample_rate)

    # -- opening and closing ------------------------------------------------------------------

    async def open(self) -> Stream:
        if self._reader is not None or self._finished.is_set():
            raise RuntimeError("a stream opens once: connect() again for a new one")
        try:
            ws, ready, _ = await self._open(reconnecting=False)
        except BaseException as exc:
            if isinstance(exc, Exception):  # raised here; iterating raises it again
                self._failure, self._failure_raised = exc, True
            self._finished.set()
            self._events.put_nowait(_END)
            raise
        await self._install(ws, ready)
        self._reader = asyncio.create_task(self._read_loop())
        return self

    def __await__(self) -> Generator[Any, None, Stream]:
        return self.open().__await__()

    async def __aenter__(self) -> Stream:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    async def close(self) -> None:
        """Send ``close``: the server ends the open utterance, sends every pending final, then
        closes with 1000. Returns once it has (the finals stay readable by iterating); raises
        the stream's failure if it was not raised to the caller before."""
        if not self._finished.is_set() and not self._closing:
            self._closing = True
            if self._connected.is_set() and self._ws is not None:
                with contextlib.suppress(ConnectionClosed):
                    await self._ws.send(json.dumps({"type": "close"}))
            else:  # reconnecting: nothing to flush
                await self.abort()
        try:
            await asyncio.wait_for(self._finished.wait(), self._close_timeout)
        except asyncio.TimeoutError:
            await self.abort()
            if self._failure is None:
                self._failure = StreamClosedError(
                    f"the server did not end the session within {self._close_timeout:g} s of close(); "
                    "finals still pending are lost"
                )
        if self._failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise self._failure

    async def abort(self) -> None:
        """Drop the connection now, without waiting for finals."""
        self._closing = True
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._reader is None and not self._finished.is_set():
            self._events.put_nowait(_END)  # never opened: iterating ends at once
        self._finished.set()

    # -- sending ------------------------------------------------------------------------------

    async def send(self, audio: AudioInput) -> None:
        """Send PCM16 bytes or a numpy array (int16, or float in [-1, 1]) at the session's rate,
        as is (no pacing: stream in real time, or use ``send_file``). During a reconnect this
        waits for the new session."""
        pcm = to_pcm16(audio)
        for start in range(0, len(pcm), MAX_MESSAGE_BYTES):
            await self._send(pcm[start : start + MAX_MESSAGE_BYTES], audio=True)

    async def send_file(
        self,
        path: str | Path,
        *,
        realtime: bool = True,
        speed: float = 1.0,
        trailing_silence_s: float = 1.0,
        chunk_ms: int = 100,
    ) -> float:
        """Stream an audio file in ``chunk_ms`` chunks: at ``speed`` x real time, or with
        ``realtime=False`` as fast as the server's default rate limit safely allows (``FAST``, or
        ``fast_pacing`` given to ``connect``). Trailing silence lets the endpointer close the last
        utterance. A file at another rate switches the session's rate when no audio was sent yet,
        else it is resampled. Returns the seconds of audio sent."""
        audio, rate = await asyncio.to_thread(read_audio, path)
        return await self.send_audio(
            audio,
            rate,
            realtime=realtime,
            speed=speed,
            chunk_ms=chunk_ms,
            trailing_silence_s=trailing_silence_s,
        )

    async def send_audio(
        self,
        audio: npt.NDArray[Any],
        rate: int,
        *,
        realtime: bool = True,
        speed: float = 1.0,
        trailing_silence_s: float = 1.0,
        chunk_ms: int = 100,
    ) -> float:
        """``send_file`` for a clip in memory: mono samples (float in [-1, 1], or int16) at ``rate``."""
        target = self._clock.rate
        if rate != target and self._clock.audio_s == 0 and rate in SUPPORTED_RATES:
            await self.configure(sample_rate=rate)
            target = rate
        pcm = clip_pcm16(audio, rate, target, trailing_silence_s)
        pacing = Pacing(speed) if realtime else self._fast
        step = max(2, target * chunk_ms // 1000 * 2)
        for start in range(0, len(pcm), step):
            chunk = pcm[start : start + step]
            await self._clock.pace(len(chunk) / (2 * target), pacing, self._wait_connected)
            await self._send(chunk, audio=True)
        return len(pcm) / (2 * target)

    async def finalize(self) -> None:
        """End the current utterance now; its final follows."""
        await self._send(json.dumps({"type": "finalize"}))

    async def keepalive(self) -> None:
        """Reset the server's idle timer (for long silences without audio)."""
        await self._send(json.dumps({"type": "keepalive"}))

    async def configure(self, **fields: Any) -> None:
        """Change the session config (docs/protocol.md); the server answers ``ConfigUpdated``
        (or an ``invalid_config`` ``Error``). Remembered and re-sent after a reconnect."""
        fields = config_fields(fields)
        merge_config(self._config, fields)
        if "sample_rate" in fields and self._clock.audio_s == 0:
            self._clock.rate = int(fields["sample_rate"])
        await self._send(json.dumps({"type": "config", **fields}))

    # -- receiving ----------------------------------------------------------------------------

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Event:
        item = await self._events.get()
        if item is _END:
            self._events.put_nowait(_END)  # later calls end too
            if self._failure is not None:
                self._failure_raised = True
                raise self._failure
            raise StopAsyncIteration
        event: Event = item
        return event

    async def recv(self, timeout: float | None = None) -> Event:
        """The next event; raises ``StreamClosedError`` after the last one, ``asyncio.TimeoutError``
        after ``timeout`` seconds, or the stream's failure."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except StopAsyncIteration:
            raise StreamClosedError(f"the session has ended (close code {self._close_code})") from None

    async def finals(self) -> list[Final]:
        """Every remaining final, until the stream ends (call after ``close()`` or alongside it)."""
        return [event async for event in self if isinstance(event, Final)]

    @property
    def ready(self) -> Ready | None:
        """The current session's ``Ready`` event."""
        return self._ready

    @property
    def close_code(self) -> int | None:
        """The close code of the last connection, once it has closed."""
        return self._close_code

    @property
    def closed(self) -> bool:
        return self._finished.is_set()

    # -- internals ----------------------------------------------------------------------------

    async def _wait_connected(self) -> ClientConnection:
        while True:
            if self._closing:
                raise StreamClosedError("the stream is closing")
            if self._connected.is_set() and self._ws is not None:
                return self._ws
            if self._finished.is_set():
                if self._failure is not None:
                    self._failure_raised = True
                    raise self._failure
                raise StreamClosedError(f"the session has ended (close code {self._close_code})")
            waits = [asyncio.ensure_future(e.wait()) for e in (self._connected, self._finished)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    async def _send(self, message: str | bytes, *, audio: bool = False) -> None:
        while True:
            ws = await self._wait_connected()
            try:
                await ws.send(message)
            except ConnectionClosed:
                if self._ws is ws:
                    self._connected.clear()  # the reader reconnects or ends the stream
                continue
            if audio and self._ws is ws:
                self._clock.count(len(message))
            return

    async def _install(self, ws: ClientConnection, ready: Ready) -> None:
        """Make a new session current: its clock, its rate, the remembered config, then sends."""
        self._ws, self._ready = ws, ready
        rate = int(self._config.get("sample_rate", ready.sample_rate))
        self._clock.restart(rate, asyncio.get_running_loop().time())
        self._events.put_nowait(ready)
        if self._config:
            with contextlib.suppress(ConnectionClosed):  # the reader sees the closed connection
                await ws.send(json.dumps({"type": "config", **self._config}))
        self._connected.set()

    async def _read_loop(self) -> None:
        try:
            while True:
                assert self._ws is not None
                closed = await read_until_closed(self._ws, self._deliver)
                code = self._close_code = closed.code
                self._connected.clear()
                if not reconnects_after(code, requested=self._closing):
                    # A 1000, or a drain's 1012 after our close (its finals came first): the end.
                    if code == CLOSE_NORMAL or (self._closing and code == CLOSE_RESTART):
                        return
                    raise close_failure(code, closed.reason, closed.error, attempts=1)
                lost = tuple(self._open_utterances)
                self._open_utterances.clear()
                ws, ready, attempt = await self._open(reconnecting=True, cause=code)
                self._events.put_nowait(Reconnected(attempt, code, lost))
                await self._install(ws, ready)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an EmosttClientError, or a bug: either way the caller sees it
            self._failure = exc
        finally:
            self._connected.clear()
            self._finished.set()
            self._events.put_nowait(_END)

    def _deliver(self, event: ServerEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._open_utterances[event.utterance_id] = None
        elif isinstance(event, (Final, Error)) and event.utterance_id is not None:
            self._open_utterances.pop(event.utterance_id, None)
        self._events.put_nowait(event)

    async def _open(
        self, *, reconnecting: bool, cause: int | None = None
    ) -> tuple[ClientConnection, Ready, int]:
        return await open_with_retry(
            self.url, self._headers, self._open_timeout, self._policy, reconnecting=reconnecting, cause=cause
        )
