"""What the endpoints share: settings, the batcher, the open sessions. Event-loop only."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from emostt.batching.batcher import Batcher
from emostt.config import Settings
from emostt.inference.engine import ModelInfo
from emostt.policy.retry import ResilientRunner


class Drainable(Protocol):
    def drain(self) -> None:
        """Flush this session's finals, then close it with 1012."""


@dataclass
class AppState:
    settings: Settings
    runner: ResilientRunner | None = None
    batcher: Batcher | None = None
    model: ModelInfo | None = None
    ready: bool = False
    draining: bool = False
    connections: dict[str, Drainable] = field(default_factory=dict)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking sessions (readiness fails), let open ones finish their finals, close them 1012."""
        self.draining = True
        for connection in list(self.connections.values()):
            connection.drain()
        deadline = time.monotonic() + timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
