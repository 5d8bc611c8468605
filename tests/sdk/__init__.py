"""Tests of the Python SDK (clients/python) against a real server; helpers shared by them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import emostt_client as ec
from prometheus_client import REGISTRY

from tests.integration.server import Server

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
FAST_RETRY = ec.ReconnectPolicy(max_attempts=60, initial_delay=0.05, max_delay=0.25)
E = TypeVar("E")


def base_url(server: Server) -> str:
    return f"ws://{server.base}"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


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
