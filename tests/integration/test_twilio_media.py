"""Phone calls on /twilio/media, /telnyx/media and /plivo/media against a real server (the bundled
demo model) and a real redis-server: each call streamed as its carrier streams it, the audio
encoded by Pipecat's serializers (``TwilioFrameSerializer``, ``TelnyxFrameSerializer``,
``PlivoFrameSerializer``: real implementations of the formats, 16 kHz PCM to 8 kHz G.711), Twilio's
handshake signed with the ``twilio`` package's ``RequestValidator``.

What a dialogue engine reads is the device's Redis Stream: it holds one final per phrase spoken,
in order, each with an emotion and its scores; the carrier gets nothing back. (The texts are not
asserted: the demo model reads phone audio, docs/BENCHMARKS.md "Phone audio", but gets about one
phrase in seven wrong over the line, and these phrases are cut from a stream; test_phone_audio.py
asserts "turn left" over G.711.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from pipecat.frames.frames import OutputAudioRawFrame
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.serializers.plivo import PlivoFrameSerializer
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.serializers.twilio import TwilioFrameSerializer
from prometheus_client import REGISTRY
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emostt.config import Settings
from emostt.inference.engine import Engine
from emostt.transport.twilio_media import signed_urls
from emostt.vocabulary.labels import EMOTION_LABELS
from tests.integration.redis_server import RedisServer
from tests.integration.server import Server, pcm16, running_server, service_settings

AUTH_TOKEN = "12345678901234567890123456789012"  # a Twilio Auth Token's shape
ACCOUNT = "AC" + "a" * 32
CALL_SID = "CA" + "0123456789abcdef" * 2
STREAM_SID = "MZ" + "fedcba9876543210" * 2
CHUNK_16K = 640  # 20 ms of 16 kHz PCM16: what Twilio sends per media message, at 8 kHz


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def phone_settings(redis: RedisServer, **overrides: Any) -> Settings:
    return service_settings(results_redis_url=redis.url, **overrides)


@pytest.fixture(scope="module")
def signed_server(demo_engine: Engine, redis_server: RedisServer) -> Iterator[Server]:
    with running_server(phone_settings(redis_server, twilio_auth_token=AUTH_TOKEN), demo_engine) as server:
        yield server


def stream_events(redis: RedisServer, device_id: str) -> list[dict[str, Any]]:
    entries = redis.client().xrange(f"emostt:results:{device_id}")
    return [orjson.loads(fields[b"event"]) for _, fields in entries]


def finals_of(redis: RedisServer, device_id: str, count: int) -> list[dict[str, Any]]:
    """The device's finals once ``count`` of them are on its stream."""

    def finals() -> list[dict[str, Any]]:
        return [e for e in stream_events(redis, device_id) if e["type"] == "final"]

    wait_until(lambda: len(finals()) >= count, what=f"{count} finals on {device_id}'s stream")
    return finals()


def assert_call_finals(finals: list[dict[str, Any]], device_id: str, phrases: int) -> None:
    """One final per phrase, in order, each with an emotion label and its scores."""
    assert [f["utterance_id"] for f in finals] == [f"u{n}" for n in range(1, phrases + 1)]
    seqs = [f["seq"] for f in finals]
    assert seqs == sorted(seqs) and len(set(seqs)) == phrases
    assert len({f["session_id"] for f in finals}) == 1
    starts = [f["audio_start_ms"] for f in finals]
    assert starts == sorted(starts)
    for final in finals:
        assert final["device_id"] == device_id
        assert final["emotion"]["label"] in EMOTION_LABELS
        assert set(final["emotion"]["scores"]) <= set(EMOTION_LABELS) and final["emotion"]["scores"]
        assert abs(sum(final["emotion"]["scores"].values()) - 1.0) < 0.01


# -- a call as each carrier streams it -----------------------------------------------------------


async def media_payloads(serializer: FrameSerializer, pcm_16k: bytes) -> list[str]:
    """The base64 G.711 payloads of ``pcm_16k`` as the carrier's serializer encodes them."""
    payloads = []
    for i in range(0, len(pcm_16k), CHUNK_16K):
        frame = OutputAudioRawFrame(audio=pcm_16k[i : i + CHUNK_16K], sample_rate=16_000, num_channels=1)
        serialized = await serializer.serialize(frame)
        if serialized is None:
            continue
        message = json.loads(serialized)
        assert message["event"] in ("media", "playAudio")  # playAudio: Plivo's
        payloads.append(message["media"]["payload"])
    return payloads


async def twilio_call(
    pcm_16k: bytes,
    parameters: dict[str, str],
    *,
    outbound_16k: bytes | None = None,
    stop: bool = True,
) -> list[str]:
    """connected, start, media (inbound, and outbound when given, interleaved as Twilio sends
    them), stop: the messages of Twilio's Media Streams docs, the audio from Pipecat's serializer."""
    serializer = TwilioFrameSerializer(
        stream_sid=STREAM_SID, params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
    )
    # The serializer's media messages are what a server sends Twilio; Twilio's own carry the
    # same payload with the track, chunk and timestamp around it.
    tracks = {"inbound": await media_payloads(serializer, pcm_16k)}
    if outbound_16k is not None:
        outbound = TwilioFrameSerializer(
            stream_sid=STREAM_SID, params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
        )
        tracks["outbound"] = await media_payloads(outbound, outbound_16k)
    start = {
        "accountSid": ACCOUNT,
        "streamSid": STREAM_SID,
        "callSid": CALL_SID,
        "tracks": list(tracks),
        "customParameters": parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    messages = [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": STREAM_SID},
    ]
    for chunk in range(max(len(p) for p in tracks.values())):
        for track, payloads in tracks.items():
            if chunk < len(payloads):
                media = {
                    "track": track,
                    "chunk": str(chunk + 1),
                    "timestamp": str(20 * chunk),
                    "payload": payloads[chunk],
                }
                messages.append(
                    {
                        "event": "media",
                        "sequenceNumber": str(len(messages)),
                        "media": media,
                        "streamSid": STREAM_SID,
                    }
                )
    # A key press and a mark (Twilio echoes marks a server sent) carry no audio: skipped.
    dtmf = {"event": "dtmf", "streamSid": STREAM_SID, "dtmf": {"track": "inbound_track", "digit": "1"}}
    mark = {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "greeting"}}
    middle = max(2, len(messages) // 2)  # after start
    messages[middle:middle] = [dtmf, mark]
    if stop:
        stop_body = {"accountSid": ACCOUNT, "callSid": CALL_SID}
        messages.append(
            {
                "event": "stop",
                "sequenceNumber": str(len(messages)),
                "stop": stop_body,
                "streamSid": STREAM_SID,
            }
        )
    return [json.dumps(m) for m in messages]


def twilio_signature(url: str, token: str = AUTH_TOKEN) -> str:
    """What Twilio sends as X-Twilio-Signature for a WebSocket to ``url`` (a GET: no parameters)."""
    return str(RequestValidator(token).compute_signature(url, {}))


async def place_call(
    url: str, messages: list[str], headers: dict[str, str] | None = None, *, hang_up: bool = False
) -> tuple[list[Any], int | None, str]:
    """Stream ``messages`` like a carrier (who reads nothing back but the close), then wait for
    the server's close, or close first (``hang_up``); what came back, and the close code and reason."""
    received: list[Any] = []
    async with connect(url, additional_headers=headers, max_size=None) as ws:  # type: ignore[arg-type]

        async def read() -> None:
            try:
                async for message in ws:
                    received.append(message)
            except ConnectionClosed:
                pass

        reading = asyncio.create_task(read())
        try:
            for n, message in enumerate(messages):
                await ws.send(message)
                if n % 50 == 49:
                    await asyncio.sleep(0.01)  # ahead of real time, within the test server's limits
        except ConnectionClosed:
            pass
        if hang_up:
            await ws.close()
        await asyncio.wait_for(reading, 120)
        return received, ws.close_code, ws.close_reason or ""


# -- Twilio, signed ------------------------------------------------------------------------------


def test_a_signed_twilio_call_puts_its_finals_with_emotion_on_the_devices_stream_in_order(
    signed_server: Server, redis_server: RedisServer, speech_with_pauses: np.ndarray
) -> None:
    url = f"ws://{signed_server.base}/twilio/media"
    calls, errors = (
        metric("emostt_phone_calls_total", carrier="twilio"),
        metric("emostt_utterances_total", outcome="error"),
    )
    closed = metric("emostt_sessions_closed_total", reason="closed")
    messages = asyncio.run(twilio_call(pcm16(speech_with_pauses), {"device_id": "kiosk-7"}))
    received, code, _ = asyncio.run(place_call(url, messages, {"X-Twilio-Signature": twilio_signature(url)}))
    assert received == [], "Twilio gets nothing it does not expect"
    assert code == 1000, "the call's stop ended the session after its finals"
    assert_call_finals(finals_of(redis_server, "kiosk-7", 3), "kiosk-7", phrases=3)
    assert metric("emostt_phone_calls_total", carrier="twilio") == calls + 1
    assert metric("emostt_sessions_closed_total", reason="closed") == closed + 1
    assert metric("emostt_utterances_total", outcome="error") == errors, "every utterance got its final"


@pytest.mark.parametrize("signature", ["another account's", "garbage", "missing"])
def test_a_wrong_or_missing_signature_is_refused_at_the_handshake_and_counted(
    signed_server: Server, signature: str
) -> None:
    url = f"ws://{signed_server.base}/twilio/media"
    headers = {
        "another account's": {"X-Twilio-Signature": twilio_signature(url, "another account's auth token")},
        "garbage": {"X-Twilio-Signature": "not-a-signature"},
        "missing": {},
    }[signature]
    refused = metric("emostt_rejected_connections_total", reason="bad_signature")
    with pytest.raises(InvalidStatus) as refusal:
        asyncio.run(place_call(url, [], headers))
    assert refusal.value.response.status_code == 403
    assert metric("emostt_rejected_connections_total", reason="bad_signature") == refused + 1


def test_a_signature_for_another_url_is_refused(signed_server: Server) -> None:
    url = f"ws://{signed_server.base}/twilio/media"
    headers = {"X-Twilio-Signature": twilio_signature("wss://elsewhere.example.com/twilio/media")}
    with pytest.raises(InvalidStatus):
        asyncio.run(place_call(url, [], headers))


def test_behind_a_tls_proxy_the_wss_url_is_the_signed_one(signed_server: Server) -> None:
    url = f"ws://{signed_server.base}/twilio/media"
    headers = {
        "X-Twilio-Signature": twilio_signature(f"wss://{signed_server.base}/twilio/media"),
        "X-Forwarded-Proto": "https",
    }
    messages = asyncio.run(twilio_call(b"\0" * 3200, {"device_id": "kiosk-8"}))
    received, code, _ = asyncio.run(place_call(url, messages, headers))
    assert received == [] and code == 1000


def _scope_socket(headers: dict[str, str], path: str = "/twilio/media", scheme: str = "ws") -> WebSocket:
    scope = {
        "type": "websocket",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def nothing() -> dict[str, Any]:
        raise AssertionError

    return WebSocket(scope, nothing, nothing)  # type: ignore[arg-type]


def test_the_signed_url_is_rebuilt_from_host_and_scheme_or_the_public_url() -> None:
    plain = _scope_socket({"host": "stt.example.com"})
    assert signed_urls(plain, None) == [
        "ws://stt.example.com/twilio/media",
        "wss://stt.example.com/twilio/media",
    ]
    proxied = _scope_socket({"host": "stt.example.com", "x-forwarded-proto": "https, http"})
    assert signed_urls(proxied, None) == ["wss://stt.example.com/twilio/media"]
    assert signed_urls(plain, "wss://public.example.com/stt/") == [
        "wss://public.example.com/stt/twilio/media"
    ]


# -- Twilio, the usual token rules ---------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(demo_engine: Engine, redis_server: RedisServer) -> Iterator[Server]:
    settings = phone_settings(redis_server, auth_tokens={"tok-kiosk": "kiosk-9", "tok-any": "*"})
    with running_server(settings, demo_engine) as server:
        yield server


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"device_id": "kiosk-9", "token": "tok-kiosk"}, 1000),
        ({"token": "tok-any"}, 1000),  # device call-<callSid>
        ({"device_id": "kiosk-9"}, 1008),
        ({"device_id": "kiosk-1", "token": "tok-kiosk"}, 1008),
        ({"device_id": "kiosk-9", "token": "wrong"}, 1008),
    ],
)
def test_without_a_twilio_token_the_usual_token_rules_apply(
    token_server: Server, parameters: dict[str, str], expected: int
) -> None:
    unauthorized = metric("emostt_rejected_connections_total", reason="unauthorized")
    messages = asyncio.run(twilio_call(b"\0" * 3200, parameters))
    received, code, reason = asyncio.run(place_call(f"ws://{token_server.base}/twilio/media", messages))
    assert received == [] and code == expected
    if expected == 1008:
        assert reason == "unauthorized"
        assert metric("emostt_rejected_connections_total", reason="unauthorized") == unauthorized + 1


# -- both tracks, hang-ups, other carriers ---------------------------------------------------------


@pytest.fixture(scope="module")
def open_server(demo_engine: Engine, redis_server: RedisServer) -> Iterator[Server]:
    with running_server(phone_settings(redis_server), demo_engine) as server:
        yield server


def test_both_tracks_asked_for_are_two_sessions_on_two_streams(
    open_server: Server, redis_server: RedisServer, speech_with_pauses: np.ndarray, speech_16k: np.ndarray
) -> None:
    silence = np.zeros(8000, dtype=np.float32)
    agent = pcm16(np.concatenate([silence, speech_16k * 0.8, silence, silence]))
    messages = asyncio.run(
        twilio_call(pcm16(speech_with_pauses), {"device_id": "desk-2", "tracks": "both"}, outbound_16k=agent)
    )
    received, code, _ = asyncio.run(place_call(f"ws://{open_server.base}/twilio/media", messages))
    assert received == [] and code == 1000
    caller = finals_of(redis_server, "desk-2:inbound", 3)
    assert_call_finals(caller, "desk-2:inbound", phrases=3)
    agent_finals = finals_of(redis_server, "desk-2:outbound", 1)
    assert_call_finals(agent_finals, "desk-2:outbound", phrases=1)
    assert caller[0]["session_id"] != agent_finals[0]["session_id"]


def test_a_call_that_hangs_up_without_stop_still_gets_its_finals(
    open_server: Server, redis_server: RedisServer, speech_with_pauses: np.ndarray
) -> None:
    idle = metric("emostt_sessions_closed_total", reason="idle_timeout")
    messages = asyncio.run(twilio_call(pcm16(speech_with_pauses), {}, stop=False))
    asyncio.run(place_call(f"ws://{open_server.base}/twilio/media", messages, hang_up=True))
    device = f"call-{CALL_SID}"
    assert_call_finals(finals_of(redis_server, device, 3), device, phrases=3)
    assert metric("emostt_sessions_closed_total", reason="idle_timeout") == idle, "ended by the hang-up"


async def telnyx_call(pcm_16k: bytes, encoding: str, stream_id: str, call_control_id: str) -> list[str]:
    serializer = TelnyxFrameSerializer(
        stream_id,
        outbound_encoding=encoding,
        inbound_encoding=encoding,
        params=TelnyxFrameSerializer.InputParams(auto_hang_up=False),
    )
    payloads = await media_payloads(serializer, pcm_16k)
    start = {
        "call_control_id": call_control_id,
        "client_state": "",
        "media_format": {"encoding": encoding, "sample_rate": 8000, "channels": 1},
    }
    messages: list[dict[str, Any]] = [
        {"event": "connected", "version": "1.0.0"},
        {"event": "start", "sequence_number": "1", "start": start, "stream_id": stream_id},
    ]
    for n, payload in enumerate(payloads):
        media = {"track": "inbound", "chunk": str(n + 1), "timestamp": str(20 * n), "payload": payload}
        messages.append(
            {"event": "media", "sequence_number": str(n + 2), "media": media, "stream_id": stream_id}
        )
    messages.append(
        {
            "event": "stop",
            "sequence_number": str(len(messages)),
            "stop": {"call_control_id": call_control_id},
            "stream_id": stream_id,
        }
    )
    return [json.dumps(m) for m in messages]


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA"])
def test_a_telnyx_call_in_either_g711_law(
    open_server: Server, redis_server: RedisServer, speech_with_pauses: np.ndarray, encoding: str
) -> None:
    device = f"telnyx-{encoding.lower()}"
    messages = asyncio.run(telnyx_call(pcm16(speech_with_pauses), encoding, f"stream-{encoding}", "v3:abc"))
    url = f"ws://{open_server.base}/telnyx/media?device_id={device}"
    received, code, _ = asyncio.run(place_call(url, messages))
    assert received == [] and code == 1000
    assert_call_finals(finals_of(redis_server, device, 3), device, phrases=3)


def test_a_telnyx_encoding_without_a_decoder_is_refused_by_name(open_server: Server) -> None:
    refused = metric("emostt_rejected_connections_total", reason="invalid_config")
    start = {
        "call_control_id": "v3:x",
        "media_format": {"encoding": "OPUS", "sample_rate": 16000, "channels": 1},
    }
    messages = [json.dumps({"event": "start", "sequence_number": "1", "start": start, "stream_id": "s"})]
    received, code, reason = asyncio.run(place_call(f"ws://{open_server.base}/telnyx/media", messages))
    assert received == [] and code == 1008 and reason == "invalid_config"
    assert metric("emostt_rejected_connections_total", reason="invalid_config") == refused + 1


def test_a_plivo_call_that_ends_by_closing_its_socket(
    open_server: Server, redis_server: RedisServer, speech_with_pauses: np.ndarray
) -> None:
    async def plivo_call() -> list[str]:
        serializer = PlivoFrameSerializer(
            "plivo-stream", params=PlivoFrameSerializer.InputParams(auto_hang_up=False)
        )
        # Its media messages are playAudio (what a server sends Plivo); Plivo's carry the same
        # base64 µ-law payload.
        payloads = await media_payloads(serializer, pcm16(speech_with_pauses))
        start = {
            "callId": "6f1c2a0e-plivo-call",
            "streamId": "plivo-stream",
            "accountId": "MA123",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        }
        messages = [{"event": "start", "sequenceNumber": 0, "start": start, "extra_headers": "{}"}]
        for n, payload in enumerate(payloads):
            media = {"track": "inbound", "timestamp": str(20 * n), "chunk": n + 1, "payload": payload}
            messages.append(
                {"event": "media", "sequenceNumber": n + 1, "streamId": "plivo-stream", "media": media}
            )
        return [json.dumps(m) for m in messages]

    messages = asyncio.run(plivo_call())
    idle = metric("emostt_sessions_closed_total", reason="idle_timeout")
    url = f"ws://{open_server.base}/plivo/media?device_id=plivo-1"
    received, _, _ = asyncio.run(place_call(url, messages, hang_up=True))
    assert received == []
    assert_call_finals(finals_of(redis_server, "plivo-1", 3), "plivo-1", phrases=3)
    assert metric("emostt_sessions_closed_total", reason="idle_timeout") == idle, "ended by the hang-up"


def test_the_carrier_table_names_the_metric_labels() -> None:
    from emostt.transport.twilio_messages import CARRIER_NAMES
    from emostt.vocabulary.labels import PHONE_CARRIERS

    assert CARRIER_NAMES == PHONE_CARRIERS


def test_malformed_messages_are_counted_and_the_call_goes_on(
    open_server: Server, redis_server: RedisServer, speech_with_pauses: np.ndarray
) -> None:
    invalid = metric("emostt_errors_total", code="invalid_message")
    messages = asyncio.run(twilio_call(pcm16(speech_with_pauses), {"device_id": "desk-5"}))
    bad_media = {"event": "media", "streamSid": STREAM_SID, "media": {"track": "inbound", "payload": "!"}}
    messages[5:5] = ["not json", json.dumps(bad_media), json.dumps({"no": "event"})]
    received, code, _ = asyncio.run(place_call(f"ws://{open_server.base}/twilio/media", messages))
    assert received == [] and code == 1000
    assert metric("emostt_errors_total", code="invalid_message") == invalid + 3
    assert_call_finals(finals_of(redis_server, "desk-5", 3), "desk-5", phrases=3)


def test_a_call_streamed_too_fast_is_closed_by_the_rate_limit(
    demo_engine: Engine, redis_server: RedisServer, speech_with_pauses: np.ndarray
) -> None:
    settings = phone_settings(redis_server, max_realtime_factor=1.0, burst_audio_s=1.0)
    limited = metric("emostt_rejected_connections_total", reason="rate_limited")
    messages = asyncio.run(twilio_call(pcm16(speech_with_pauses), {"device_id": "desk-6"}, stop=False))
    with running_server(settings, demo_engine) as server:
        received, code, reason = asyncio.run(place_call(f"ws://{server.base}/twilio/media", messages))
    assert received == [] and (code, reason) == (1008, "rate_limited")
    assert metric("emostt_rejected_connections_total", reason="rate_limited") == limited + 1


def test_a_draining_server_ends_the_call_after_its_finals(
    demo_engine: Engine, redis_server: RedisServer, speech_with_pauses: np.ndarray
) -> None:
    # The last phrase still open when the drain begins (no trailing silence): it gets its final too.
    speech = speech_with_pauses[: -16_000 + 1600]
    messages = asyncio.run(twilio_call(pcm16(speech), {"device_id": "desk-7"}, stop=False))

    async def call(server: Server) -> tuple[int | None, str]:
        async with connect(f"ws://{server.base}/twilio/media") as ws:
            for message in messages:
                await ws.send(message)
            await asyncio.to_thread(finals_of, redis_server, "desk-7", 2)
            server.begin_shutdown()
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    raise AssertionError("a phone stream gets nothing back")
            return ws.close_code, ws.close_reason

    with running_server(phone_settings(redis_server), demo_engine) as server:
        code, reason = asyncio.run(call(server))
    assert (code, reason) == (1012, "drained")
    assert_call_finals(finals_of(redis_server, "desk-7", 3), "desk-7", phrases=3)
