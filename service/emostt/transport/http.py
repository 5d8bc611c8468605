"""Health, readiness and metrics endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from emostt.transport.state import AppState

router = APIRouter()


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.emostt
    return state


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Liveness: fails only when the process cannot recover (a fatal device error)."""
    state = _state(request)
    fatal = state.runner.fatal_error if state.runner else None
    if fatal:
        return JSONResponse({"status": "fatal", "error": fatal}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the model is loaded and warmed and the server is not draining."""
    state = _state(request)
    body = {
        "ready": state.ready and not state.draining,
        "draining": state.draining,
        "model": state.model.__dict__ if state.model else None,
        "sessions": len(state.connections),
        "queue_depth": state.batcher.depth if state.batcher else 0,
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics")
async def metrics_endpoint() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
