"""Background ONNX exports of a real ``emostt serve`` clean up after themselves: the export
child ends with its server however the server ends, two servers of one model export it once,
and the next export removes what a killed one left behind.

Each test generates its own model (its own revision) and cache dir, and finds export
processes by their command line (``export_main`` and that cache dir), so exports of other
tests or servers on this machine are never counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from emostt.inference.modeldir import SIZES, write_model_dir
from emostt.inference.onnx_cache import STAGING_PREFIX, cached_export
from tests.integration.server import free_port

# Together below pytest's per-test timeout (300 s), so a slow start fails with the server's log.
START_TIMEOUT_S = 120.0
EXPORT_TIMEOUT_S = 150.0
# The bound the brief sets: the child must be gone this long after its server.
CHILD_GONE_S = 5.0
EXPORT_STARTED = "started the ONNX export process"


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def model(self) -> dict[str, Any] | None:
        """/readyz's model block, or None while the server does not answer yet."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).json().get("model")
        except (httpx.HTTPError, ValueError):
            return None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start_serve(model: Path, cache: Path, log: Path) -> Serve:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EMOSTT_", "PROMETHEUS_"))}
    env = {**clean, "EMOSTT_ONNX_CACHE_DIR": str(cache), "EMOSTT_LOG_JSON": "false"}
    port = free_port()
    command = [sys.executable, "-m", "emostt", "serve", "--model", str(model), "--device", "cpu"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Serve(proc, port, log)


@pytest.fixture
def servers() -> Iterator[list[Serve]]:
    """Servers a test starts; killed at its end whatever happened."""
    started: list[Serve] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.wait(30)


def export_processes(cache: Path) -> list[psutil.Process]:
    """Live export children that export into ``cache`` (zombies are gone: they run nothing).
    A process an export forks to run a tool carries the export's command line until it execs;
    it is not another export, so children of an export are left out."""
    found: dict[int, tuple[psutil.Process, int]] = {}
    for process in psutil.process_iter():
        try:
            cmdline = " ".join(process.cmdline())
            if (
                "export_main" in cmdline
                and str(cache) in cmdline
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found[process.pid] = (process, process.ppid())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [process for process, parent in found.values() if parent not in found]


def staging(cache: Path) -> list[Path]:
    return list(cache.glob(f"{STAGING_PREFIX}*")) if cache.exists() else []


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float, servers: list[Serve]) -> None:
    """Poll ``condition`` until true; fail with the servers' logs at the deadline or if one exits."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for server in servers:
            assert server.proc.poll() is None, f"server exited while waiting for {what}:\n{server.tail()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s:\n" + "\n".join(
            s.tail() for s in servers
        )
        time.sleep(0.05)


def assert_no_export_within(cache: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while export_processes(cache):
        assert time.monotonic() < deadline, [p.cmdline()[-2:] for p in export_processes(cache)]
        time.sleep(0.05)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model_dir(tmp_path / "model", SIZES["tiny"], seed=7, dither=0.0)


def kill_mid_export(model: Path, cache: Path, log: Path, servers: list[Serve], sig: signal.Signals) -> None:
    """Start a server, signal it while its export child runs, and wait for the server to end."""
    server = start_serve(model, cache, log)
    servers.append(server)
    # Mid-export: the child runs and has its staging dir (the tiny model exports in seconds).
    wait_for(
        "export in progress",
        lambda: bool(export_processes(cache) and staging(cache)),
        START_TIMEOUT_S,
        [server],
    )
    server.proc.send_signal(sig)
    server.proc.wait(60)


def test_the_export_ends_with_its_server_on_sigterm(
    model: Path, tmp_path: Path, servers: list[Serve]
) -> None:
    cache = tmp_path / "cache"
    kill_mid_export(model, cache, tmp_path / "server.log", servers, signal.SIGTERM)
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught.
    assert servers[0].proc.returncode in (0, -signal.SIGTERM), servers[0].tail()
    assert_no_export_within(cache, CHILD_GONE_S)
    assert not [p for p in cache.iterdir() if not p.name.startswith(".")], "the stopped export completed"


def test_the_export_ends_with_its_server_on_sigkill_and_the_next_export_cleans_up(
    model: Path, tmp_path: Path, servers: list[Serve]
) -> None:
    cache = tmp_path / "cache"
    kill_mid_export(model, cache, tmp_path / "first.log", servers, signal.SIGKILL)
    assert_no_export_within(cache, CHILD_GONE_S)
    assert not [p for p in cache.iterdir() if not p.name.startswith(".")], "the killed export completed"

    # The next server exports the model once, and no staging dir is left.
    second = start_serve(model, cache, tmp_path / "second.log")
    servers.append(second)
    wait_for(
        "switch to onnx", lambda: (second.model() or {}).get("backend") == "onnx", EXPORT_TIMEOUT_S, [second]
    )
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert cached_export(entry) is not None
    assert not staging(cache)
    assert not export_processes(cache)


def test_two_servers_started_together_export_once(model: Path, tmp_path: Path, servers: list[Serve]) -> None:
    cache = tmp_path / "cache"
    servers += [start_serve(model, cache, tmp_path / f"server-{i}.log") for i in range(2)]
    seen: set[int] = set()

    def both_on_onnx() -> bool:
        seen.update(p.pid for p in export_processes(cache))
        return all((s.model() or {}).get("backend") == "onnx" for s in servers)

    wait_for("switch to onnx on both servers", both_on_onnx, EXPORT_TIMEOUT_S, servers)
    logs = [s.log.read_text(errors="replace") for s in servers]
    assert sum(log.count(EXPORT_STARTED) for log in logs) == 1, logs
    assert len(seen) == 1
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert cached_export(entry) is not None
    assert not staging(cache)
    for server in servers:
        server.proc.send_signal(signal.SIGTERM)
    for server in servers:
        assert server.proc.wait(60) in (0, -signal.SIGTERM), server.tail()
    assert not export_processes(cache)
