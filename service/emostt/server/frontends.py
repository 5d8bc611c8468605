"""The server as one model process and several front-end processes (``frontend_processes`` > 1).

Why: one Python process serves about 250 real-time streams per core before its event loop and
VAD thread are the limit (docs/BENCHMARKS.md, "Front-end cost per stream"); a GPU serves far
more. So the connections are spread over front-end processes, each the ordinary app (WebSocket
and REST transports, decoding, resampling, VAD, segmentation, events) with a ``RemoteBatcher``
instead of model workers, and this process owns the model: one ``Batcher`` batches the
utterances of every front end (batching/host.py). docs/engine.md, "Front-end processes".

- Listening: this process binds the port; every front end accepts on the same socket.
- Metrics: prometheus_client multiprocess mode; any front end's /metrics shows the server.
- Readiness and load: the model process's, sent to every front end; open sessions are summed
  over front ends in shared memory, so limits apply to the server, not to each process.
- Signals: the first SIGTERM/SIGINT is passed to every front end, which drains as the
  one-process server does (readiness fails, finals flushed, 1012); the model keeps serving
  until the last front end has exited. A second signal is passed on too: the drain ends now.
  Front ends run in their own process group, so a terminal's Ctrl-C reaches them once, here.
- A front end that dies after serving is restarted; more than ``MAX_RESTARTS`` in
  ``RESTART_WINDOW_S`` ends the server with an error (the orchestrator restarts it). A front end
  whose model process is gone drains and exits.
- Liveness, in the manner of uvicorn's multiprocess supervisor: each front end's event loop beats
  into its shared-memory slot every second once it serves (frontend_process.py); one silent for
  ``HANG_TIMEOUT_S`` (its loop is blocked, or the process is stopped) is killed and replaced
  like one that died.
- A front end that never served (it exited, or did not serve within ``START_TIMEOUT_S``) would
  fail the same way every time: the server stops with ``STARTUP_FAILURE`` (3) instead of spending
  restarts on it. The model loads on a thread meanwhile, so this is known before a long load ends.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import TYPE_CHECKING

from emostt.batching.slots import FrontendSlots
from emostt.config import Settings
from emostt.inference.engine import Engine

if TYPE_CHECKING:
    from emostt.batching.batcher import Batcher

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
# Past the drain timeout, front ends get this long to close their sockets before SIGKILL.
EXIT_MARGIN_S = 15.0
# A front end beats every second. Ten missed beats is no scheduling hiccup: a loop blocked that
# long has already stalled every one of its streams (clients see no events), and WebSocket pings
# (20 s) would soon drop them anyway; a replacement serves the reconnecting clients.
HANG_TIMEOUT_S = 10.0
# Tests only, not a setting: a shorter hang timeout, so a hang test takes seconds.
HANG_TIMEOUT_ENV = "EMOSTT_TEST_FRONTEND_HANG_TIMEOUT_S"
# From spawn to serving takes seconds (imports, the app's start-up); this is for a front end
# stuck in its start-up, with room for a machine busy loading and warming the model.
START_TIMEOUT_S = 120.0
# The server's status when a front end cannot start: uvicorn's own for a server that cannot.
STARTUP_FAILURE = 3


def serve(settings: Settings, count: int, metrics_dir: Path, engine: Engine | None = None) -> int:
    """Run the model process with ``count`` front ends until a signal ends it; the exit status."""
    from emostt.batching.host import BatcherHost
    from emostt.observability import metrics, multiprocess
    from emostt.server.engines import start_batcher

    ctx = multiprocessing.get_context("spawn")
    slots = FrontendSlots(ctx, count)
    sock = _bind(settings)
    host = BatcherHost(slots)
    host.start()
    signals: list[int] = []
    previous = {
        s: signal.signal(s, lambda sig, _f: signals.append(sig)) for s in (signal.SIGTERM, signal.SIGINT)
    }
    frontends: dict[int, SpawnProcess] = {}
    started_at: dict[int, float] = {}
    killed: dict[int, str] = {}  # front ends this process killed, and why
    # Since when this process has watched without a gap: silence is only counted from then, so a
    # pause of the whole server (docker pause, a frozen VM) does not look like every front end hung.
    watching_since = last_round = time.monotonic()
    crashes: deque[float] = deque()
    status = 0
    hang_timeout_s = float(os.environ.get(HANG_TIMEOUT_ENV, HANG_TIMEOUT_S))
    loader = ThreadPoolExecutor(1, thread_name_prefix="emostt-model-load")
    loading: Future[Batcher] | None = None
    batcher: Batcher | None = None

    def start_frontend(index: int) -> None:
        ours, theirs = ctx.Pipe(duplex=True)
        slots.reset(index)
        process = ctx.Process(
            target=frontend_main,
            args=(settings, index, sock, theirs, slots),
            name=f"emostt-frontend-{index}",
        )
        process.start()
        theirs.close()
        host.attach(index, ours)
        frontends[index] = process
        started_at[index] = time.monotonic()

    def check(index: int, process: SpawnProcess, now: float) -> None:
        """Kill a front end that stopped beating, or never started serving."""
        if index in killed:
            return  # killed already, not reaped yet
        beat = slots.last_beat(index)
        if beat is None and not signals and now - started_at[index] > START_TIMEOUT_S:
            killed[index] = f"not serving {START_TIMEOUT_S:.0f} s after it was started"
        elif beat is not None and now - max(beat, watching_since) > hang_timeout_s:
            killed[index] = f"its event loop did not answer for {now - beat:.1f} s (hung)"
        else:
            return
        log.error("front end %d: %s; killing it", index, killed[index])
        process.kill()  # SIGKILL: a blocked loop never runs a SIGTERM handler (a stopped one neither)

    try:
        for index in range(count):
            start_frontend(index)
        log.info("front-end processes started", extra={"frontends": count, "port": settings.port})
        if not signals:
            # On a thread, so the front ends are supervised while the model loads and warms up.
            loading = loader.submit(lambda: asyncio.run(start_batcher(settings, engine)))
        forwarded = 0
        deadline = float("inf")
        while frontends:
            wait([p.sentinel for p in frontends.values()], timeout=0.1)
            if batcher is None and loading is not None and loading.done():
                batcher = loading.result()  # a failed load ends the server, as it always did
                host.serve(batcher)
                log.info(
                    "model process ready", extra={"model": batcher.model.name, "device": batcher.model.device}
                )
            while forwarded < len(signals):  # each signal is passed on once: the second one forces
                forwarded += 1
                deadline = min(deadline, time.monotonic() + settings.drain_timeout_s + EXIT_MARGIN_S)
                log.warning("signal %d: passing it to the front ends", signals[forwarded - 1])
                for process in frontends.values():
                    if process.pid is not None and process.is_alive():
                        os.kill(process.pid, signal.SIGTERM)
            now = time.monotonic()
            if now - last_round > 1.0:  # this process did not run for a while: nor may they have
                watching_since = now
            last_round = now
            for index, process in list(frontends.items()):
                if process.is_alive():
                    check(index, process, now)
                    continue
                process.join()
                del frontends[index]
                if process.pid is not None:
                    multiprocess.mark_dead(process.pid)
                served = slots.last_beat(index) is not None
                slots.reset(index)
                reason = killed.pop(index, None)
                why = f"was killed: {reason}" if reason else f"exited with status {process.exitcode}"
                if signals:
                    continue
                if not served:
                    log.critical(
                        "front end %d failed to start (%s); stopping the server with status %d",
                        index,
                        why,
                        STARTUP_FAILURE,
                    )
                    signals.append(signal.SIGTERM)
                    status = STARTUP_FAILURE
                    continue
                metrics.FRONTEND_RESTARTS.inc()
                crashes.append(now)
                while crashes and now - crashes[0] > RESTART_WINDOW_S:
                    crashes.popleft()
                if len(crashes) > MAX_RESTARTS:
                    log.critical(
                        "front ends keep exiting (%d in %.0f s); stopping", len(crashes), RESTART_WINDOW_S
                    )
                    signals.append(signal.SIGTERM)
                    status = 1
                    continue
                log.error("front end %d %s; restarting it", index, why)
                start_frontend(index)
            if time.monotonic() > deadline:
                for process in frontends.values():
                    log.error("front end %s did not exit in time; killing it", process.name)
                    process.kill()
                deadline = float("inf")
        if batcher is None and loading is not None:
            batcher = loading.result()  # stopped while loading: the load cannot be cut short
        if batcher is not None:
            batcher.stop()
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in frontends.values():
            process.kill()
        loader.shutdown(wait=False)
        host.stop()
        sock.close()
        multiprocess.cleanup(metrics_dir)


def frontend_main(
    settings: Settings, index: int, sock: socket.socket, conn: Connection, slots: FrontendSlots
) -> None:
    """A front-end process (frontend_process.py), in its own process group."""
    from emostt.observability.logging import configure

    os.setpgrp()  # signals come from the model process only (see the module doc)
    configure(json_logs=settings.log_json)
    try:  # here: the model process never imports the app
        from emostt.server.frontend_process import run_frontend
    except Exception as exc:
        log.critical("front end %d failed to start: %s: %s", index, type(exc).__name__, exc, exc_info=exc)
        sys.exit(STARTUP_FAILURE)
    run_frontend(settings, index, sock, conn, slots)


def _bind(settings: Settings) -> socket.socket:
    import uvicorn

    sock = uvicorn.Config(
        "emostt.server.app:app_from_env", host=settings.host, port=settings.port
    ).bind_socket()
    sock.set_inheritable(True)
    return sock
