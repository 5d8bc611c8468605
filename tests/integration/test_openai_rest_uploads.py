"""Uploads to POST /v1/audio/transcriptions against a real server, with raw-socket clients: slow
uploads (slowloris) hold no transcription slot and are cut off by the rate and the deadline, the
bound on bodies being read, each form field's own bound, connections closed after a refusal,
and the schema pages (/docs, /openapi.json) only on an open server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import REGISTRY

from emostt.inference.sensevoice import SenseVoiceEngine
from emostt.transport.openai_upload import FIELD_BYTES, OTHER_FIELD_BYTES
from tests.integration.server import Server, running_server, service_settings

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
KEY = "upload-key"
BOUNDARY = "emostt-upload-test"
MAX_FILE_BYTES = 4 * 1024 * 1024
WINDOW_S = 4.0  # the slow server's rate window: a slowloris is refused at its end of the second one
WAIT_S = 30.0  # bound on every wait: a hang fails the test instead of blocking it


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def slow_server(demo_engine: SenseVoiceEngine) -> Iterator[Server]:
    """Keys configured; 9 bodies read at once; at least 1 KiB/s over each 4 s window after the first."""
    settings = service_settings(
        session_defaults={},
        auth_tokens={KEY: "*"},
        max_file_bytes=MAX_FILE_BYTES,
        max_file_uploads=9,
        file_upload_min_bytes_per_s=1024,
        file_upload_rate_window_s=WINDOW_S,
    )
    with running_server(settings, demo_engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def open_server(demo_engine: SenseVoiceEngine) -> Iterator[Server]:
    """No keys; no rate check, but every body within 2 s."""
    settings = service_settings(
        session_defaults={},
        max_file_bytes=MAX_FILE_BYTES,
        file_upload_min_bytes_per_s=0,
        file_upload_timeout_s=2.0,
    )
    with running_server(settings, demo_engine) as srv:
        yield srv


def form(fields: dict[str, bytes], audio: bytes | None = None) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in fields.items()
    ]
    if audio is not None:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        parts.append(head.encode() + b"Content-Type: audio/wav\r\n\r\n" + audio + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    closed: bool = False  # the server closed the connection after answering
    sent: int = 0  # body bytes the client sent

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = json.loads(self.body)["error"]
        return error


async def _read_answer(reader: asyncio.StreamReader, answer: Answer) -> None:
    """Everything the server sends until it closes the connection (a reset after the answer
    counts as closed: the client may still have been sending)."""
    raw = b""
    try:
        while chunk := await reader.read(65_536):
            raw += chunk
    except ConnectionResetError:
        pass
    answer.closed = True
    head, _, answer.body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    answer.status = int(status.split()[1])
    answer.headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


async def raw_upload(
    server: Server,
    body: bytes,
    *,
    first: int,
    pace_s: float = 0.1,
    length: int | None = None,
    key: str | None = KEY,
    started: asyncio.Event | None = None,
) -> Answer:
    """POST ``body`` on a raw socket: the head and ``first`` bytes at once, then one byte per
    ``pace_s`` (a slowloris) until the server answers, or nothing more when ``pace_s`` is 0.
    ``length``: the Content-Length declared (default: the body's)."""
    host, port = server.base.split(":")
    assert host == "127.0.0.1"
    reader, writer = await asyncio.open_connection(host, int(port))
    head = [
        "POST /v1/audio/transcriptions HTTP/1.1",
        f"Host: {server.base}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {len(body) if length is None else length}",
    ]
    if key:
        head.append(f"Authorization: Bearer {key}")
    answer = Answer(sent=first)
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body[:first])
    reading = asyncio.ensure_future(_read_answer(reader, answer))
    try:
        await writer.drain()
        if started is not None:
            started.set()
        deadline = time.monotonic() + WAIT_S
        while pace_s and not reading.done() and answer.sent < len(body):
            assert time.monotonic() < deadline, "the server never answered the slow upload"
            await asyncio.wait({reading}, timeout=pace_s)
            if not reading.done():
                writer.write(body[answer.sent : answer.sent + 1])
                await writer.drain()
                answer.sent += 1
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server answered and closed while we were sending
    try:
        await asyncio.wait_for(reading, WAIT_S)
    finally:
        writer.close()
    return answer


async def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def uploads_active() -> float:
    return metric("emostt_file_uploads_active")


def connections(server: Server) -> int:
    return len(server.uvicorn_server.server_state.connections)


# -------------------------------------------------------------------------------- slow uploads


def test_slow_uploads_hold_no_slot_and_are_cut_off(slow_server: Server) -> None:
    audio = SAMPLE.read_bytes()
    body = form({"model": b"whisper-1"}, audio)
    refused = {
        r: metric("emostt_file_uploads_refused_total", reason=r) for r in ("too_slow", "too_many_uploads")
    }
    timeouts = metric("emostt_file_requests_total", outcome="upload_timeout")

    async def scenario() -> None:
        # Eight slowloris uploads: the head and the model field, then a byte every 0.1 s (25 B/s).
        slow = [asyncio.ensure_future(raw_upload(slow_server, body, first=120)) for _ in range(8)]
        await wait_until(lambda: uploads_active() == 8, "eight bodies being read")
        # max_file_requests is 4: before, four of these held every slot. A normal request now:
        client = openai.AsyncOpenAI(base_url=f"http://{slow_server.base}/v1", api_key=KEY, max_retries=0)
        async with client:
            began = time.monotonic()
            result = await asyncio.wait_for(
                client.audio.transcriptions.create(file=("a.wav", audio), model="whisper-1"), 5.0
            )
            assert result.text == "turn left" and time.monotonic() - began < 5.0
            assert uploads_active() == 8 and not any(task.done() for task in slow), "still uploading"
            # A ninth slow body fills max_file_uploads (9): the next request is refused before
            # its body is read, and its connection closed.
            started = asyncio.Event()
            slow.append(asyncio.ensure_future(raw_upload(slow_server, body, first=120, started=started)))
            await wait_until(lambda: uploads_active() == 9, "nine bodies being read")
            async with httpx.AsyncClient(base_url=f"http://{slow_server.base}") as plain:
                ready = await plain.get("/readyz", timeout=WAIT_S)
            assert ready.status_code == 200, "file capacity is not readiness (docs/openai.md)"
            full = await raw_upload(slow_server, body, first=len(body), pace_s=0)
            assert (full.status, full.headers["retry-after"], full.closed) == (429, "1", True)
            assert full.error()["code"] == "too_many_uploads" and full.headers["connection"] == "close"
        # Each slow body is refused at the end of its second window (408) and its socket closed.
        answers = await asyncio.wait_for(asyncio.gather(*slow), WAIT_S)
        for answer in answers:
            assert answer.status == 408 and answer.closed and answer.headers["connection"] == "close"
            error = answer.error()
            assert (error["code"], error["param"], error["type"]) == (
                "upload_too_slow",
                "file",
                "invalid_request_error",
            )
            assert answer.sent < len(body)
        await wait_until(lambda: uploads_active() == 0, "no body being read")
        await wait_until(lambda: connections(slow_server) == 0, "every connection closed")

    asyncio.run(scenario())
    assert metric("emostt_file_uploads_refused_total", reason="too_slow") == refused["too_slow"] + 9
    assert (
        metric("emostt_file_uploads_refused_total", reason="too_many_uploads")
        == refused["too_many_uploads"] + 1
    )
    assert metric("emostt_file_requests_total", outcome="upload_timeout") == timeouts + 9


def test_a_body_not_in_by_the_deadline_is_refused_and_closed(open_server: Server) -> None:
    body = form({"model": b"whisper-1"}, SAMPLE.read_bytes())
    before = metric("emostt_file_uploads_refused_total", reason="timeout")
    # Four bytes a second: no rate check on this server, only the 2 s deadline.
    answer = asyncio.run(raw_upload(open_server, body, first=200, pace_s=0.25))
    assert answer.status == 408 and answer.closed and answer.error()["code"] == "upload_timeout"
    assert metric("emostt_file_uploads_refused_total", reason="timeout") == before + 1
    assert uploads_active() == 0


# -------------------------------------------------------------------------------- field bounds


@pytest.mark.parametrize(
    "name",
    [*FIELD_BYTES.keys() - {"file"}, "known_speaker_names[]"],
)
def test_each_field_over_its_bound_is_refused_naming_it(open_server: Server, name: str) -> None:
    limit = FIELD_BYTES.get(name, OTHER_FIELD_BYTES)
    fields = {"model": "whisper-1", name: "x" * (limit + 1)}
    with SAMPLE.open("rb") as file:
        response = httpx.post(
            f"http://{open_server.base}/v1/audio/transcriptions",
            files={"file": file},
            data=fields,
            timeout=WAIT_S,
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (
        name,
        "string_above_max_length",
        "invalid_request_error",
    )
    assert str(limit) in error["message"]


def test_fields_at_their_bound_are_accepted(open_server: Server) -> None:
    fields = {"model": "m" * FIELD_BYTES["model"], "prompt": "p" * FIELD_BYTES["prompt"], "language": "en"}
    with SAMPLE.open("rb") as file:
        response = httpx.post(
            f"http://{open_server.base}/v1/audio/transcriptions",
            files={"file": file},
            data=fields,
            timeout=WAIT_S,
        )
    assert response.status_code == 200 and response.json()["text"] == "turn left"


def test_a_10_mb_model_field_is_refused_naming_model_before_it_is_read(open_server: Server) -> None:
    """The body declares 10 MB and the client sends only its first MiB, then waits: the answer
    comes anyway, so the server never waited for (or buffered) the field."""
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'.encode()
    body = head + b"m" * (10 * 1024 * 1024)
    before = metric("emostt_file_uploads_refused_total", reason="field_too_large")
    answer = asyncio.run(raw_upload(open_server, body, first=1024 * 1024, pace_s=0, key=None))
    assert answer.status == 400 and answer.closed
    assert (answer.error()["param"], answer.error()["code"]) == ("model", "string_above_max_length")
    assert metric("emostt_file_uploads_refused_total", reason="field_too_large") == before + 1


def test_audio_sent_as_a_text_field_is_refused_naming_file(open_server: Server) -> None:
    response = httpx.post(
        f"http://{open_server.base}/v1/audio/transcriptions",
        files={"model": (None, "whisper-1"), "file": (None, SAMPLE.read_bytes())},
        timeout=WAIT_S,
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    assert "file part" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("audio", "code", "param"), [(b"RIFF", "file_too_large", "file"), (None, "request_too_large", None)]
)
def test_a_declared_body_over_the_limit_is_refused_at_the_file_part(
    open_server: Server, audio: bytes | None, code: str, param: str | None
) -> None:
    """Declared larger than the limit: only the fields before the file are read (a field over
    its bound is named, as above), and the connection closes without reading the rest."""
    body = form({"model": b"whisper-1"}, audio)
    if audio is not None:
        body = body[: body.index(audio) + len(audio)]  # the client sends the file's first bytes only
    before = metric("emostt_file_uploads_refused_total", reason="too_large")
    answer = asyncio.run(raw_upload(open_server, body, first=len(body), pace_s=0, length=MAX_FILE_BYTES * 2))
    assert answer.status == 413 and answer.closed and answer.headers["connection"] == "close"
    assert (answer.error()["code"], answer.error()["param"]) == (code, param)
    assert metric("emostt_file_uploads_refused_total", reason="too_large") == before + 1


# -------------------------------------------------------------------------------- schema pages


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_schema_pages_only_on_an_open_server(slow_server: Server, open_server: Server, path: str) -> None:
    assert slow_server.get(path).status_code == 404  # keys configured
    assert open_server.get(path).status_code == 200
