#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: speech tools, a virtualenv in .venv, CPU torch, emostt.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real components the tests run: speech (espeak-ng, sox), Prometheus and promtool, redis-server,
# Chromium (the browser page's test drives it with playwright; never `playwright install`).
# command:package pairs; only what is missing is installed.
apt_packages=()
for pair in espeak-ng:espeak-ng sox:sox promtool:prometheus prometheus:prometheus redis-server:redis-server chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || apt_packages+=("${pair##*:}")
done
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    echo "setup: the tests need these Debian packages: apt-get install ${apt_packages[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel first: a bare `torch` requirement would pull several GB of CUDA packages.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m pip install -q -e "clients/python[files,redis]"  # the SDK (tests/sdk)
# The framework integrations and the real framework packages their tests run against, in one
# resolve (pipecat-ai pins protobuf < 7, soundfile and soxr; all inside emostt's ranges).
.venv/bin/python -m pip install -q -e clients/livekit -e clients/pipecat \
  "livekit-agents==1.8.9" "livekit-plugins-openai==1.8.9" "pipecat-ai==1.14.0"
