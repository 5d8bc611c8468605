"""Shared by the operations checks: file locations, required tools, and the traffic to observe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.integration.server import Server, pcm16, stream

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "emostt" / "files" / "prometheus-rules.yaml"
RULES_TESTS = ROOT / "tests" / "ops" / "rules_test.yaml"
DASHBOARD = ROOT / "grafana" / "emostt.json"
DOCS = ROOT / "docs" / "observability.md"

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def require(binary: str) -> str:
    """The path of a Debian ``prometheus`` package binary; a clear failure (never a skip) without it."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/bin")
    if path is None:
        pytest.fail(
            f"{binary} is required for the operations checks: run tools/setup.sh "
            "(it installs Debian's prometheus package)"
        )
    return path


async def exercise(server: Server, speech: np.ndarray) -> None:
    """What an operator's dashboard shows: speech with pauses (finals, partials, every stage), a
    session sending bad messages (error events), and a connection refused at the handshake."""
    # Twice real time: partials come back while each phrase is spoken.
    spoken = await stream(server.ws_url("ops-speaker"), pcm16(speech), pace_s=0.05, headers=AUTH)
    assert len(spoken.of("final")) == 3 and spoken.of("partial"), [e["type"] for e in spoken.events]
    bad = await stream(
        server.ws_url("ops-buggy"), b"", messages=["{not json", '{"type": "bogus"}'], headers=AUTH
    )
    assert [e["code"] for e in bad.of("error")] == ["invalid_message", "unknown_message_type"]
    refused = await stream(
        server.ws_url("ops-intruder"), b"", messages=[], headers={"Authorization": "Bearer wrong"}
    )
    assert refused.close_code == 1008 and refused.of("error")[0]["code"] == "unauthorized"
