"""Tests of the Python SDK (clients/python) against a real server; helpers shared by them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import emostt_client as ec
import uvicorn
from prometheus_client import REGISTRY

from emostt.app import DrainingServer, create_app
from emostt.config import Settings
from emostt.inference.engine import Engine
from tests.integration.server import Server

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
FAST_RETRY = ec.ReconnectPolicy(max_attempts=60, initial_delay=0.05, max_delay=0.25)
E = TypeVar("E")


def base_url(server: Server) -> str:
    return f"ws://{server.base}"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextmanager
def server_on_port(port: int, settings: Settings, engine: Engine) -> Iterator[DrainingServer]:
    """tests.integration.server.running_server on a given port (a restarted server keeps its port)."""
    config = uvicorn.Config(
        create_app(settings, engine=engine),
        host="127.0.0.1",
        port=port,
        ws_max_size=settings.max_message_bytes,
        log_level="warning",
        lifespan="on",
    )
    server = DrainingServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(30)


async def next_of(stream: ec.Stream, kind: type[E], timeout: float = 30.0) -> tuple[E, list[ec.Event]]:
    """Read events until one of ``kind`` (within ``timeout`` s): it, and every event read."""
    seen: list[ec.Event] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        event = await stream.recv(timeout=max(left, 0.001))
        seen.append(event)
        if isinstance(event, kind):
            return event, seen


def wait_until(check: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
