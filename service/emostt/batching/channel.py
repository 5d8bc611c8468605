"""One end of the pipe between a front-end process and the model process.

Concurrency rules: ``send`` may be called from any thread and never blocks (a sender thread
writes, so neither an event loop nor a model worker waits on a full pipe); received messages
are handed to ``on_message`` on the reader thread, which must not block either. When the
other end goes away (its process exited), ``on_closed`` is called once, on the reader thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

log = logging.getLogger(__name__)


class Channel:
    def __init__(
        self,
        conn: Connection,
        name: str,
        on_message: Callable[[bytes], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._name = name
        self._on_message = on_message
        self._on_closed = on_closed
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._closing = False
        self._reader = threading.Thread(target=self._read, name=f"{name}-recv", daemon=True)
        self._sender = threading.Thread(target=self._send, name=f"{name}-send", daemon=True)

    def start(self) -> None:
        self._reader.start()
        self._sender.start()

    def send(self, data: bytes) -> None:
        if not self._closing:
            self._outbox.put(data)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, then close: the other end sees the pipe closed."""
        self._closing = True
        self._outbox.put(None)
        if self._sender.is_alive():
            self._sender.join(timeout)
        # Wake the reader blocked in recv (closing the fd alone would not on Linux).
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=self._conn.fileno())
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.detach()  # the Connection owns the fd
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout)
        self._conn.close()

    def _read(self) -> None:
        while True:
            try:
                data = self._conn.recv_bytes()
            except (EOFError, OSError):
                break
            try:
                self._on_message(data)
            except Exception:
                # A message that does not decode or a handler bug: this message is lost (its
                # waiter is failed by the handler's owner when the link closes), the link lives.
                log.exception("%s: message dropped", self._name)
        self._closing = True
        self._outbox.put(None)
        self._on_closed()

    def _send(self) -> None:
        while (data := self._outbox.get()) is not None:
            try:
                self._conn.send_bytes(data)
            except OSError:  # the other end is gone; the reader reports it
                self._closing = True
                return
