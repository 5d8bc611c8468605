"""Blocking use of the client, for scripts and threads without asyncio.

Each ``SyncStream`` runs the asyncio client on its own event loop in a daemon thread and waits
for results; call one stream's methods from one thread at a time. ``transcribe_file`` works
from anywhere, even inside a running event loop (it uses a thread of its own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy.typing as npt

from emostt_client.audio import AudioInput
from emostt_client.client import Stream
from emostt_client.client import connect as async_connect
from emostt_client.events import Event, Final, Ready
from emostt_client.reconnect import ReconnectPolicy

__all__ = ["SyncStream", "connect", "transcribe_file"]

T = TypeVar("T")


def transcribe_file(
    url: str,
    path: str | Path,
    *,
    device_id: str = "emostt-client",
    token: str | None = None,
    realtime: bool = False,
    config: Mapping[str, Any] | None = None,
    reconnect: ReconnectPolicy | None = None,
    timeout: float | None = None,
    keyterms: Sequence[str] | None = None,
) -> list[Final]:
    """Stream a file (as fast as the server allows, or in real time) and return its finals.
    ``keyterms``: words to bias decoding towards (each final's ``keyterms_matched``)."""

    async def run() -> list[Final]:
        async with async_connect(
            url, device_id, token=token, config=config, reconnect=reconnect, keyterms=keyterms
        ) as stream:
            await stream.send_file(path, realtime=realtime)
            await stream.close()
            return await stream.finals()

    async def bounded() -> list[Final]:
        return await asyncio.wait_for(run(), timeout)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="emostt-client") as pool:
        return pool.submit(asyncio.run, bounded()).result()


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="emostt-client", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class SyncStream:
    """The blocking twin of ``Stream``: ``with connect(...) as stream: stream.send(...)``,
    ``for event in stream``. Iteration ends when the session has closed. Leaving the ``with``
    block (or ``shutdown()``) stops the stream's thread."""

    def __init__(self, url: str, device_id: str, **kwargs: Any) -> None:
        self._runner = _LoopThread()

        async def open_stream() -> Stream:
            return await async_connect(url, device_id, **kwargs)

        try:
            self._stream = self._runner.call(open_stream())
        except BaseException:
            self._runner.stop()
            raise

    def send(self, audio: AudioInput) -> None:
        self._runner.call(self._stream.send(audio))

    def send_file(self, path: str | Path, **kwargs: Any) -> float:
        return self._runner.call(self._stream.send_file(path, **kwargs))

    def send_audio(self, audio: npt.NDArray[Any], rate: int, **kwargs: Any) -> float:
        return self._runner.call(self._stream.send_audio(audio, rate, **kwargs))

    def finalize(self) -> None:
        self._runner.call(self._stream.finalize())

    def keepalive(self) -> None:
        self._runner.call(self._stream.keepalive())

    def configure(self, **fields: Any) -> None:
        self._runner.call(self._stream.configure(**fields))

    def recv(self, timeout: float | None = None) -> Event:
        """The next event; ``StreamClosedError`` after the last one, ``TimeoutError`` after ``timeout``."""
        try:
            return self._runner.call(self._stream.recv(timeout))
        except asyncio.TimeoutError:
            raise TimeoutError(f"no event within {timeout} s") from None

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            return self._runner.call(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def finals(self) -> list[Final]:
        return self._runner.call(self._stream.finals())

    def close(self) -> None:
        """Flush and close (see ``Stream.close``); the remaining events stay readable."""
        self._runner.call(self._stream.close())

    def abort(self) -> None:
        """Drop the connection now, without waiting for finals."""
        self._runner.call(self._stream.abort())

    def shutdown(self) -> None:
        """Drop the connection if still open and stop the stream's thread (``with`` does this)."""
        if not self._runner.loop.is_closed():
            try:
                self._runner.call(self._stream.abort())
            finally:
                self._runner.stop()

    @property
    def ready(self) -> Ready | None:
        return self._stream.ready

    @property
    def close_code(self) -> int | None:
        return self._stream.close_code

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.close()
        finally:
            self.shutdown()


def connect(url: str, device_id: str, **kwargs: Any) -> SyncStream:
    """``emostt_client.connect``, blocking: the same arguments."""
    return SyncStream(url, device_id, **kwargs)
