"""The file endpoint's decoding limits against a real server (the bundled demo model).

A piped encoder's FLAC (length unknown) is transcribed; a 2-hour one is cut at ``max_file_s``
while decoding; digital silence cannot make a small upload an hour of work; the memory budget
of the files in flight refuses with 503 and is given back after every file; and a real
``emostt serve`` process's RSS comes back after four 59-minute silence FLACs at once.
Timings are printed (``-s``), never asserted.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf

from emostt.files.decode import MIN_BYTES_PER_S
from emostt.files.memory import FILE_MEMORY
from emostt.inference.sensevoice import SenseVoiceEngine
from tests.integration.server import Server, running_server, service_settings

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
MAX_FILE_S = 3600.0
START_TIMEOUT_S = 120.0


def unknown_length(flac: bytes) -> bytes:
    """The FLAC a piped encoder writes: STREAMINFO's total samples (and MD5) 0, "unknown"
    (what `sox in.wav -t raw - | sox -t raw ... - -t flac - > piped.flac` gives)."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO first"
    word = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = word.to_bytes(8, "big")
    data[26:42] = bytes(16)
    assert sf.info(io.BytesIO(bytes(data))).frames == 2**63 - 1  # libsndfile's "unknown"
    return bytes(data)


def flac(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="FLAC")
    return buffer.getvalue()


def silence_59_min() -> bytes:
    """The issue's file: 59 minutes of digital silence, 178 KB of FLAC, length unknown."""
    return unknown_length(flac(np.zeros(59 * 60 * 16_000, dtype=np.int16), 16_000))


def post(base: str, data: bytes, name: str = "audio.flac") -> httpx.Response:
    return httpx.post(
        f"http://{base}/v1/audio/transcriptions",
        files={"file": (name, data, "audio/flac")},
        data={"model": "whisper-1"},
        timeout=300,
    )


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def wait_for_budget_release(timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while FILE_MEMORY.held and time.monotonic() < deadline:
        time.sleep(0.05)
    return FILE_MEMORY.held


@pytest.fixture(scope="module")
def server(demo_engine: SenseVoiceEngine) -> Iterator[Server]:
    settings = service_settings(session_defaults={}, max_file_s=MAX_FILE_S)
    with running_server(settings, demo_engine) as srv:
        yield srv


def test_a_flac_from_a_piped_encoder_is_transcribed(server: Server) -> None:
    audio, rate = sf.read(SAMPLE, dtype="int16")
    piped = unknown_length(flac(audio, rate))
    response = post(server.base, piped)
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "turn left"
    assert response.json()["usage"]["seconds"] == pytest.approx(len(audio) / rate, abs=0.01)
    assert wait_for_budget_release() == 0  # the decoded audio is freed with the request


def test_a_two_hour_piped_flac_is_refused_after_at_most_max_file_s_of_decoding(server: Server) -> None:
    rate, seconds = 8_000, 7_200
    audio = np.zeros((seconds, rate), dtype=np.int16)  # a noise floor 1/32 s each second: 1.5 MB
    audio[:, : rate // 32] = np.random.default_rng(0).integers(-1, 2, size=(seconds, rate // 32))
    piped = unknown_length(flac(audio.reshape(-1), rate))
    assert len(piped) > MAX_FILE_S * MIN_BYTES_PER_S, "not refused for its size: for its length"
    FILE_MEMORY.peak = FILE_MEMORY.held
    started = time.perf_counter()
    response = post(server.base, piped)
    elapsed = time.perf_counter() - started
    assert response.status_code == 400, response.text
    assert error_code(response) == "audio_too_long"
    assert "at least 3610 s long" in response.json()["error"]["message"]
    # Decoding stopped at the limit: no more than max_file_s of 16 kHz samples were ever kept.
    assert 0 < FILE_MEMORY.peak <= MAX_FILE_S * 16_000 * 4
    assert wait_for_budget_release() == 0
    print(f"2-hour piped FLAC ({len(piped)} bytes): refused after {elapsed:.2f} s")


@pytest.mark.parametrize("piped", [False, True])
def test_an_hour_of_digital_silence_in_178_kb_is_refused_for_its_size(server: Server, piped: bool) -> None:
    data = silence_59_min()
    known = flac(np.zeros(59 * 60 * 16_000, dtype=np.int16), 16_000)
    FILE_MEMORY.peak = FILE_MEMORY.held
    started = time.perf_counter()
    response = post(server.base, data if piped else known)
    elapsed = time.perf_counter() - started
    assert response.status_code == 400, response.text
    assert error_code(response) == "audio_too_compressed"
    # Stopped at 1 s per MIN_BYTES_PER_S bytes (the header's stated length: before decoding at all).
    assert FILE_MEMORY.peak <= (len(data) / MIN_BYTES_PER_S + 10) * 16_000 * 4
    assert wait_for_budget_release() == 0
    print(f"59 min of silence, {'unknown' if piped else 'stated'} length: refused after {elapsed:.2f} s")


def test_files_over_the_memory_budget_get_503_and_the_budget_comes_back(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = 16_000 * 4  # bytes of decoded audio
    monkeypatch.setattr(FILE_MEMORY, "limit_bytes", 60 * second)
    noise = np.random.default_rng(1).integers(-300, 300, size=30 * 16_000, dtype=np.int16)
    FILE_MEMORY.reserve(40 * second)  # other files in flight
    try:
        response = post(server.base, flac(noise, 16_000))
    finally:
        FILE_MEMORY.release(40 * second)
    assert response.status_code == 503, response.text
    assert error_code(response) == "overloaded"
    assert response.headers["Retry-After"] == "1"
    assert wait_for_budget_release() == 0
    assert post(server.base, flac(noise, 16_000)).status_code == 200
    assert wait_for_budget_release() == 0
    # A file the whole budget could not hold is a 400: retrying would never help.
    response = post(server.base, flac(np.tile(noise, 3), 16_000))
    assert response.status_code == 400 and error_code(response) == "audio_too_long"
    assert wait_for_budget_release() == 0


# --- a real server process: RSS ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_rss_comes_back_after_four_59_minute_silence_flacs_at_once(tmp_path: Path) -> None:
    port = free_port()
    base = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOSTT_", "PROMETHEUS_"))}
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "emostt", "serve", "--model", "demo", "--host", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**env, "EMOSTT_LOG_JSON": "false"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"http://{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        server = psutil.Process(proc.pid)
        # One small file first: what every first request allocates once is not a leak.
        warm = post(base, SAMPLE.read_bytes(), "turn_left.wav")
        assert warm.status_code == 200 and warm.json()["text"] == "turn left"
        files = [silence_59_min() for _ in range(4)]
        start_rss, start_cpu = server.memory_info().rss, sum(server.cpu_times()[:2])
        peak = start_rss
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            answers = [pool.submit(post, base, data) for data in files]
            while not all(answer.done() for answer in answers):
                peak = max(peak, server.memory_info().rss)
                time.sleep(0.02)
        elapsed = time.perf_counter() - started
        codes = [error_code(answer.result()) for answer in answers]
        assert codes == ["audio_too_compressed"] * 4
        time.sleep(0.5)
        end_rss = server.memory_info().rss
        cpu = sum(server.cpu_times()[:2]) - start_cpu
        print(
            f"RSS {start_rss / 1e6:.0f} MB -> peak {peak / 1e6:.0f} MB -> {end_rss / 1e6:.0f} MB "
            f"({(end_rss - start_rss) / start_rss:+.1%}); {elapsed:.1f} s, server CPU {cpu:.1f} s"
        )
        assert abs(end_rss - start_rss) <= 0.10 * start_rss
        assert "Traceback" not in log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
