#!/usr/bin/env bash
# The GPU checklist, on a GPU machine that reaches no package registry (tools/gpu/README.md).
#
#   bash tools/gpu/run_gpu_checklist.sh OUT_DIR STEP
#
# STEP (each fits one 10-minute device command, set-up included; JSON and logs go to OUT_DIR,
# at most 8 files per step):
#   setup         venv + bundle install, environment report (env.json), the full random model
#   tests         pytest tests/gpu                                  -> gpu-tests.xml, gpu-tests.log
#   engine        bench_engine fp16 + bf16, batch 1..512, 2/5/10/30 s  -> engine-cuda.json
#   engine-extra  fp32 (fewer cells), torch.compile (fp16, bucketed)   -> engine-cuda-fp32.json, -compile.json
#   streams       bench_stream on CUDA, N = 100 250 500 1000           -> stream-cuda.json
#   frontend      bench_stream with the instant engine, py-spy by stage -> stream-frontend.json, profile/
#   frontends     the instant engine on 8 server cores, 1 vs 4 front-end processes -> stream-frontends-gpu.json
#
# Every step sets up first (idempotent: a warm machine skips what is done). The venv sees the
# machine's torch, torchaudio, onnxruntime, numpy and sentencepiece (--system-site-packages) and
# gets everything else from .gpu-bundle/wheels (tools/gpu/prepare_bundle.sh, run beforehand
# where a registry is reachable). The code under test is this working tree's (PYTHONPATH=service),
# so a bundle older than the code still tests the code.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:?usage: run_gpu_checklist.sh OUT_DIR STEP}
STEP=${2:?usage: run_gpu_checklist.sh OUT_DIR setup|tests|engine|engine-extra|streams|frontend|frontends}
BUNDLE=${BUNDLE_DIR:-.gpu-bundle}
VENV=${GPU_VENV:-/tmp/emostt-gpu-venv}
MODEL=${GPU_FULL_MODEL:-/tmp/sv-full}
PY="$VENV/bin/python"
CLIPS="$(realpath -m "$BUNDLE")/clips.npz"

mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/service${PYTHONPATH:+:$PYTHONPATH}"
export EMOSTT_GPU_CLIPS="$CLIPS"
export EMOSTT_GPU_FULL_MODEL="$MODEL"
export EMOSTT_LOG_JSON=true
export HYPOTHESIS_PROFILE=ci

log() { echo "[$(date +%H:%M:%S)] $*"; }

# Run a command for at most $1 seconds; a timeout is reported, not fatal (the step goes on).
bounded() {
    local limit=$1
    shift
    local rc=0
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        log "TIMED OUT after ${limit}s: $*"
    elif [ "$rc" -ne 0 ]; then
        log "FAILED (exit $rc): $*"
    fi
    return 0
}

setup() {
    if [ ! -f "$BUNDLE/MANIFEST.txt" ]; then
        echo "no $BUNDLE: run tools/gpu/prepare_bundle.sh where PyPI is reachable, then carry it" >&2
        exit 2
    fi
    if [ ! -f "$VENV/.emostt-bundle" ] || ! cmp -s "$BUNDLE/MANIFEST.txt" "$VENV/.emostt-bundle"; then
        log "installing the bundle into $VENV"
        rm -rf "$VENV"
        python3 -m venv --system-site-packages "$VENV"
        "$PY" -m pip install --quiet --no-index --no-deps --no-cache-dir --no-compile "$BUNDLE"/wheels/*.whl
        cp "$BUNDLE/MANIFEST.txt" "$VENV/.emostt-bundle"
    fi
    "$PY" - "$OUT/env.json" <<'PYEOF'
import importlib.metadata as md, json, os, platform, shutil, subprocess, sys
import torch
import emostt
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
smi = None
if shutil.which("nvidia-smi"):
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    smi = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
env = {
    "python": sys.version.split()[0],
    "platform": platform.platform(),
    "cpus": os.cpu_count(),
    "torch": torch.__version__,
    "cuda_available": torch.cuda.is_available(),
    "cuda": torch.version.cuda,
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "nvidia_smi": smi,
    "emostt_from": os.path.dirname(emostt.__file__),
    "packages": {n: version(n) for n in ("torchaudio", "onnxruntime", "numpy", "sentencepiece", "funasr",
                                          "uvicorn", "uvloop", "httptools", "websockets", "py-spy")},
}
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env))
PYEOF
    if [ ! -f "$MODEL/model.pt" ]; then
        log "generating the full random-weight SenseVoiceSmall dir at $MODEL"
        "$PY" -m emostt model make-random "$MODEL" --size full
    fi
}

step_tests() {
    log "pytest tests/gpu"
    bounded 540 "$PY" -m pytest tests/gpu -v -rs -p no:cacheprovider --timeout 300 \
        --junitxml "$OUT/gpu-tests.xml" 2>&1 | tee "$OUT/gpu-tests.log"
}

step_engine() {
    # fp16 and bf16: every batch size 1..512 at 2, 5, 10 and 30 s (out-of-memory cells are recorded).
    for precision in fp16 bf16; do
        log "bench_engine $precision"
        bounded 210 "$PY" tools/bench_engine.py --model "$MODEL" --device cuda --precisions "$precision" \
            --batches 1 2 4 8 16 32 64 128 256 512 --lengths 2 5 10 30 --min-time 0.5 --min-reps 3 \
            --out "$OUT/engine-cuda-$precision.json" 2>&1 | tee -a "$OUT/engine.log"
    done
}

step_engine_extra() {
    log "bench_engine fp32"
    bounded 200 "$PY" tools/bench_engine.py --model "$MODEL" --device cuda --precisions fp32 \
        --batches 1 16 64 256 --lengths 2 10 30 --min-time 0.5 --min-reps 3 \
        --out "$OUT/engine-cuda-fp32.json" 2>&1 | tee -a "$OUT/engine-extra.log"
    # torch.compile: one compilation per shape, so few cells; 64-frame buckets (3.8 s).
    log "bench_engine fp16, torch.compile"
    bounded 300 "$PY" tools/bench_engine.py --model "$MODEL" --device cuda --precisions fp16 --compile \
        --pad-multiple 64 --batches 64 256 --lengths 10 --min-time 0.5 --min-reps 3 \
        --out "$OUT/engine-cuda-compile.json" 2>&1 | tee -a "$OUT/engine-extra.log"
}

step_streams() {
    # The real model on the GPU; one server process on 2 cores, the load generator on the other 14.
    log "bench_stream cuda"
    bounded 560 "$PY" tools/bench_stream.py --model "$MODEL" --device cuda --precision fp16 \
        --sessions 100 250 500 1000 --duration 40 --ramp-s 5 --batching on --max-batch 128 \
        --client-processes 14 --server-cpus 0-1 --client-cpus 2-15 --clips "$CLIPS" \
        --out "$OUT/stream-cuda.json" 2>&1 | tee "$OUT/stream-cuda.log"
}

step_frontend() {
    # The instant engine: what one server process's front end holds, and its CPU by stage.
    log "bench_stream instant (front end)"
    bounded 560 "$PY" tools/bench_stream.py --model instant --device cuda \
        --sessions 100 250 500 1000 --duration 40 --ramp-s 5 \
        --client-processes 14 --server-cpus 0-1 --client-cpus 2-15 --clips "$CLIPS" \
        --profile "$OUT/profile" --out "$OUT/stream-frontend.json" 2>&1 | tee "$OUT/stream-frontend.log"
}

step_frontends() {
    # Streams per server with the connections spread over front-end processes (docs/engine.md,
    # "Front-end processes"): the same 8 server cores with 1 and with 4 front ends.
    for n in 1 4; do
        log "bench_stream instant, $n front-end process(es) on cores 0-7"
        bounded 270 "$PY" tools/bench_stream.py --model instant --device cuda --frontends "$n" \
            --sessions 500 1000 --duration 30 --ramp-s 5 \
            --client-processes 8 --server-cpus 0-7 --client-cpus 8-15 --clips "$CLIPS" \
            --out "$OUT/stream-frontends-$n-gpu.json" 2>&1 | tee "$OUT/stream-frontends-$n.log"
    done
}

setup
case $STEP in
setup) ;;
tests) step_tests ;;
engine) step_engine ;;
engine-extra) step_engine_extra ;;
streams) step_streams ;;
frontend) step_frontend ;;
frontends) step_frontends ;;
*)
    echo "unknown step $STEP" >&2
    exit 2
    ;;
esac
log "done: $STEP"
ls -la "$OUT"
