"""Start-up refuses invalid settings with a one-line message; odd tokens are refused, not crashed on."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from emostt.inference.engine import Engine
from tests.integration.server import Server, running_server, service_settings, stream

SECRET = "sekrit-tökén-42"


def serve(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``emostt serve`` with only the given EMOSTT_* variables; its result and how long it ran."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("EMOSTT_")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "emostt", "serve", "--model", "unused", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - started


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            (),
            {"EMOSTT_MAX_BATCH_SIZE": "0"},
            "emostt: invalid setting max_batch_size (EMOSTT_MAX_BATCH_SIZE): "
            "Input should be greater than or equal to 1",
        ),
        (
            (),
            {"EMOSTT_SESSION_DEFAULTS": '{"vad": {"silnce_duration_ms": 1}}'},
            "emostt: invalid setting session_defaults (EMOSTT_SESSION_DEFAULTS): "
            "session_defaults.vad.silnce_duration_ms: Extra inputs are not permitted",
        ),
        (
            ("--frontends", "0"),
            {},
            "emostt: invalid setting frontend_processes (--frontends): must be 'auto' or a count from 1 "
            "to 64, got '0'",
        ),
        (
            ("--port", "70000"),
            {},
            "emostt: invalid setting port (--port): Input should be less than or equal to 65535",
        ),
        (
            (),
            {"EMOSTT_AUTH_TOKENS": json.dumps({SECRET: "not a device!"})},
            "emostt: invalid setting auth_tokens (EMOSTT_AUTH_TOKENS): auth_tokens: token #1 is bound "
            "to an invalid device id",
        ),
        (
            (),
            {"EMOSTT_TURN_MODEL": "/no/such/smart-turn.onnx"},
            "emostt: invalid setting turn_model (EMOSTT_TURN_MODEL): turn_model: no such file "
            "'/no/such/smart-turn.onnx'",
        ),
    ],
)
def test_invalid_settings_stop_start_up_with_one_line_each(
    args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    proc, elapsed = serve(*args, **env)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr, "a refused token is never echoed"
    assert proc.stdout == ""
    assert elapsed < 60, "refused before any model is loaded"


def test_every_problem_is_reported_not_only_the_first() -> None:
    proc, _ = serve(EMOSTT_MAX_BATCH_SIZE="0", EMOSTT_TARGET_UTILIZATION="1.5", EMOSTT_DEVICE="cuda:x")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert [line.split()[3] for line in lines] == ["device", "target_utilization", "max_batch_size"]


def test_closed_choices_are_refused_by_the_command_line() -> None:
    proc, _ = serve("--backend", "tensorrt")
    assert proc.returncode == 2 and "--backend" in proc.stderr and "Traceback" not in proc.stderr
    proc, _ = serve("--device", "gpu")
    assert proc.returncode == 2 and "--device" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def server(tiny_engine: Engine) -> Iterator[Server]:
    settings = service_settings(auth_tokens={"good-token": "*", "tökén": "robot-1"})
    with running_server(settings, tiny_engine) as srv:
        yield srv


def attempt(
    server: Server, query: str = "", device: str = "robot-1", **kwargs: Any
) -> tuple[int | None, list[str]]:
    """Open a session and close it at once: its close code and its event types (error codes)."""
    transcript = asyncio.run(stream(server.ws_url(device, query=query), b"", messages=[], **kwargs))
    return transcript.close_code, [e.get("code", e["type"]) for e in transcript.events]


def raw_handshake(server: Server, header: bytes) -> tuple[int, list[str], int | None]:
    """A handshake with ``header`` sent as raw bytes (clients refuse to send non-ASCII ones): the HTTP
    status, then the event types (error codes) and close code when the server took the connection."""
    host, port = server.base.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET /ws/stt/robot-1 HTTP/1.1\r\nHost: " + server.base.encode() + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: "
            + key
            + b"\r\nSec-WebSocket-Version: 13\r\n"
            + header
            + b"\r\n\r\n"
        )
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        while reader.readline() not in (b"\r\n", b""):
            pass
        if status != 101:
            return status, [], None
        events: list[str] = []
        while True:  # server frames: unmasked, unfragmented
            opcode, length = reader.read(2)
            if length & 0x7F == 126:
                size = struct.unpack("!H", reader.read(2))[0]
            elif length & 0x7F == 127:
                size = struct.unpack("!Q", reader.read(8))[0]
            else:
                size = length & 0x7F
            payload = reader.read(size)
            if opcode & 0x0F == 0x8:
                return status, events, struct.unpack("!H", payload[:2])[0]
            event = json.loads(payload)
            events.append(event.get("code", event["type"]))
            if event["type"] == "ready":  # taken: nothing more comes until the client speaks
                return status, events, None


@pytest.mark.parametrize(
    "query",
    [
        "token=" + quote("wröng-tökén"),
        "token=" + quote("令牌"),
        "token=%ED%B3%BF",  # the UTF-8 form of a lone surrogate
        "token=%FF%FE",  # not UTF-8 at all
        "token=" + "x" * 8000,
    ],
)
def test_non_ascii_query_token_is_unauthorized(server: Server, query: str) -> None:
    assert attempt(server, query) == (1008, ["unauthorized"])
    assert attempt(server, "token=good-token") == (1000, ["ready"]), "the server keeps serving"


@pytest.mark.parametrize(
    "header",
    [
        "Authorization: Bearer wröng-tökén".encode("latin-1"),
        "Authorization: Bearer wröng-tökén".encode(),
        "Authorization: Bearer 令牌".encode(),
        b"Authorization: Bearer \xed\xb3\xbf\xff",
    ],
)
def test_non_ascii_bearer_header_is_unauthorized(server: Server, header: bytes) -> None:
    assert raw_handshake(server, header) == (101, ["unauthorized"], 1008)
    assert attempt(server, headers={"Authorization": "Bearer good-token"}) == (1000, ["ready"])


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_non_ascii_subprotocol_token_is_refused_by_the_handshake(server: Server, encoding: str) -> None:
    """A subprotocol must be an HTTP token: the WebSocket layer answers 400 before the app sees it."""
    header = "Sec-WebSocket-Protocol: emostt.v1, bearer.wröng-tökén".encode(encoding)
    assert raw_handshake(server, header) == (400, [], None)
    assert attempt(server, subprotocols=["emostt.v1", "bearer.good-token"]) == (1000, ["ready"])


def test_websockets_client_with_non_ascii_bearer_is_unauthorized(server: Server) -> None:
    assert attempt(server, headers={"Authorization": "Bearer wröng-tökén"}) == (1008, ["unauthorized"])
    assert attempt(server, subprotocols=["emostt.v1", "bearer.good-token"]) == (1000, ["ready"])


def test_configured_non_ascii_token_is_matched_as_the_server_reads_it(server: Server) -> None:
    """Query strings are UTF-8 (percent-encoded); header bytes are read as latin-1."""
    assert attempt(server, "token=" + quote("tökén")) == (1000, ["ready"])
    assert raw_handshake(server, "Authorization: Bearer tökén".encode("latin-1")) == (101, ["ready"], None)
    assert attempt(server, "token=" + quote("tökén"), device="robot-2") == (1008, ["unauthorized"])
