"""``tools/reliability.py hostile``: clients that break the rules, against a real ``emostt serve``.

    python tools/reliability.py hostile --model demo

Probes, each bounded in count and time, on 127.0.0.1 only:

- ``realtime_abort``: 50 OpenAI Realtime clients append speech, commit, and reset TCP 0.3 s later
  (while the transcript is decoded and sent). Criteria: no session counted 5 s after the ping
  timeout; every utterance that started is counted in ``emostt_utterances_total``; a new client
  is admitted at the connection limit (set to the number of clients).
- ``stt_abort``: /ws/stt clients vanish mid-utterance and with a final in flight, by reset and by
  silence (only pings notice). Same criteria.
- ``slowloris``: 8 uploads sending a byte every 2 s while a normal file request is made; it must
  be answered 200 within 5 s; every slow upload ends with a refusal.
- ``flac_unknown_length``: a FLAC from a pipe (no length in STREAMINFO) gives "turn left"; a
  2-hour one is refused ``audio_too_long``.
- ``amplification``: four 59-minute silent FLACs (~180 KB each) at once; the server's RSS comes
  back within 10 % of its start; a 2 KB WAV at 1 Hz is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import soundfile as sf
import soxr
from websockets.asyncio.client import ClientConnection, connect

import reliability as rel

SAMPLE = Path(__file__).resolve().parents[1] / "docs" / "samples" / "turn_left.wav"
CLIENTS = 50
PING_S = 2.0
OUTCOMES = ("final", "error", "client_gone", "dropped_gated", "discarded")


def speech() -> np.ndarray:
    audio, rate = sf.read(SAMPLE, dtype="float32")
    audio = soxr.resample(audio, rate, 16_000).astype(np.float32)
    noise = (np.random.default_rng(0).standard_normal(8000) * 10 ** (-65 / 20)).astype(np.float32)
    return np.concatenate([noise, audio, noise, noise])


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def reset(ws: ClientConnection) -> None:
    if not ws.transport.is_closing():
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


def utterances(metrics: dict[str, float]) -> float:
    return sum(rel.by_label(metrics, "emostt_utterances_total").get(o, 0.0) for o in OUTCOMES)


def started_utterances(server: rel.Server) -> int:
    """Utterances started, from the server's ``session closed`` log lines (JSON logs)."""
    total = 0
    for line in server.stderr_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("message") == "session closed":
                total += int(record.get("utterances", 0))
    return total


async def released(server: rel.Server, limit_s: float) -> float | None:
    """Seconds until no session is counted (``/readyz`` and the gauge), or None past ``limit_s``."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() - started < limit_s:
            ready = (await http.get(f"{server.base}/readyz")).json()
            gauge = rel.parse_metrics((await http.get(f"{server.base}/metrics")).text)
            if ready.get("sessions") == 0 and gauge.get("emostt_active_sessions", 0.0) == 0.0:
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.1)
    return None


async def admitted(server: rel.Server) -> bool:
    async with connect(server.ws("after-probe")) as ws:
        return bool(orjson.loads(await ws.recv())["type"] == "ready")


async def realtime_client(server: rel.Server, pcm24: bytes) -> None:
    url = f"ws://{rel.HOST}:{server.port}/v1/realtime?intent=transcription"
    ws = await connect(url, ping_interval=None)
    await ws.recv()
    for i in range(0, len(pcm24), 4800):
        chunk = base64.b64encode(pcm24[i : i + 4800]).decode()
        await ws.send(orjson.dumps({"type": "input_audio_buffer.append", "audio": chunk}).decode())
    await ws.send('{"type": "input_audio_buffer.commit"}')
    await asyncio.sleep(0.3)
    reset(ws)


async def stt_client(
    server: rel.Server, audio: np.ndarray, state: str, vanish: str, i: int
) -> ClientConnection | None:
    """Brings a session to ``state`` and vanishes; a silent client's connection is returned, to be
    dropped on this side once the probe has measured the server's release."""
    ws = await connect(server.ws(f"hostile-{i}"), ping_interval=None, max_size=None)
    await ws.recv()
    data = pcm16(audio if state == "final_in_flight" else audio[: len(audio) // 2])
    for k in range(0, len(data), 3200):
        await ws.send(data[k : k + 3200])
    while orjson.loads(await ws.recv())["type"] != "speech_started":
        pass
    if state == "final_in_flight":
        await ws.send('{"type": "finalize"}')
    if vanish == "reset":
        reset(ws)
        return None
    ws.transport.pause_reading()
    return ws


async def abort_probe(server: rel.Server, name: str, clients: list[Any]) -> dict[str, Any]:
    before = utterances(server.metrics())
    silent = [ws for ws in await asyncio.gather(*clients) if ws is not None]
    release_s = await released(server, 2 * PING_S + 5.0)  # from the moment the last one vanished
    for ws in silent:
        ws.transport.abort()
    ok_admitted = await admitted(server)
    await released(server, 10.0)
    counted = utterances(server.metrics()) - before
    return {"probe": name, "released_s": release_s, "admitted_after": ok_admitted, "counted": counted}


async def slow_upload(server: rel.Server, audio: bytes, byte_every_s: float, limit_s: float) -> str:
    """A multipart upload one byte at a time; the status line the server answered with."""
    boundary = "hostile"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nemostt\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    reader, writer = await asyncio.open_connection(rel.HOST, server.port)
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {rel.HOST}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode())
    started = time.monotonic()
    status = "no answer"
    try:
        for byte in body:
            if time.monotonic() - started > limit_s:
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(asyncio.TimeoutError):
                line = await asyncio.wait_for(reader.readline(), byte_every_s)
                if line:
                    status = line.decode().strip()
                    break
    except (ConnectionError, OSError):
        status = "connection closed"
    finally:
        writer.close()
    return status


async def slowloris_probe(server: rel.Server, wav: bytes) -> dict[str, Any]:
    slow = [asyncio.create_task(slow_upload(server, wav, 2.0, 120.0)) for _ in range(8)]
    await asyncio.sleep(4.0)  # the slow uploads are in flight
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as http:
        files = {"file": ("turn_left.wav", wav, "audio/wav")}
        answer = await http.post(f"{server.base}/v1/audio/transcriptions", data={"model": "x"}, files=files)
    normal_s = round(time.monotonic() - started, 2)
    statuses = await asyncio.gather(*slow)
    return {
        "probe": "slowloris",
        "normal_status": answer.status_code,
        "normal_text": answer.json().get("text") if answer.status_code == 200 else answer.text[:200],
        "normal_s": normal_s,
        "slow_statuses": statuses,
    }


def sox(*args: str, stdout: Path | None = None) -> None:
    with stdout.open("wb") if stdout else contextlib.nullcontext() as out:
        subprocess.run(["sox", *args], check=True, stdout=out)


async def post_file(server: rel.Server, path: Path) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=600) as http:
        with path.open("rb") as f:
            files = {"file": (path.name, f.read(), "application/octet-stream")}
        answer = await http.post(f"{server.base}/v1/audio/transcriptions", data={"model": "x"}, files=files)
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    return answer.status_code, body, round(time.monotonic() - started, 2)


async def files_probe(server: rel.Server, work: Path) -> dict[str, Any]:
    piped, long_piped = work / "piped.flac", work / "two-hours-piped.flac"
    silent, floor = work / "digital-silence.flac", work / "noise-floor.flac"
    sox(str(SAMPLE), "-t", "flac", "-", stdout=piped)  # a pipe: STREAMINFO holds no length
    sox("-n", "-r", "16000", "-c", "1", "-b", "16", "-t", "flac", "-", "trim", "0", "7200", stdout=long_piped)
    # 59 minutes: digital silence (-D: no dither; ~180 KB, the amplification probe) and sox's
    # dithered silence, a noise floor a recording could have (transcribed in full).
    sox("-n", "-D", "-r", "16000", "-c", "1", "-b", "16", str(silent), "trim", "0", "3540")
    sox("-n", "-r", "16000", "-c", "1", "-b", "16", str(floor), "trim", "0", "3540")
    tiny = work / "one-hertz.wav"
    sf.write(tiny, np.zeros(1000, dtype=np.int16), 1, subtype="PCM_16")
    status, body, seconds = await post_file(server, piped)
    long_status, long_body, long_s = await post_file(server, long_piped)
    tiny_status, tiny_body, _ = await post_file(server, tiny)
    four_at_once = {}
    for name, path in (("digital_silence_59min_x4", silent), ("noise_floor_59min_x4", floor)):
        rss_before = server.rss_kib()
        results = await asyncio.gather(*(post_file(server, path) for _ in range(4)))
        await asyncio.sleep(2.0)  # the server frees the decoded audio once the responses are out
        rss_after = server.rss_kib()
        four_at_once[name] = {
            "statuses": [r[0] for r in results],
            "codes": [(r[1].get("error") or {}).get("code") for r in results],
            "seconds": [r[2] for r in results],
            "rss_before_mib": round(rss_before / 1024, 1),
            "rss_peak_mib": round(rel.proc_status_kib(server.pid, "VmHWM") / 1024, 1),
            "rss_after_mib": round(rss_after / 1024, 1),
            "rss_change_pct": round(100 * (rss_after - rss_before) / rss_before, 1),
        }
    return {
        "probe": "files",
        "piped_flac": {"status": status, "text": body.get("text"), "seconds": seconds},
        "two_hour_piped_flac": {
            "status": long_status,
            "code": (long_body.get("error") or {}).get("code"),
            "seconds": long_s,
        },
        "one_hertz_wav": {"status": tiny_status, "code": (tiny_body.get("error") or {}).get("code")},
        **four_at_once,
        "file_sizes_kib": {
            p.name: round(p.stat().st_size / 1024, 1) for p in (piped, long_piped, silent, floor, tiny)
        },
    }


async def run_all(server: rel.Server, work: Path) -> list[dict[str, Any]]:
    audio = speech()
    pcm24 = pcm16(soxr.resample(audio, 16_000, 24_000).astype(np.float32))
    out = [
        await abort_probe(server, "realtime_abort", [realtime_client(server, pcm24) for _ in range(CLIENTS)])
    ]
    for state in ("mid_utterance", "final_in_flight"):
        for vanish in ("reset", "silent"):
            clients = [stt_client(server, audio, state, vanish, i) for i in range(20)]
            out.append(await abort_probe(server, f"stt_abort {state} {vanish}", clients))
    out.append(await slowloris_probe(server, SAMPLE.read_bytes()))
    out.append(await files_probe(server, work))
    return out


def cmd_hostile(args: argparse.Namespace) -> int:
    env = {
        "EMOSTT_WS_PING_INTERVAL_S": str(PING_S),
        "EMOSTT_WS_PING_TIMEOUT_S": str(PING_S),
        "EMOSTT_MAX_CONNECTIONS": str(CLIENTS),
        "EMOSTT_MAX_REALTIME_FACTOR": "100",
        "EMOSTT_BURST_AUDIO_S": "120",
    }
    args.env = [f"{k}={v}" for k, v in env.items()] + list(args.env)
    server = rel.Server(args, "hostile").start()
    try:
        with tempfile.TemporaryDirectory(prefix="emostt-hostile-") as tmp:
            probes = asyncio.run(run_all(server, Path(tmp)))
        started = started_utterances(server)
    finally:
        server.stop()
    aborts = [p for p in probes if p["probe"].endswith(("abort", "reset", "silent"))]
    slow = next(p for p in probes if p["probe"] == "slowloris")
    files = next(p for p in probes if p["probe"] == "files")
    counted = sum(p["counted"] for p in aborts)
    criteria = [
        rel.Criterion(
            f"{p['probe']}: sessions released",
            p["released_s"],
            f"<= {2 * PING_S + 5:.0f} s",
            p["released_s"] is not None,
        )
        for p in aborts
    ]
    criteria += [
        rel.Criterion(
            "new client admitted after every probe",
            all(p["admitted_after"] for p in aborts),
            "yes",
            all(p["admitted_after"] for p in aborts),
        ),
        rel.Criterion(
            "utterances counted = started", f"{counted:.0f} / {started}", "equal", counted == started
        ),
        rel.Criterion(
            "normal upload beside 8 slowloris",
            f"{slow['normal_status']} in {slow['normal_s']} s",
            "200 within 5 s",
            slow["normal_status"] == 200 and slow["normal_s"] <= 5.0,
        ),
        rel.Criterion(
            "piped FLAC",
            f"{files['piped_flac']['status']} {files['piped_flac']['text']!r}",
            "200 'turn left'",
            files["piped_flac"]["status"] == 200 and "turn left" in str(files["piped_flac"]["text"]).lower(),
        ),
        rel.Criterion(
            "2-hour piped FLAC",
            f"{files['two_hour_piped_flac']['status']} {files['two_hour_piped_flac']['code']}",
            "400 audio_too_long",
            files["two_hour_piped_flac"]["code"] == "audio_too_long",
        ),
        rel.Criterion(
            "4 x 59 min digital silence (180 KB each)",
            files["digital_silence_59min_x4"]["codes"],
            "400 audio_too_compressed",
            set(files["digital_silence_59min_x4"]["codes"]) == {"audio_too_compressed"},
        ),
        rel.Criterion(
            "1 Hz WAV",
            files["one_hertz_wav"]["code"],
            "400 unsupported_sample_rate",
            files["one_hertz_wav"]["code"] == "unsupported_sample_rate",
        ),
        *(
            rel.Criterion(
                f"RSS after {name}",
                f"{files[name]['rss_change_pct']} %",
                "<= +10 %",
                files[name]["rss_change_pct"] <= 10.0,
            )
            for name in ("digital_silence_59min_x4", "noise_floor_59min_x4")
        ),
    ]
    figures = [(p["probe"], {k: v for k, v in p.items() if k != "probe"}) for p in probes]
    return rel.finish(args, "hostile", server, criteria, {"probes": probes}, figures)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    hostile = sub.add_parser("hostile", parents=[common], help="clients that vanish, trickle, or amplify")
    hostile.set_defaults(func=cmd_hostile)
