"""The connection layer of ``EmosttSTTService``: Pipecat's ``WebsocketService`` hooks. One
connection attempt opens a session (``ready``, then our ``config`` and its answer); the base
class's receive loop reconnects after a close the protocol core retries for a stream that
outlives sessions, and a close it does not is reported as a permanent error."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from emostt_client.protocol import (
    TURN_MODEL_UNAVAILABLE,
    ConfigUpdated,
    Error,
    Ready,
    ServerEvent,
    build_url,
    parse_event,
    reconnects_after,
)
from loguru import logger
from pipecat.services.websocket_service import ReportErrorCallback
from pipecat.utils.errors import ErrorCategory
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.protocol import State

from pipecat_emostt.errors import EmosttRefusedError
from pipecat_emostt.events import EmosttEventFrames
from pipecat_emostt.settings import session_config

__all__ = ["EmosttConnection"]


class EmosttConnection(EmosttEventFrames):
    """Opens, reads and closes the sessions whose events ``EmosttEventFrames`` turns into frames."""

    def __init__(
        self,
        *,
        url: str,
        token: str | None,
        handshake_timeout: float,
        finals_timeout: float,
        reconnect_attempts: int,
        turn_detection: dict[str, Any] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._turn_detection = turn_detection
        self._base_url = url
        self._token = token
        self._handshake_timeout = handshake_timeout
        self._finals_timeout = finals_timeout
        self._reconnect_attempts = max(1, reconnect_attempts)
        self._receive_task: asyncio.Task[None] | None = None
        self._receive_ended = asyncio.Event()
        self._ready: dict[str, Any] | None = None

    async def _connect(self) -> None:
        await super()._connect()
        await self._connect_websocket()
        # Started even when the connection failed: with no socket the receive loop goes
        # straight to the base class's reconnect path (which gives up on permanent errors).
        if self._receive_task is None:
            self._receive_task = self.create_task(self._receive_task_handler(self._report_error))

    async def _disconnect(self) -> None:
        await super()._disconnect()
        if self._receive_task is not None:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._disconnect_websocket()

    async def _connect_websocket(self) -> None:
        """One connection attempt: open, wait for ``ready``, send the config, wait for its answer.

        A refusal (the server's ``error`` event and close) or a timeout is a failed attempt; a
        refusal that retrying cannot fix is reported as permanent, which stops the reconnect loop.
        """
        if self._websocket is not None and self._websocket.state is State.OPEN:
            return
        url = build_url(self._base_url, self._device_id, self.sample_rate)
        websocket: ClientConnection | None = None
        try:
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            websocket = await self._websocket_connect(
                url, additional_headers=headers, open_timeout=self._handshake_timeout
            )
            self._ready = None
            await self._handshake(websocket)
        except EmosttRefusedError as e:
            await self._abandon(websocket)
            await self.push_error(
                error_msg=f"emostt refused the session: {e}"
                + (f" (close {e.close_code})" if e.close_code is not None else ""),
                exception=e,
                category=e.category,
                force_treat_as_permanent=e.permanent,
            )
            await self._call_event_handler("on_connection_error", str(e))
            return
        except Exception as e:
            await self._abandon(websocket)
            await self.push_error(error_msg=f"Unable to connect to emostt at {url}: {e}", exception=e)
            await self._call_event_handler("on_connection_error", str(e))
            return
        self._websocket = websocket
        self._receive_ended = asyncio.Event()
        self._last_error = None
        logger.debug(f"{self}: connected, session {self._ready and self._ready.get('session_id')}")
        await self._call_event_handler("on_connected")

    async def _handshake(self, websocket: ClientConnection) -> None:
        async with asyncio.timeout(self._handshake_timeout):
            event = await self._recv_event(websocket)
            if isinstance(event, Error):
                raise EmosttRefusedError(event.raw, await self._close_code(websocket))
            if not isinstance(event, Ready):
                raise ConnectionError(f"expected ready, got {event.raw.get('type')!r}")
            self._ready = dict(event.raw)
            self._effective_config = dict(event.config)
            config = self._session_config()
            await websocket.send(json.dumps({"type": "config", **config}))
            while True:
                event = await self._recv_event(websocket)
                if isinstance(event, ConfigUpdated):
                    await self._on_session_config(event)
                    return
                if isinstance(event, Error) and event.code == TURN_MODEL_UNAVAILABLE:
                    await self._handle_event(event)  # not a refusal: silence turns go on
                elif isinstance(event, Error):
                    # invalid_config: the session would go on without our config; every
                    # reconnect would be refused the same way. A refusal, and permanent.
                    raise EmosttRefusedError({**event.raw, "retryable": False}, None)

    async def _disconnect_websocket(self) -> None:
        try:
            if self._websocket is not None:
                await self._websocket.close()
        except Exception as e:
            logger.debug(f"{self}: error closing the websocket: {e}")
        finally:
            self._websocket = None
            self._ready = None
            await self._call_event_handler("on_disconnected")

    async def _try_reconnect(
        self, max_retries: int = 3, report_error: ReportErrorCallback | None = None
    ) -> bool:
        # The base class's reconnect loop, with the attempts this service was given.
        return await super()._try_reconnect(max_retries=self._reconnect_attempts, report_error=report_error)

    async def _receive_messages(self) -> None:
        websocket = self._websocket
        if websocket is None or self._ready is None:
            raise ConnectionError(f"{self} is not connected to emostt")
        # A 1000 or 1001 ends this loop without an exception, and the base class reconnects: the
        # protocol core's rule for a stream that outlives sessions. Other closes raise, below.
        try:
            async for message in websocket:
                if isinstance(message, bytes):
                    continue
                try:
                    decoded = json.loads(message)
                except json.JSONDecodeError:
                    logger.warning(f"{self}: not JSON: {message[:200]!r}")
                    continue
                event = parse_event(decoded)
                try:
                    await self._handle_event(event)
                except Exception as e:
                    await self.push_error(
                        error_msg=f"error handling {event.raw.get('type')!r}: {e}",
                        exception=e,
                        category=ErrorCategory.UNKNOWN,
                    )
        except ConnectionClosedError as e:
            code = e.rcvd.code if e.rcvd is not None else None  # None: no close frame, a 1006
            if (
                code is not None
                and not self._disconnecting  # our own close: the base class does not reconnect
                and not reconnects_after(code, requested=False, outlives_sessions=True)
            ):
                reason = e.rcvd.reason if e.rcvd else ""
                error = (
                    dict(self._last_error.raw) if self._last_error else {"code": "closed", "message": reason}
                )
                refusal = EmosttRefusedError({**error, "retryable": False}, code)
                await self.push_error(
                    error_msg=f"emostt closed the session (close {code}): {refusal}",
                    exception=refusal,
                    category=refusal.category,
                    force_treat_as_permanent=True,
                )
            raise
        finally:
            self._ready = None
            self._receive_ended.set()
            if not self._disconnecting:
                await self._end_open_utterances()

    async def _send_keepalive(self, silence: bytes) -> None:
        await self._send_json({"type": "keepalive"})

    def _is_keepalive_ready(self) -> bool:
        return self._is_open()

    async def _close_session(self) -> None:
        """Send ``close`` and wait (``finals_timeout``) for the server's finals and its 1000."""
        if not self._is_open() or self._receive_task is None:
            return
        self._disconnecting = True  # the close that follows is ours: no reconnect
        if await self._send_json({"type": "close"}):
            try:
                await asyncio.wait_for(self._receive_ended.wait(), self._finals_timeout)
            except TimeoutError:
                logger.warning(f"{self}: no close from the server within {self._finals_timeout}s")

    def _session_config(self) -> dict[str, Any]:
        return session_config(self._settings, self._language_code(), self._turn_detection)

    def _is_open(self) -> bool:
        return self._websocket is not None and self._ready is not None and self._websocket.state is State.OPEN

    async def _send_json(self, message: dict[str, Any]) -> bool:
        websocket = self._websocket
        if websocket is None or websocket.state is not State.OPEN:
            return False
        try:
            await websocket.send(json.dumps(message))
        except ConnectionClosed as e:
            logger.debug(f"{self}: {message.get('type')} not sent, the connection closed: {e}")
            return False
        return True

    @staticmethod
    async def _recv_event(websocket: ClientConnection) -> ServerEvent:
        while True:
            try:
                message = await websocket.recv()
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd is not None else None
                raise ConnectionError(f"the server closed the connection ({code}) before ready") from e
            if isinstance(message, str):
                event = json.loads(message)
                if isinstance(event, dict):
                    return parse_event(event)

    @staticmethod
    async def _close_code(websocket: ClientConnection) -> int | None:
        """The close code that follows a refusal (the server closes right after its error)."""
        try:
            await websocket.recv()
        except ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else None
        return None

    async def _abandon(self, websocket: ClientConnection | None) -> None:
        self._ready = None
        if websocket is not None:
            try:
                await websocket.close()
            except Exception as e:
                logger.debug(f"{self}: error closing a failed connection: {e}")
