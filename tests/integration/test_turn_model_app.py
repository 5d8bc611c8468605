"""The app's lifespan and the end-of-turn model: started when there is a file, one log line either
way, its state on /readyz, and the handle the sessions use (``state.turns``)."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from emostt.inference.instant import InstantEngine
from emostt.inference.smart_turn import pipecat_turn_model
from emostt.server.app import create_app
from emostt.transport.state import AppState
from tests.integration.server import service_settings


def test_auto_serves_pipecats_file_to_the_sessions(
    speech_16k: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emostt.server.app")
    app = create_app(service_settings(), InstantEngine())
    state: AppState = app.state.emostt
    with TestClient(app) as client:
        assert state.turns is not None and state.turns.path == pipecat_turn_model()
        assert client.get("/readyz").json()["turn_model"] is True
        probability = asyncio.run(state.turns.probability(speech_16k))
        assert 0.0 <= probability <= 1.0
        turns = state.turns
    assert [r.message for r in caplog.records if "end-of-turn" in r.message] == ["end-of-turn model loaded"]
    assert turns.failed is None and not turns._thread.is_alive(), "stopped with the app"


def test_off_means_no_turn_model_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="emostt.server.app")
    app = create_app(service_settings(turn_model="off"), InstantEngine())
    with TestClient(app) as client:
        assert app.state.emostt.turns is None
        assert client.get("/readyz").json()["turn_model"] is False
    (line,) = [r for r in caplog.records if "end-of-turn" in r.message]
    assert line.message == "end-of-turn model off" and line.reason == "turn_model is off"  # type: ignore[attr-defined]
