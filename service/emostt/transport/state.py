"""What the endpoints share: settings, the batcher, the open sessions. Event-loop only."""

from __future__ import annotations

from dataclasses import dataclass, field

from emostt.batching.batcher import Batcher
from emostt.config import Settings
from emostt.inference.engine import ModelInfo
from emostt.policy.retry import ResilientRunner


@dataclass
class AppState:
    settings: Settings
    runner: ResilientRunner | None = None
    batcher: Batcher | None = None
    model: ModelInfo | None = None
    ready: bool = False
    draining: bool = False
    connections: set[str] = field(default_factory=set)
