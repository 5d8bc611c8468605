"""``emostt`` as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from emostt.audio import read_audio_file
from tests.conftest import espeak


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emostt", *args], capture_output=True, text=True, timeout=300
    )


def test_transcribe_json_for_wav_and_stereo_44k_flac(tiny_model_dir: Path, tmp_path: Path) -> None:
    wav = espeak("what time is it", tmp_path / "a.wav")
    mono = read_audio_file(wav)
    flac = tmp_path / "b.flac"
    t_44k = np.interp(np.arange(int(len(mono) * 44100 / 16000)) * 16000 / 44100, np.arange(len(mono)), mono)
    sf.write(flac, np.stack([t_44k, t_44k], axis=1), 44100)
    proc = run_cli(
        "transcribe",
        str(wav),
        str(flac),
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--json",
        "--words",
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout holds nothing but results
    assert [line["file"] for line in lines] == [str(wav), str(flac)]
    for line in lines:
        assert {"text", "language", "emotion", "event", "confidence", "duration_ms", "words"} <= set(line)
        assert abs(sum(line["emotion"]["scores"].values()) - 1) < 1e-6
        assert abs(line["duration_ms"] - len(mono) / 16) <= 2


def test_transcribe_human_output(tiny_model_dir: Path, tmp_path: Path) -> None:
    wav = espeak("hello", tmp_path / "a.wav")
    proc = run_cli("transcribe", str(wav), "--model", str(tiny_model_dir), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{wav}: ")
    assert "emotion" in proc.stdout and "confidence" in proc.stdout


def test_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    proc = run_cli("transcribe", str(tmp_path / "missing.wav"), "--model", str(tmp_path))
    assert proc.returncode == 2
    assert "cannot read audio file" in proc.stderr
    wav = espeak("hello", tmp_path / "a.wav")
    proc = run_cli("transcribe", str(wav), "--model", str(tmp_path / "no-model"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_make_random_writes_a_loadable_dir(tmp_path: Path) -> None:
    proc = run_cli("model", "make-random", str(tmp_path / "m"), "--size", "tiny", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {
        "config.yaml",
        "model.pt",
        "am.mvn",
        "configuration.json",
    }
    wav = espeak("stop", tmp_path / "a.wav")
    proc = run_cli("transcribe", str(wav), "--model", str(tmp_path / "m"), "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr


def test_serve_runs_the_service_and_stops_cleanly_on_sigterm(tiny_model_dir: Path, tmp_path: Path) -> None:
    import signal
    import time

    import httpx

    from tests.integration.server import free_port

    port = free_port()
    env = {**os.environ, "EMOSTT_AUTH_TOKENS": '{"sekrit-42": "*"}', "EMOSTT_WARMUP": "true"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emostt",
            "serve",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["model"]["precision"] == "int8", "int8 is the CPU default"
        import asyncio

        from tests.integration.server import stream

        url = f"ws://127.0.0.1:{port}/ws/stt/robot-1?token=sekrit-42"
        transcript = asyncio.run(stream(url, b"", messages=[]))
        assert transcript.of("ready") and transcript.close_code == 1000
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), stderr[-2000:]
    assert "Application shutdown complete" in stderr
    assert "sekrit-42" not in stderr, "tokens never reach the logs"
    assert '"session_id"' in stderr  # structured JSON lines
