"""The async client, the blocking wrapper and the CLI against a real server (demo model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import emostt_client as ec
import numpy as np
import pytest
from emostt_client import sync

from emostt.audio import read_audio_file
from tests.conftest import espeak
from tests.integration.server import Server
from tests.sdk import SAMPLE, base_url, next_of

EMOTIONS = {"happy", "sad", "angry", "neutral", "fearful", "disgusted", "surprised", "unknown"}


def check_turn_left(final: ec.Final) -> None:
    assert final.text == "turn left"
    assert final.language.label == "en"
    assert set(final.emotion.scores) == EMOTIONS
    assert abs(sum(final.emotion.scores.values()) - 1) < 1e-6
    assert final.emotion.label == max(final.emotion.scores, key=lambda k: final.emotion.scores[k])
    assert 0 <= final.confidence <= 1
    assert 0 <= final.timings.audio_start_ms < final.timings.audio_end_ms
    assert final.raw["type"] == "final"


async def test_send_file_yields_ready_speech_started_final_in_order(server: Server) -> None:
    async with ec.connect(base_url(server), "robot-1") as stream:
        seconds = await stream.send_file(SAMPLE, realtime=False)
        await stream.close()
        events = [event async for event in stream]
    assert 1.9 < seconds < 2.1  # the file and a second of trailing silence
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Ready" and kinds[1] == "SpeechStarted" and kinds[-1] == "Final", kinds
    assert set(kinds[2:-1]) <= {"Partial"}, kinds
    ready, final = events[0], events[-1]
    assert isinstance(ready, ec.Ready) and ready.device_id == "robot-1" and ready.sample_rate == 16000
    assert isinstance(final, ec.Final)
    check_turn_left(final)
    assert final.end_reason == "silence" and final.utterance_id == "u1"
    assert [e.seq for e in events if not isinstance(e, ec.Reconnected)] == list(range(1, len(events) + 1))
    assert stream.close_code == 1000 and stream.closed


async def test_semantic_turns_with_the_real_turn_model(server: Server, tmp_path: Path) -> None:
    """``turn_detection`` semantic (eagerness low) and a pause inside the turn, in real time:
    an eager end of turn at the pause, resumed, then one final that the turn model ended."""
    fragment, rest = (
        read_audio_file(espeak(text, tmp_path / f"{i}.wav", voice="en-us")) * 0.8  # 16 kHz
        for i, text in enumerate(("and then", "turn left at the door."))
    )
    noise = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32) * 10 ** (-65 / 20)
    turn = np.concatenate([noise[:8000], fragment, noise[: 16000 * 6 // 5], rest, noise])
    turns = ec.TurnDetection("semantic", eagerness="low")
    async with ec.connect(base_url(server), "robot-turns", turn_detection=turns) as stream:
        await stream.send_audio(turn, 16000, trailing_silence_s=0)  # in real time: pauses are the cue
        final, events = await next_of(stream, ec.Final)
        await stream.close()
    config = next(e for e in events if isinstance(e, ec.ConfigUpdated)).config
    assert config["turn_detection"]["type"] == "semantic" and config["turn_detection"]["eagerness"] == "low"
    kinds = [type(e) for e in events if isinstance(e, (ec.EagerEndOfTurn, ec.TurnResumed, ec.Final))]
    assert kinds[:2] == [ec.EagerEndOfTurn, ec.TurnResumed] and kinds[-1] is ec.Final, kinds
    eager = next(e for e in events if isinstance(e, ec.EagerEndOfTurn))
    assert eager.utterance_id == final.utterance_id and 0.5 <= eager.confidence < 0.7
    assert final.end_reason == "turn_model"
    assert final.end_of_turn_confidence is not None and final.end_of_turn_confidence >= 0.7


async def test_float32_arrays_and_finalize_end_the_utterance(server: Server) -> None:
    audio, rate = ec.read_audio(SAMPLE)
    assert audio.dtype == np.float32 and rate == 16000
    async with ec.connect(base_url(server), "robot-2") as stream:
        for start in range(0, len(audio), 1600):
            await stream.send(audio[start : start + 1600])  # 100 ms float32 chunks, no trailing silence
        await stream.finalize()
        final, _ = await next_of(stream, ec.Final)  # before close(): finalize alone ended it
        check_turn_left(final)
        assert final.end_reason == "finalize"
        # int16 arrays and raw bytes are audio too; configure() is answered with the new config.
        await stream.configure(interim_results=False)
        updated, _ = await next_of(stream, ec.ConfigUpdated)
        assert updated.config["interim_results"] is False
        await stream.send((audio * 32767).astype(np.int16))
        await stream.send(b"\x00\x00" * 16000)
        await stream.close()
        finals = await stream.finals()
    assert [f.text for f in finals] == ["turn left"]
    assert finals[0].utterance_id == "u2"


async def test_a_file_at_another_rate_switches_the_session_rate(server: Server, tmp_path: Path) -> None:
    import soundfile
    import soxr

    audio, _ = ec.read_audio(SAMPLE)
    path = tmp_path / "turn_left_48k.flac"  # FLAC: read with soundfile (the [files] extra)
    soundfile.write(path, soxr.resample(audio, 16000, 48000), 48000)
    async with ec.connect(base_url(server), "robot-3") as stream:
        await stream.send_file(path, realtime=False)
        await stream.close()
        events = [event async for event in stream]
    configs = [e for e in events if isinstance(e, ec.ConfigUpdated)]
    assert configs and configs[0].config["sample_rate"] == 48000
    finals = [e for e in events if isinstance(e, ec.Final)]
    assert [f.text for f in finals] == ["turn left"]


def test_sync_transcribe_file(server: Server) -> None:
    finals = sync.transcribe_file(base_url(server), SAMPLE, device_id="robot-4", timeout=60)
    assert len(finals) == 1
    check_turn_left(finals[0])


def test_sync_stream_iterates_events(server: Server) -> None:
    audio, rate = ec.read_audio(SAMPLE)
    with sync.connect(base_url(server), "robot-5") as stream:
        assert stream.ready is not None and stream.ready.sample_rate == 16000
        stream.send_audio(audio, rate, realtime=False, trailing_silence_s=0)
        stream.finalize()
        stream.close()
        events = list(stream)
    assert isinstance(events[0], ec.Ready)
    finals = [e for e in events if isinstance(e, ec.Final)]
    assert [f.text for f in finals] == ["turn left"] and finals[0].end_reason == "finalize"
    assert stream.close_code == 1000


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EMOSTT_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "emostt_client", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_cli_file_prints_events_and_exits_0(server: Server) -> None:
    done = run_cli("file", base_url(server), str(SAMPLE), "--device", "robot-6", "--fast")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["[ready]", "[speech_started]"], lines
    assert lines[-1].startswith("[final u1] 'turn left'  emotion="), lines
    assert " language=en event=" in lines[-1] and " gated=False latency=" in lines[-1]

    done = run_cli("file", base_url(server), str(SAMPLE), "--json", "--speed", "4")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["type"] == "ready" and events[-1]["type"] == "final"
    assert events[-1]["text"] == "turn left"


def test_cli_errors_exit_nonzero(server: Server, tmp_path: Path) -> None:
    missing = run_cli("file", base_url(server), str(tmp_path / "nope.wav"), "--fast")
    assert missing.returncode != 0 and "nope.wav" in missing.stderr
    bad_device = run_cli("file", base_url(server), str(SAMPLE), "--device", "no spaces allowed")
    assert bad_device.returncode == 1 and "invalid device_id" in bad_device.stderr


def test_old_stream_file_script_still_works(server: Server) -> None:
    script = Path(__file__).resolve().parents[2] / "clients" / "python" / "stream_file.py"
    done = subprocess.run(
        [sys.executable, str(script), str(SAMPLE), "--url", base_url(server), "--speed", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    finals = [e for e in map(json.loads, done.stdout.splitlines()) if e["type"] == "final"]
    assert [f["text"] for f in finals] == ["turn left"]


@pytest.mark.parametrize("bad", ["ftp://host", "ws://", "localhost:8000"])
def test_bad_urls_are_refused_before_connecting(bad: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        ec.connect(bad, "robot-1")


FAKE_SOUNDDEVICE = '''
import os, signal, threading, wave

class RawInputStream:
    """Plays a WAV file (then a second of silence) as the microphone, then presses Ctrl-C."""

    def __init__(self, samplerate, channels, dtype, blocksize, callback):
        assert (samplerate, channels, dtype) == (16000, 1, "int16")
        self.blocksize, self.callback = blocksize, callback

    def __enter__(self):
        def record():
            with wave.open(os.environ["FAKE_MIC_WAV"]) as wav:
                pcm = wav.readframes(wav.getnframes()) + bytes(32000)
            step = self.blocksize * 2
            for i in range(0, len(pcm), step):
                self.callback(pcm[i : i + step], self.blocksize, None, None)
            os.kill(os.getpid(), signal.SIGINT)

        self.thread = threading.Thread(target=record)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join()
'''


def test_cli_mic_streams_until_ctrl_c(server: Server, tmp_path: Path) -> None:
    (tmp_path / "sounddevice.py").write_text(FAKE_SOUNDDEVICE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAKE_MIC_WAV": str(SAMPLE)}
    done = subprocess.run(
        [sys.executable, "-m", "emostt_client", "mic", base_url(server), "--device", "robot-7"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "listening" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[ready]" and lines[-1].startswith("[final u1] 'turn left'"), lines


def test_cli_mic_without_sounddevice_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['sounddevice'] = None; from emostt_client.cli import main; sys.exit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "mic", "ws://127.0.0.1:9"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "pip install 'emostt-client[mic]'" in done.stderr
