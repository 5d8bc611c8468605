"""A real uvicorn server on a free port, and a real websocket client, for the service tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from emostt.config import Settings
from emostt.inference.engine import Engine
from emostt.server.app import DrainingServer, create_app
from emostt.server.run import server_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base: str
    settings: Settings
    uvicorn_server: uvicorn.Server

    def begin_shutdown(self) -> None:
        """What SIGTERM does: uvicorn stops, after the app drains its sessions."""
        self.uvicorn_server.should_exit = True

    def ws_url(self, device_id: str = "robot-1", query: str = "") -> str:
        return f"ws://{self.base}/ws/stt/{device_id}" + (f"?{query}" if query else "")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://{self.base}{path}", timeout=10)


@contextmanager
def running_server(
    settings: Settings, engine: Engine, fallback: Engine | None = None, port: int | None = None
) -> Iterator[Server]:
    """``port``: a given one, e.g. for a server restarted where its clients reconnect."""
    port = port or free_port()
    app = create_app(settings, engine=engine, fallback=fallback)
    # emostt serve's own uvicorn configuration (message size, protocol pings, graceful shutdown),
    # on a loopback port.
    config = server_config(settings.model_copy(update={"host": "127.0.0.1", "port": port}), app)
    server = DrainingServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield Server(f"127.0.0.1:{port}", settings, server)
    finally:
        server.should_exit = True
        thread.join(30)


def service_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "model": "unused",
        "warmup": False,
        "max_realtime_factor": 100.0,
        "burst_audio_s": 120.0,
        "receive_queue_size": 4096,  # the tests stream faster than real time on purpose
        "idle_timeout_s": 30.0,
        "log_json": False,
        "session_defaults": {"partial_interval_ms": 300, "vad": {"silence_duration_ms": 400}},
    }
    return Settings(**{**base, **overrides})


@dataclass
class Transcript:
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    ready_at: float = 0.0  # monotonic clock: first event received
    closed_at: float = 0.0  # monotonic clock: connection closed

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


async def stream(
    url: str,
    pcm: bytes,
    *,
    chunk_bytes: int = 3200,
    pace_s: float = 0.0,
    messages: list[str | bytes] | None = None,
    close: bool = True,
    headers: dict[str, str] | None = None,
    subprotocols: list[str] | None = None,
    timeout: float = 120.0,
) -> Transcript:
    """Send ``messages`` (or ``pcm`` in chunks), then ``close``; collect events until the server closes."""
    transcript = Transcript()

    async def run() -> None:
        async with connect(
            url,
            additional_headers=headers,
            subprotocols=subprotocols,
            max_size=None,  # type: ignore[arg-type]
        ) as ws:

            async def reader() -> None:
                try:
                    async for raw in ws:
                        if not transcript.events:
                            transcript.ready_at = time.monotonic()
                        transcript.events.append(orjson.loads(raw))
                except ConnectionClosed:
                    pass
                transcript.closed_at = time.monotonic()

            reading = asyncio.create_task(reader())
            try:
                for message in messages if messages is not None else _chunks(pcm, chunk_bytes):
                    await ws.send(message)
                    if pace_s:
                        await asyncio.sleep(pace_s)
                if close:
                    await ws.send('{"type": "close"}')
            except ConnectionClosed:
                pass
            await reading
            transcript.close_code = ws.close_code
            transcript.close_reason = ws.close_reason or ""

    await asyncio.wait_for(run(), timeout)
    return transcript


def _chunks(pcm: bytes, size: int) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


@contextmanager
def server_on_port(port: int, settings: Settings, engine: Engine) -> Iterator[DrainingServer]:
    """A real server on a given port (a restarted server keeps its port); yields the uvicorn server."""
    with running_server(settings, engine, port=port) as server:
        yield server.uvicorn_server
