# syntax=docker/dockerfile:1.7
#
# emostt: one file for GPU and CPU images.
#
#   GPU (default):  docker build -t emostt:gpu .
#   CPU:            docker build -t emostt:cpu \
#                     --build-arg BASE_IMAGE=python:3.12-slim-bookworm --build-arg TORCH_VARIANT=cpu .
#   CPU, slim:      docker build -t emostt:cpu-slim --target slim \
#                     --build-arg BASE_IMAGE=python:3.12-slim-bookworm .
#
# The slim image has no torch and no funasr: it serves exported model dirs (`emostt model export`,
# run by the full image, e.g. the chart's export init container) with the torch-free CPU engine
# (docs/engine.md, "Torch-free CPU serving"; docs/operations.md, "Slim CPU image").
#
# Behind a TLS-intercepting proxy, give pip the proxy's CA as a build secret instead of weakening
# verification:  --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
# Offline torch: mount a directory of wheels into the build and name it in TORCH_FIND_LINKS
# (tools/image_test.sh does this with buildah's --volume).
#
# Any base with a glibc userland and apt works: python3 (>= 3.11) and venv are installed from the
# distribution when the base has none (CUDA runtime images ship no Python).

ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# base: Python, tini, CA certificates and the unprivileged user; shared by every stage.
FROM ${BASE_IMAGE} AS base
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/sh", "-eu", "-c"]
# The apt lists and archives live in cache mounts, so nothing of them lands in a layer. Package
# versions are the base image's distribution's (Ubuntu for CUDA, Debian for slim): pin the base
# by digest for reproducible builds; apt versions cannot be pinned across both.
# $packages is split into words on purpose.
# hadolint ignore=DL3008,SC2086
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean; \
    packages="ca-certificates tini libgomp1"; \
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then \
      packages="$packages python3 python3-venv"; \
    fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    python3 -c "import sys; assert sys.version_info >= (3, 11), sys.version"; \
    groupadd --system --gid 10001 emostt; \
    useradd --system --uid 10001 --gid emostt --home-dir /home/emostt --create-home --shell /usr/sbin/nologin emostt; \
    install -d -o emostt -g emostt -m 0775 /cache
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------------------------------------
# deps: torch and every dependency from pyproject.toml, without the source, so a code change
# reuses this (large) layer.
FROM base AS deps
ARG TORCH_VERSION=2.13.0
# cu128 (CUDA 12.8 wheels) or cpu: the wheel's local version label, pinned exactly
# (torch==2.13.0+cpu), so no other build can satisfy the requirement by accident.
ARG TORCH_VARIANT=cu128
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG TORCH_FIND_LINKS=
RUN python3 -m venv /opt/venv
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip-ca,required=false \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1; \
    ( \
      if [ -n "$TORCH_FIND_LINKS" ]; then \
        export PIP_FIND_LINKS="$TORCH_FIND_LINKS"; \
      else \
        export PIP_INDEX_URL="$TORCH_INDEX_URL" PIP_EXTRA_INDEX_URL=https://pypi.org/simple; \
      fi; \
      pip install "torch==${TORCH_VERSION}+${TORCH_VARIANT}" \
    ); \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /src/requirements.txt; \
    pip install -r /src/requirements.txt; \
    if [ "$TORCH_VARIANT" = "cpu" ]; then \
      python -c "import torch; assert not torch.version.cuda, 'CPU image with a CUDA torch: ' + torch.__version__"; \
    fi

# ---------------------------------------------------------------------------------------------
# deps-slim: the torch-free CPU runtime's dependencies: pyproject.toml's, less the ones
# [tool.emostt.slim-image] names (only the torch engine and the ONNX export use them).
FROM base AS deps-slim
RUN python3 -m venv /opt/venv
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip-ca,required=false \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1; \
    python3 -c "import re, tomllib; \
p = tomllib.load(open('/src/pyproject.toml', 'rb')); slim = p['tool']['emostt']['slim-image']; \
name = lambda r: re.split(r'[^A-Za-z0-9._-]', r, maxsplit=1)[0].lower(); \
deps = p['project']['dependencies']; \
open('/src/requirements.txt', 'w').write('\n'.join(r for r in deps if name(r) not in slim['without'] + slim['no-deps'])); \
open('/src/no-deps.txt', 'w').write('\n'.join(r for r in deps if name(r) in slim['no-deps']))"; \
    pip install -r /src/requirements.txt; \
    pip install --no-deps -r /src/no-deps.txt; \
    python -c "import importlib.util as u; bad = [m for m in ('torch', 'funasr') if u.find_spec(m)]; assert not bad, bad"

# ---------------------------------------------------------------------------------------------
# wheel: the emostt package (with the bundled demo model) as a wheel; needs only a build venv.
FROM base AS wheel
COPY README.md /src/README.md
COPY pyproject.toml /src/pyproject.toml
COPY service /src/service
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip-ca,required=false \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    python3 -m venv /tmp/build; \
    PIP_DISABLE_PIP_VERSION_CHECK=1 /tmp/build/bin/pip wheel --no-deps --wheel-dir /dist /src

# ---------------------------------------------------------------------------------------------
# turn-model: the end-of-turn model, Smart Turn v3.2 (BSD-2-Clause), and its license, taken out of
# the pipecat-ai wheel of this version: only the file (8.7 MB) lands in the image, pipecat is not
# installed. docs/engine.md, "Turn model"; EMOSTT_TURN_MODEL=off at run time turns it off.
FROM base AS turn-model
ARG SMART_TURN_PIPECAT_VERSION=1.14.0
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip-ca,required=false \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    python3 -m venv /tmp/fetch; \
    PIP_DISABLE_PIP_VERSION_CHECK=1 /tmp/fetch/bin/pip download --no-deps --only-binary=:all: --dest /tmp/pipecat \
      "pipecat-ai==${SMART_TURN_PIPECAT_VERSION}"; \
    install -d /opt/emostt/models; \
    python3 -c "import glob, pathlib, zipfile; \
wheel = zipfile.ZipFile(glob.glob('/tmp/pipecat/pipecat_ai-*.whl')[0]); \
out = pathlib.Path('/opt/emostt/models'); \
out.joinpath('smart-turn-v3.2-cpu.onnx').write_bytes(wheel.read('pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx')); \
out.joinpath('smart-turn-LICENSE').write_bytes(wheel.read(next(n for n in wheel.namelist() if n.endswith('.dist-info/licenses/LICENSE'))))"; \
    rm -rf /tmp/pipecat /tmp/fetch

# ---------------------------------------------------------------------------------------------
# app: what both runtime images share: the turn model, the environment, the volume, the
# healthcheck and the entrypoint. The final stages add a venv and the package (copied, not
# bind-mounted: buildah cannot bind-mount a stage it took from its layer cache).
FROM base AS app
COPY --from=turn-model /opt/emostt/models /opt/emostt/models
# Hub downloads (ModelScope, Hugging Face) and the ONNX export cache all go under /cache: mount a
# volume there so they survive restarts and the root filesystem can stay read-only.
ENV XDG_CACHE_HOME=/cache \
    MODELSCOPE_CACHE=/cache/modelscope \
    HF_HOME=/cache/huggingface \
    HOME=/home/emostt \
    EMOSTT_HOST=0.0.0.0 \
    EMOSTT_PORT=8000 \
    EMOSTT_TURN_MODEL=/opt/emostt/models/smart-turn-v3.2-cpu.onnx
VOLUME ["/cache"]
WORKDIR /home/emostt
EXPOSE 8000
# Liveness only: /healthz fails when the process cannot recover by itself. Readiness (/readyz) is
# for load balancers and orchestrators. No curl in the image: Python's urllib does it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('EMOSTT_PORT', '8000'), timeout=4)"]
# tini forwards SIGTERM to the server (which drains its sessions) and reaps the ONNX export child.
ENTRYPOINT ["tini", "--", "emostt", "serve"]

# ---------------------------------------------------------------------------------------------
# slim: the torch-free CPU image, for exported model dirs (--target slim).
FROM app AS slim
COPY --from=deps-slim /opt/venv /opt/venv
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-deps --no-index --no-cache-dir /tmp/dist/*.whl; \
    rm -rf /tmp/dist; \
    emostt --help >/dev/null
USER 10001:10001

# ---------------------------------------------------------------------------------------------
# runtime (the default target): torch and funasr, for GPUs, hub ids and the ONNX export.
FROM app AS runtime
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-deps --no-index --no-cache-dir /tmp/dist/*.whl; \
    rm -rf /tmp/dist; \
    emostt --help >/dev/null
USER 10001:10001
