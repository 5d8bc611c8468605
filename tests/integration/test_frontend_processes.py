"""``emostt serve --frontends 2``: the real command, a model process and two front-end
processes on one port, with real WebSocket clients. Sessions on either front end are served by
the one model process; limits, metrics, drain and failures are the whole server's."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emostt.audio import read_audio_file
from tests.integration.server import free_port, pcm16

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
START_TIMEOUT_S = 180


def is_frontend(process: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(process.cmdline())
    except psutil.NoSuchProcess:  # also a zombie: a front end killed, not yet reaped, is none
        return False


@dataclass
class MultiProcessServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://{self.base}{path}", timeout=10)

    def frontends(self) -> list[psutil.Process]:
        return [c for c in psutil.Process(self.proc.pid).children() if is_frontend(c)]

    def connections(self, frontend: psutil.Process) -> int:
        """Client connections this front end has accepted (open WebSockets)."""
        return sum(
            1
            for c in frontend.net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
        )

    def frontend_of(self, ws: ClientConnection) -> int:
        """The pid of the front end holding this client connection."""
        port = ws.local_address[1]
        for frontend in self.frontends():
            if any(c.raddr and c.raddr.port == port for c in frontend.net_connections("tcp")):
                return frontend.pid
        raise AssertionError("no front end holds this connection")

    def metric(self, name: str) -> float:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not exported")


def launch(tmp_path: Path, **env: str) -> MultiProcessServer:
    """``emostt serve --model demo --frontends 2`` with ``env`` (and nothing else of EMOSTT_*)."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EMOSTT_", "PROMETHEUS_"))}
    settings = {
        "EMOSTT_LOG_JSON": "false",
        "EMOSTT_MAX_REALTIME_FACTOR": "100",
        "EMOSTT_BURST_AUDIO_S": "120",
        "EMOSTT_DRAIN_TIMEOUT_S": "20",
        **env,
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "emostt",
                "-v",
                "serve",
                "--model",
                "demo",
                "--frontends",
                "2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env={**clean, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return MultiProcessServer(proc, port, log)


@contextmanager
def multiprocess_server(tmp_path: Path, **env: str) -> Iterator[MultiProcessServer]:
    server = launch(tmp_path, **env)
    proc, log = server.proc, server.log
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"server exited at start:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"not ready in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            )
            try:
                if server.get("/readyz").status_code == 200 and len(server.frontends()) == 2:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for child in psutil.Process().children(recursive=True):
            if is_frontend(child):
                child.kill()


async def open_session(server: MultiProcessServer, device: str) -> ClientConnection:
    ws = await connect(f"ws://{server.base}/ws/stt/{device}", max_size=None)
    ready = orjson.loads(await ws.recv())
    assert ready["type"] == "ready", ready
    return ws


async def sessions_on_both_frontends(
    server: MultiProcessServer, timeout_s: float = 60
) -> list[ClientConnection]:
    """One session on each front end. The kernel picks which process accepts a connection:
    connect until both have one (a front end just started accepts once it is up)."""
    held: dict[int, ClientConnection] = {}
    deadline = time.monotonic() + timeout_s
    while len(held) < 2:
        assert time.monotonic() < deadline, "every connection went to the same front end"
        ws = await open_session(server, f"dev-{len(held)}")
        pid = server.frontend_of(ws)
        if pid in held:
            await ws.close()
            await asyncio.sleep(0.02)  # polling: let the other front end's accept loop run
        else:
            held[pid] = ws
    return list(held.values())


async def finish(
    ws: ClientConnection, pcm: bytes, *, close: bool = True
) -> tuple[list[dict[str, Any]], int | None]:
    """Send the speech (and a close), collect events until the server closes."""
    for i in range(0, len(pcm), 3200):
        await ws.send(pcm[i : i + 3200])
    if close:
        await ws.send('{"type": "close"}')
    events = []
    try:
        async for raw in ws:
            events.append(orjson.loads(raw))
    except ConnectionClosed:
        pass
    return events, ws.close_code


@pytest.fixture(scope="module")
def speech_pcm() -> bytes:
    return pcm16(read_audio_file(SAMPLE))


def test_sessions_on_every_front_end_are_served_by_the_one_model_process(
    tmp_path: Path, speech_pcm: bytes
) -> None:
    with multiprocess_server(tmp_path) as server:

        async def run() -> None:
            sessions = await sessions_on_both_frontends(server)
            assert server.metric("emostt_active_sessions") == 2, "every front end's sessions"
            results = await asyncio.gather(*(finish(ws, speech_pcm) for ws in sessions))
            for events, close_code in results:
                finals = [e for e in events if e["type"] == "final"]
                assert [f["text"] for f in finals] == ["turn left"] and close_code == 1000, events
                assert finals[0]["emotion"]["label"] in finals[0]["emotion"]["scores"]
            assert server.metric('emostt_utterances_total{outcome="final"}') == len(sessions)
            assert server.metric("emostt_batch_size_count") >= 1, "the model process's own metrics"
            assert server.metric("process_cpu_seconds_total") > 0

        asyncio.run(run())
        ready = server.get("/readyz").json()
        assert ready["ready"] and ready["model"]["name"] == "demo" and ready["sessions"] == 0


def test_the_connection_limit_counts_every_front_ends_sessions(tmp_path: Path) -> None:
    with multiprocess_server(tmp_path, EMOSTT_MAX_CONNECTIONS="2") as server:

        async def run() -> None:
            held = [await open_session(server, "a"), await open_session(server, "b")]
            refusals = []
            for i in range(8):  # both front ends get some of these: each must count the other's
                async with connect(f"ws://{server.base}/ws/stt/x{i}") as ws:
                    event = orjson.loads(await ws.recv())
                    await ws.wait_closed()
                    refusals.append((event.get("code"), ws.close_code))
            assert refusals == [("too_many_connections", 1013)] * 8
            for ws in held:
                await ws.close()

        asyncio.run(run())


def test_sigterm_drains_every_front_end_then_the_model_process_exits(
    tmp_path: Path, speech_pcm: bytes
) -> None:
    with multiprocess_server(tmp_path) as server:
        frontends = server.frontends()

        async def run() -> None:
            sessions = await sessions_on_both_frontends(server)
            for ws in sessions:  # speech in progress, no close: the drain must flush it
                for i in range(0, len(speech_pcm), 3200):
                    await ws.send(speech_pcm[i : i + 3200])
            server.proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*(finish(ws, b"", close=False) for ws in sessions))
            for events, close_code in results:
                assert [e["text"] for e in events if e["type"] == "final"] == ["turn left"], events
                assert close_code == 1012, "clients are told to reconnect elsewhere"

        asyncio.run(run())
        assert server.proc.wait(60) == 0
        _gone, alive = psutil.wait_procs(frontends, timeout=10)
        assert not alive


def test_a_front_end_that_dies_is_replaced_and_the_other_keeps_serving(
    tmp_path: Path, speech_pcm: bytes
) -> None:
    with multiprocess_server(tmp_path) as server:

        async def run() -> None:
            sessions = await sessions_on_both_frontends(server)
            killed, survivor = sessions
            victim = psutil.Process(server.frontend_of(killed))
            victim.kill()
            await killed.wait_closed()
            assert killed.close_code == 1006, "the process is gone: no close frame"
            survivors = [survivor]
            results = await asyncio.gather(*(finish(ws, speech_pcm) for ws in survivors))
            assert all([e["text"] for e in ev if e["type"] == "final"] == ["turn left"] for ev, _ in results)
            deadline = time.monotonic() + 60
            while not (
                len(server.frontends()) == 2 and victim.pid not in {f.pid for f in server.frontends()}
            ):
                assert time.monotonic() < deadline, "the front end was not restarted"
                await asyncio.sleep(0.1)
            assert server.metric("emostt_frontend_restarts_total") == 1
            assert server.metric("emostt_active_sessions") == 0, "the dead front end's sessions stop counting"
            replacement = await sessions_on_both_frontends(server)
            results = await asyncio.gather(*(finish(ws, speech_pcm) for ws in replacement))
            assert all([e["text"] for e in ev if e["type"] == "final"] == ["turn left"] for ev, _ in results)

        asyncio.run(run())


async def replaced(server: MultiProcessServer, victim: psutil.Process, timeout_s: float) -> None:
    """Until two front ends run again, the victim not among them (polling, with a deadline)."""
    deadline = time.monotonic() + timeout_s
    while not (len(server.frontends()) == 2 and victim.pid not in {f.pid for f in server.frontends()}):
        assert time.monotonic() < deadline, (
            f"not replaced in {timeout_s} s:\n{server.log.read_text()[-3000:]}"
        )
        await asyncio.sleep(0.1)


def test_a_front_end_whose_event_loop_hangs_is_killed_and_replaced(tmp_path: Path, speech_pcm: bytes) -> None:
    hang_s = 5.0  # the model process's hang timeout, shortened for the test (10 s in service)
    with multiprocess_server(tmp_path, EMOSTT_TEST_FRONTEND_HANG_TIMEOUT_S=str(hang_s)) as server:

        async def run() -> None:
            hung, survivor = await sessions_on_both_frontends(server)
            victim = psutil.Process(server.frontend_of(hung))
            victim.suspend()  # SIGSTOP: the process lives, but its event loop answers nothing
            stopped = time.monotonic()
            # Meanwhile the other front end serves a whole session.
            events, close_code = await finish(survivor, speech_pcm)
            assert [e["text"] for e in events if e["type"] == "final"] == ["turn left"], events
            assert close_code == 1000
            await asyncio.wait_for(hung.wait_closed(), hang_s + 30)
            assert hung.close_code == 1006, "killed: no close frame"
            await replaced(server, victim, 30)
            # The kill came from the hang rule: after the timeout (less the last beat's age, up
            # to the 1 s beat interval), not at once.
            assert time.monotonic() - stopped > hang_s - 1.5
            assert server.metric("emostt_frontend_restarts_total") == 1
            text = server.log.read_text()
            assert re.search(
                r"front end \d: its event loop did not answer for [\d.]+ s \(hung\); killing it", text
            )
            assert re.search(
                r"front end \d was killed: its event loop did not answer .*; restarting it", text
            )
            replacement = await sessions_on_both_frontends(server)
            results = await asyncio.gather(*(finish(ws, speech_pcm) for ws in replacement))
            assert all([e["text"] for e in ev if e["type"] == "final"] == ["turn left"] for ev, _ in results)

        asyncio.run(run())


def test_a_front_end_that_cannot_start_stops_the_server_with_status_3(tmp_path: Path) -> None:
    # A real bad value only the front ends reject: the model process never publishes results,
    # each front end's start-up builds the Redis client, which refuses the port.
    server = launch(tmp_path, EMOSTT_RESULTS_REDIS_URL="redis://127.0.0.1:99999")
    try:
        status = server.proc.wait(START_TIMEOUT_S)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    text = server.log.read_text()
    assert status == 3, text[-3000:]
    assert re.search(r"front end \d failed to start: ValueError: Port out of range 0-65535", text), text
    assert (
        len(re.findall(r"front end \d failed to start \(exited with status 3\); stopping the server", text))
        == 1
    )
    assert "restarting it" not in text, "no restart is spent on a front end that cannot start"


def test_front_ends_exit_when_the_model_process_is_killed(tmp_path: Path) -> None:
    with multiprocess_server(tmp_path) as server:
        frontends = server.frontends()
        server.proc.kill()
        server.proc.wait(10)
        _gone, alive = psutil.wait_procs(frontends, timeout=30)
        assert not alive, "front ends without a model process must not keep the port"
