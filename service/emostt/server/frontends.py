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
- A front end that dies is restarted; more than ``MAX_RESTARTS`` in ``RESTART_WINDOW_S`` ends
  the server with an error (the orchestrator restarts it). A front end whose model process
  is gone drains and exits.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from pathlib import Path

from emostt.batching.slots import FrontendSlots
from emostt.config import Settings
from emostt.inference.engine import Engine

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
# Past the drain timeout, front ends get this long to close their sockets before SIGKILL.
EXIT_MARGIN_S = 15.0


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
    crashes: deque[float] = deque()
    status = 0

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

    try:
        for index in range(count):
            start_frontend(index)
        log.info("front-end processes started", extra={"frontends": count, "port": settings.port})
        batcher = asyncio.run(start_batcher(settings, engine)) if not signals else None
        if batcher is not None:
            host.serve(batcher)
            log.info(
                "model process ready", extra={"model": batcher.model.name, "device": batcher.model.device}
            )
        forwarded = 0
        deadline = float("inf")
        while frontends:
            wait([p.sentinel for p in frontends.values()], timeout=0.1)
            while forwarded < len(signals):  # each signal is passed on once: the second one forces
                forwarded += 1
                deadline = min(deadline, time.monotonic() + settings.drain_timeout_s + EXIT_MARGIN_S)
                log.warning("signal %d: passing it to the front ends", signals[forwarded - 1])
                for process in frontends.values():
                    if process.pid is not None and process.is_alive():
                        os.kill(process.pid, signal.SIGTERM)
            for index, process in list(frontends.items()):
                if process.is_alive():
                    continue
                process.join()
                del frontends[index]
                if process.pid is not None:
                    multiprocess.mark_dead(process.pid)
                slots.reset(index)
                if signals:
                    continue
                metrics.FRONTEND_RESTARTS.inc()
                now = time.monotonic()
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
                log.error("front end %d exited with %s; restarting it", index, process.exitcode)
                start_frontend(index)
            if time.monotonic() > deadline:
                for process in frontends.values():
                    log.error("front end %s did not exit in time; killing it", process.name)
                    process.kill()
                deadline = float("inf")
        if batcher is not None:
            batcher.stop()
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in frontends.values():
            process.kill()
        host.stop()
        sock.close()
        multiprocess.cleanup(metrics_dir)


def frontend_main(
    settings: Settings, index: int, sock: socket.socket, conn: Connection, slots: FrontendSlots
) -> None:
    """A front-end process: the app on the shared socket, its model work sent to the parent."""
    from emostt.batching.remote import RemoteBatcher
    from emostt.observability.logging import configure
    from emostt.server.app import DrainingServer, create_app
    from emostt.server.run import server_config

    os.setpgrp()  # signals come from the model process only (see the module doc)
    configure(json_logs=settings.log_json)

    def lost_model_process() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # drain and exit: nothing left to serve

    remote = RemoteBatcher(conn, index, slots, on_lost=lost_model_process)
    server = DrainingServer(server_config(settings, create_app(settings, remote=remote)))
    server.run(sockets=[sock])


def _bind(settings: Settings) -> socket.socket:
    import uvicorn

    sock = uvicorn.Config(
        "emostt.server.app:app_from_env", host=settings.host, port=settings.port
    ).bind_socket()
    sock.set_inheritable(True)
    return sock
