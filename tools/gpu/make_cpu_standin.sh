#!/usr/bin/env bash
# A stand-in for the GPU machine's Python, for rehearsing run_gpu_checklist.sh on a CPU machine:
# a venv holding only what that machine's image brings and the bundle leaves out (torch,
# numpy, onnxruntime, sentencepiece and their own needs, uvloop), linked from this project's
# .venv, nothing else. Everything else must then come from the bundle, as it will there.
#
#   bash tools/gpu/make_cpu_standin.sh /tmp/machine-py
#   BUNDLE_PYTHON_VERSION=3.11 bash tools/gpu/prepare_bundle.sh     # .venv is CPython 3.11
#   GPU_PYTHON=/tmp/machine-py/bin/python bash tools/gpu/run_gpu_checklist.sh /tmp/quick-out quick
set -euo pipefail
cd "$(dirname "$0")/../.."

DEST=${1:?usage: make_cpu_standin.sh DIR}
VENV=${VENV:-.venv}
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
base=$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')

rm -rf "$DEST" "$DEST-image"
"$base" -m venv "$DEST" # with pip, as there; not --system-site-packages
mkdir "$DEST-image"
shopt -s nullglob
for name in torch torchgen functorch numpy numpy.libs onnxruntime sentencepiece filelock \
    typing_extensions.py sympy mpmath networkx jinja2 markupsafe fsspec packaging google \
    flatbuffers protobuf uvloop; do
    for path in "$site/$name" "$site/${name%.py}"-*.dist-info; do
        [ -e "$path" ] && ln -s "$path" "$DEST-image/"
    done
done
echo "$DEST-image" >"$("$DEST/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/machine-image.pth"
"$DEST/bin/python" -c 'import torch, numpy, onnxruntime, sentencepiece; print("stand-in:", torch.__version__)'
