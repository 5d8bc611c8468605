"""The bench harness: the instant engine behind the real server, reachable only from
tools/bench_server.py; tools/bench_stream.py's front-end measurement end to end (short)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emostt.errors import ModelLoadError
from emostt.inference.instant import INSTANT_TEXT, InstantEngine
from emostt.inference.model_source import resolve_model
from tests.integration.server import pcm16, running_server, service_settings, stream

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_server
import bench_stream

ROOT = Path(__file__).resolve().parents[2]


def test_the_instant_engine_behind_the_real_server(speech_with_pauses: np.ndarray) -> None:
    with running_server(service_settings(), InstantEngine()) as server:
        transcript = asyncio.run(stream(server.ws_url(), pcm16(speech_with_pauses)))
    assert transcript.events[0]["model"]["name"].startswith("instant (bench harness, not a model)")
    finals = transcript.of("final")
    assert len(finals) == 3 and {f["text"] for f in finals} == {INSTANT_TEXT}
    assert transcript.of("partial")


def test_only_the_bench_entry_point_selects_it() -> None:
    with pytest.raises(ModelLoadError):
        resolve_model("instant")  # `emostt serve --model instant`: an unknown model, refused
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, emostt.cli, emostt.server.app, emostt.config; "
            "print('emostt.inference.instant' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert imported == "False"
    for host in ("127.0.0.1", "::1", "localhost"):
        assert bench_server.loopback(host) == host
    for host in ("0.0.0.0", "10.0.0.5", "example.org"):
        with pytest.raises(Exception, match="loopback"):
            bench_server.loopback(host)


@pytest.mark.slow
def test_bench_stream_measures_the_front_end(speech_with_pauses: np.ndarray, tmp_path: Path) -> None:
    # A clip pool as tools/gpu/save_clips.py writes it: the three phrases, cut at the silences.
    pcm = (np.clip(speech_with_pauses, -1, 32767 / 32768) * 32768).astype("<i2")
    bounds = np.array([0, len(pcm) // 3, 2 * len(pcm) // 3, len(pcm)])
    np.savez(tmp_path / "clips.npz", audio=pcm, bounds=bounds)
    profile = (
        ["--profile", str(tmp_path / "profile")]
        if shutil.which("py-spy", path=str(Path(sys.executable).parent))
        else []
    )
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench_stream.py"),
            "--model",
            "instant",
            "--sessions",
            "3",
            "--duration",
            "8",
            "--ramp-s",
            "0.5",
            "--clips",
            str(tmp_path / "clips.npz"),
            "--out",
            str(tmp_path / "out.json"),
            *profile,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert row["utterances"] > 0 and row["missing_finals"] == 0 and not row["errors"]
    lag = row["event_lag_ms"]["all"]
    assert lag["95"] is not None and 0 <= lag["50"] <= lag["95"] < 1000  # front end only: well under a second
    assert "Largest N holding p95 event lag" in done.stdout
    if profile:
        stages = row["stages"]["stages"]
        assert stages["vad"]["cpu_percent"] > 0, row["stages"]


def test_bench_stream_devices_send_their_session_config(
    demo_engine: Any, speech_with_pauses: np.ndarray
) -> None:
    """tools/bench_keyterms.py's streams: a device with keyterms beside one without, on one server."""
    pcm = pcm16(speech_with_pauses)
    logs = [bench_stream.DeviceLog(), bench_stream.DeviceLog()]
    with running_server(service_settings(), demo_engine) as server:
        bench_stream.run_devices(
            [server.ws_url("keyed"), server.ws_url("plain")],
            [(pcm, 3), (pcm, 3)],
            logs,
            [0.0, 0.0],
            [{"keyterms": ["turn left", "zebra"]}, None],
        )
    keyed, plain = logs
    assert keyed.refused is None and plain.refused is None and not keyed.errors + plain.errors
    assert [f["text"] for f in keyed.finals] == [f["text"] for f in plain.finals]
    assert keyed.finals[0]["keyterms_matched"] == ["turn left"]
    assert all("keyterms_matched" not in f for f in plain.finals)
    assert len(keyed.device_latency_s) == len(keyed.finals) == 3


def test_a_refused_config_is_the_devices_refusal(demo_engine: Any, speech_with_pauses: np.ndarray) -> None:
    log = bench_stream.DeviceLog()
    with running_server(service_settings(), demo_engine) as server:
        bench_stream.run_devices(
            [server.ws_url()], [(pcm16(speech_with_pauses), 3)], [log], [0.0], [{"keyterms": ["x" * 65]}]
        )
    assert log.refused == "config: invalid_config" and not log.finals
