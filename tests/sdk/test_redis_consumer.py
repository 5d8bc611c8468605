"""clients/python/examples/redis_consumer.py against a real redis-server, on entries written here
the way the server's Redis Streams sink writes them (the JSON event in the field ``event``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "redis_consumer.py"
FINAL = {
    "type": "final",
    "session_id": "s1",
    "seq": 4,
    "utterance_id": "u1",
    "text": "turn left",
    "confidence": 0.9,
    "language": {"label": "en", "scores": {"en": 1.0}},
    "emotion": {"label": "happy", "scores": {"happy": 0.8, "neutral": 0.2}},
    "event": {"label": "speech", "scores": {"speech": 1.0}},
    "mood": {"label": "happy", "scores": {"happy": 0.6, "neutral": 0.4}},
    "gated": False,
    "gate_reasons": [],
    "degraded": False,
    "end_reason": "silence",
    "audio_start_ms": 0,
    "audio_end_ms": 900,
    "latency_ms": 1.0,
}
CHANGED = {
    "type": "emotion_changed",
    "session_id": "s1",
    "seq": 5,
    "from": "neutral",
    "to": "happy",
    "utterance_id": "u1",
    "scores": {"happy": 0.8, "neutral": 0.2},
}
FUTURE = {"type": "something_new", "session_id": "s1", "seq": 6}


def consume(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_help_needs_no_redis_server() -> None:
    done = consume("--help")
    assert done.returncode == 0 and "emostt:results:<device_id>" in done.stdout


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required for the Redis Streams tests (apt-get install redis-server)")
    import redis

    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "redis-server did not start"
                time.sleep(0.02)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def add(url: str, device: str, *events: dict[str, Any]) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    for event in events:
        client.xadd(f"emostt:results:{device}", {"event": json.dumps(event)})
    return client


def test_xread_prints_every_event_parsed(redis_url: str) -> None:
    add(redis_url, "robot-1", FINAL, CHANGED, FUTURE)
    done = consume(redis_url, "robot-1", "--from-start", "--count", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[final u1] 'turn left'  emotion=happy mood=happy language=en event=speech"
        " confidence=0.90 gated=False latency=1.0 ms",
        "[emotion_changed u1] neutral -> happy",
        "[something_new]",
    ]
    as_json = consume(redis_url, "robot-1", "--from-start", "--count", "3", "--json")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [FINAL, CHANGED, FUTURE]


def test_a_consumer_group_acknowledges_what_it_printed(redis_url: str) -> None:
    client = add(redis_url, "robot-2", FINAL, CHANGED)
    key = "emostt:results:robot-2"
    done = consume(redis_url, "robot-2", "--group", "agents", "--from-start", "--count", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["type"] for line in done.stdout.splitlines()] == ["final", "emotion_changed"]
    assert client.xpending(key, "agents")["pending"] == 0
    # The group remembers its position: the next consumer gets only what came after.
    add(redis_url, "robot-2", FUTURE)
    done = consume(redis_url, "robot-2", "--group", "agents", "--consumer", "c2", "--count", "1", "--json")
    assert [json.loads(line) for line in done.stdout.splitlines()] == [FUTURE]
