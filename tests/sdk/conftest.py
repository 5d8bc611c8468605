"""The SDK against a real server with the bundled demo model, which reads docs/samples/turn_left.wav."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emostt.inference.engine import Engine
from tests.integration.server import Server, running_server, service_settings


@pytest.fixture(scope="package")
def server(demo_engine: Engine) -> Iterator[Server]:
    with running_server(service_settings(session_defaults={}), demo_engine) as srv:
        yield srv
