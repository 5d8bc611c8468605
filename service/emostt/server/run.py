"""What ``emostt serve`` runs: one process, or a model process with front-end processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from emostt.config import Settings
    from emostt.inference.engine import Engine


def run_server(settings: Settings, engine: Engine | None = None) -> None:
    """What ``emostt serve`` runs, until the server exits. ``engine`` replaces loading
    ``settings.model``; only the bench harness passes one (tools/bench_server.py)."""
    from emostt.observability.logging import configure
    from emostt.server.planning import frontend_processes

    configure(json_logs=settings.log_json)
    device = engine.info.device if engine is not None else settings.device
    count = frontend_processes(device, settings.frontend_processes)
    if count > 1:
        # Before the app (and prometheus_client) is imported: metrics are multiprocess from the start.
        from emostt.observability import multiprocess
        from emostt.server import frontends

        status = frontends.serve(settings, count, multiprocess.enable(), engine)
        if status:
            raise SystemExit(status)
        return
    # Imported once the settings are known to be valid: a refused start-up stays quick.
    from emostt.server.app import DrainingServer, create_app

    DrainingServer(server_config(settings, create_app(settings, engine=engine))).run()


def server_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    """The uvicorn configuration of ``emostt serve`` (one process or each front-end process)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_message_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 10,
    )
