"""The operators' view: one real server for the metrics, dashboard and alerting-rule checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emostt.inference.engine import Engine
from tests.integration.server import Server, running_server, service_settings
from tests.ops.support import TOKEN


@pytest.fixture(scope="package")
def server(tiny_engine: Engine) -> Iterator[Server]:
    # Auth on, so that a connection with a wrong token is refused (1008) and the refusal panels
    # have data.
    with running_server(service_settings(auth_tokens={TOKEN: "*"}), tiny_engine) as srv:
        yield srv
