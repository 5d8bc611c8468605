#!/usr/bin/env bash
# The whole test suite from a fresh machine: set-up, lint, type check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check service tests tools clients
.venv/bin/ruff format --check service tests tools clients
.venv/bin/mypy
.venv/bin/lint-imports  # the layers (pyproject.toml [tool.importlinter], docs/architecture.md)
.venv/bin/mypy --strict clients/python/src/emostt_client
MYPYPATH=clients/livekit .venv/bin/mypy --strict --explicit-package-bases clients/livekit/livekit/plugins/emostt
.venv/bin/mypy --strict --allow-untyped-calls clients/pipecat/src/pipecat_emostt
.venv/bin/python -m pytest -q "$@"
