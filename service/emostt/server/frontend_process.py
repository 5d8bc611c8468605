"""One front-end process of ``emostt serve --frontends N``: the ordinary app on the shared socket,
its model work sent to the model process (frontends.py is that process's side).

Liveness: once uvicorn serves, a task on the event loop writes a heartbeat into the front end's
shared-memory slot every ``BEAT_INTERVAL_S`` (slots.py). It is on the loop, not on a side thread
(uvicorn's own multiprocess supervisor answers its pings from a thread, which a blocked loop does
not stop), so a loop that is blocked, or a process that is stopped, stops beating and the model
process replaces it. A timestamp rather than a ping message over the pipe: the model process reads
it whenever it looks, with no reader thread in between, so a model process busy loading or
batching never mistakes a late-read ping for a hang, and a front end that died just after its
first beat is still seen to have served.

Start-up: a front end that cannot start (its app's start-up fails, the shared socket cannot be
served, ...) logs one line with the cause and exits with ``STARTUP_FAILURE``; it has never beaten,
so the model process stops the server instead of restarting it (the same every time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from multiprocessing.connection import Connection

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emostt.batching.remote import RemoteBatcher
from emostt.batching.slots import FrontendSlots
from emostt.config import Settings
from emostt.server.app import DrainingServer, create_app
from emostt.server.frontends import STARTUP_FAILURE
from emostt.server.run import server_config

log = logging.getLogger(__name__)

# Beats per second: cheap (one shared-memory write) and fine-grained next to the model process's
# hang timeout (frontends.HANG_TIMEOUT_S), so a late beat or two never looks like a hang.
BEAT_INTERVAL_S = 1.0


class FrontendServer(DrainingServer):
    """The app's server that beats from its event loop once it serves (see the module doc)."""

    def __init__(self, config: uvicorn.Config, slots: FrontendSlots, index: int) -> None:
        super().__init__(config)
        self._slots = slots
        self._index = index
        self._beating: asyncio.Task[None] | None = None  # held: the loop keeps only weak references

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # the app's start-up is done and the socket is served
            self._beating = asyncio.create_task(self._beat(), name="emostt-frontend-beat")

    async def _beat(self) -> None:
        # Until the loop ends: a draining front end beats too (a hang in its drain is caught).
        while True:
            self._slots.beat(self._index)
            await asyncio.sleep(BEAT_INTERVAL_S)


class StartupError:
    """The app with its start-up error noted: uvicorn logs the app's traceback and exits, keeping
    no cause; the front end's one failure line names it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cause: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def noting(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                lines = str(message.get("message", "")).strip().splitlines()
                self.cause = lines[-1] if lines else "the app's start-up failed"
            await send(message)

        await self.app(scope, receive, noting)


def run_frontend(
    settings: Settings, index: int, sock: socket.socket, conn: Connection, slots: FrontendSlots
) -> None:
    """Serve until drained; a front end that cannot start exits with ``STARTUP_FAILURE``."""

    def lost_model_process() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # drain and exit: nothing left to serve

    server: FrontendServer | None = None
    noted: StartupError | None = None
    try:
        remote = RemoteBatcher(conn, index, slots, on_lost=lost_model_process)
        config = server_config(settings, create_app(settings, remote=remote))
        config.load()  # now, so the loaded app can be wrapped; uvicorn does not load it twice
        noted = StartupError(config.loaded_app)
        config.loaded_app = noted
        server = FrontendServer(config, slots, index)
        server.run(sockets=[sock])
    except BaseException as exc:
        if server is not None and server.started:
            raise  # after serving: a crash, which the model process restarts
        cause = noted.cause if noted is not None else None
        # uvicorn has logged the app's traceback (and its own errors); any other error's is here.
        quiet = cause is not None or isinstance(exc, SystemExit)
        log.critical(
            "front end %d failed to start: %s",
            index,
            cause or _describe(exc),
            exc_info=None if quiet else exc,
        )
        sys.exit(STARTUP_FAILURE)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"uvicorn exited with status {exc.code} (its error is logged above)"
    return f"{type(exc).__name__}: {exc}"
