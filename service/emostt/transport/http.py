"""Health, readiness and metrics endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from emostt.observability import metrics, multiprocess
from emostt.transport.state import AppState

router = APIRouter()


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.emostt
    return state


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Liveness: fails only when the process cannot recover by itself (a fatal device error, a
    background thread that keeps crashing): the orchestrator should restart it."""
    failure = _state(request).failure()
    if failure:
        return JSONResponse({"status": "failed", "error": failure}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: loaded and warmed, not draining, and (with ``readiness_reports_full``) room
    for one more session. A load balancer then sends new sessions elsewhere; open WebSockets
    are not touched by readiness."""
    state = _state(request)
    readiness = state.readiness()
    capacity = state.batcher.capacity_sessions() if state.batcher else None
    body = {
        "ready": readiness.ready,
        "reason": readiness.refusal.error if readiness.refusal else None,
        "draining": state.draining,
        "full": readiness.full,
        "model": state.model.__dict__ if state.model else None,
        "sessions": state.batcher.open_sessions() if state.batcher else len(state.connections),
        "capacity_sessions": round(capacity, 1) if capacity is not None else None,
        "queue_depth": state.batcher.depth if state.batcher else 0,
        "turn_model": state.turns is not None and not state.turns.failed,
    }
    return JSONResponse(body, status_code=200 if readiness.ready else 503)


@router.get("/metrics")
async def metrics_endpoint(request: Request) -> Response:
    # Readiness is decided when asked, not tracked: set the gauge from the same decision /readyz
    # makes, so a scrape and a probe at the same moment agree.
    metrics.READY.set(1 if _state(request).readiness().ready else 0)
    body = multiprocess.exposition() if multiprocess.enabled() else generate_latest()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
