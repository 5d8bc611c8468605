"""The ``/ws/stt/{device_id}`` endpoint: the handshake policy, then the shared session runtime.

No torch here. The connection (sending, limits' close paths) is ``connection.py``; serving the
session (receive loop, consumer, limits, drain) is ``runtime.py``; this adapter only checks the
handshake (token, origin, device id, admission, ``sample_rate`` and ``encoding``) and starts the
session.
"""

from __future__ import annotations

from fastapi import WebSocket
from pydantic import ValidationError

from emostt.errors import validation_problems
from emostt.transport.auth import check_handshake, offered_subprotocols, presented_token
from emostt.transport.connection import Connection
from emostt.transport.runtime import run_session
from emostt.transport.state import AppState
from emostt.vocabulary import CLOSE_POLICY, SAMPLE_RATE
from emostt.vocabulary.session_config import SessionConfig


async def stt_endpoint(websocket: WebSocket, device_id: str) -> None:
    """``/ws/stt/{device_id}``: the handshake checks, then ``run_session``."""
    state: AppState = websocket.app.state.emostt
    settings = state.settings
    conn = Connection(websocket, device_id, state)
    headers = websocket.headers
    token = presented_token(
        headers.get("authorization"),
        offered_subprotocols(headers.get("sec-websocket-protocol")),
        websocket.query_params.get("token"),
    )
    rejection = check_handshake(
        device_id, headers.get("origin"), token, settings.auth_tokens, settings.allowed_origins
    )
    if rejection is not None:
        await conn.reject(CLOSE_POLICY.code, rejection.reason, rejection.message)
        return
    refusal = state.admission()
    if refusal is not None:
        await conn.reject(refusal.code, refusal.error, refusal.message)
        return
    try:
        query = websocket.query_params
        url_format: dict[str, object] = {"sample_rate": int(query.get("sample_rate", str(SAMPLE_RATE)))}
        if "encoding" in query:  # pcm16 (default), mulaw or alaw; anything else is refused by name
            url_format["encoding"] = query["encoding"]
        config = SessionConfig.model_validate({**settings.session_defaults, **url_format})
    except (ValueError, ValidationError) as exc:
        await conn.reject(CLOSE_POLICY.code, "invalid_config", _config_problem(exc))
        return
    await run_session(conn, config)


def _config_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "bad session parameters: " + validation_problems(exc, "config")
    return "bad session parameters: sample_rate must be an integer"
