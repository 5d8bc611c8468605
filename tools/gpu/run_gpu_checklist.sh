#!/usr/bin/env bash
# The GPU checklist, on a GPU machine that reaches no package registry (tools/gpu/README.md).
#
#   bash tools/gpu/run_gpu_checklist.sh OUT_DIR STEP
#
# STEP (JSON and logs go to OUT_DIR, at most 8 files per step):
#   quick         everything that proves the GPU path in one window of at most 8 minutes, set-up
#                 included (QUICK_BUDGET_S=480): tests/gpu (most telling first), engine fp16 at
#                 10 s clips, batch 1/16/64/256, then bf16 at the best batch next to
#                 AutoModel.generate(), then 1,000 streams for 30 s (and 500 if time is left).
#                 -> quick.json (rewritten after every part), quick.log, gpu-tests.xml,
#                    engine-cuda-fp16.json, engine-cuda-bf16.json, stream-cuda-1000.json, -500.json
#                 Without CUDA (a rehearsal) the CUDA tests skip with their reason and the
#                 benchmarks run small CPU stand-ins, recorded as such in quick.json.
#   setup         bundle install, environment report (env.json), the full random model
#   tests         pytest tests/gpu                                  -> gpu-tests.xml, gpu-tests.log
#   engine        bench_engine fp16 + bf16, batch 1..512, 2/5/10/30 s  -> engine-cuda-*.json
#   engine-extra  fp32 (fewer cells), torch.compile (fp16, bucketed)   -> engine-cuda-fp32.json, -compile.json
#   streams       bench_stream on CUDA, N = 100 250 500 1000           -> stream-cuda.json
#   frontend      bench_stream with the instant engine, py-spy by stage -> stream-frontend.json, profile/
#   frontends     the instant engine on 8 server cores, 1 vs 4 front-end processes -> stream-frontends-*-gpu.json
#
# Every step sets up first (idempotent: a warm machine skips what is done). The machine's own
# Python (GPU_PYTHON, default python3: it holds the CUDA torch, torchaudio, onnxruntime, numpy
# and sentencepiece) runs everything; the bundle's wheels (.gpu-bundle/wheels, made by
# tools/gpu/prepare_bundle.sh where a registry is reachable) go into a site directory on
# PYTHONPATH. No venv: that python3 is itself a venv (/opt/torch/.venv), and a venv made from
# a venv does not see its packages, torch included. The code under test is this working
# tree's (PYTHONPATH=service first), so a bundle older than the code still tests the code.
set -euo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS

OUT=${1:?usage: run_gpu_checklist.sh OUT_DIR STEP}
STEP=${2:?usage: run_gpu_checklist.sh OUT_DIR quick|setup|tests|engine|engine-extra|streams|frontend|frontends}
BUNDLE=${BUNDLE_DIR:-.gpu-bundle}
PY=${GPU_PYTHON:-python3}
SITE=${GPU_SITE:-/tmp/emostt-gpu-site}
MODEL=${GPU_FULL_MODEL:-/tmp/sv-full}
CLIPS="$(realpath -m "$BUNDLE")/clips.npz"

mkdir -p "$OUT"
OUT=$(realpath "$OUT")
# quick keeps its environment report in quick.json (8 files come back from a device command).
SCRATCH=${TMPDIR:-/tmp}/emostt-gpu-$STEP
ENV_JSON="$OUT/env.json"
if [ "$STEP" = quick ]; then
    rm -rf "$SCRATCH"
    mkdir -p "$SCRATCH"
    ENV_JSON="$SCRATCH/env.json"
fi
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/service:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH" # py-spy (--profile)
export EMOSTT_GPU_CLIPS="$CLIPS"
export EMOSTT_GPU_FULL_MODEL="$MODEL"
export EMOSTT_LOG_JSON=true
export HYPOTHESIS_PROFILE=ci

# pytest loads only the plugins this project tests with (from the bundle): the machine's image
# holds others (pytest-xdist, -cov, -benchmark, -mock) built against its own pytest.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
PYTEST=(-m pytest -p pytest_asyncio.plugin -p pytest_timeout -p _hypothesis_pytestplugin -p no:cacheprovider)

log() { echo "[$(date +%H:%M:%S)] $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

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

SETUP_DETAIL=""
setup() {
    if [ ! -f "$BUNDLE/MANIFEST.txt" ]; then
        echo "no $BUNDLE: run tools/gpu/prepare_bundle.sh where PyPI is reachable, then carry it" >&2
        exit 2
    fi
    local t
    t=$(now)
    if [ ! -f "$SITE/.emostt-bundle" ] || ! cmp -s "$BUNDLE/MANIFEST.txt" "$SITE/.emostt-bundle"; then
        log "installing the bundle into $SITE"
        rm -rf "$SITE"
        if "$PY" -m pip --version >/dev/null 2>&1; then
            "$PY" -m pip install --quiet --no-index --no-deps --no-cache-dir --no-compile \
                --disable-pip-version-check --target "$SITE" "$BUNDLE"/wheels/*.whl
        else
            "$PY" tools/gpu/unpack_wheels.py "$SITE" "$BUNDLE"/wheels/*.whl
        fi
        cp "$BUNDLE/MANIFEST.txt" "$SITE/.emostt-bundle"
        SETUP_DETAIL="install $(since "$t") s"
    else
        SETUP_DETAIL="install: already there"
    fi
    t=$(now)
    "$PY" - "$ENV_JSON" <<'PYEOF'
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
    "python_executable": sys.executable,
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
    SETUP_DETAIL="$SETUP_DETAIL, environment $(since "$t") s"
    t=$(now)
    if [ ! -f "$MODEL/model.pt" ]; then
        log "generating the full random-weight SenseVoiceSmall dir at $MODEL"
        "$PY" -m emostt model make-random "$MODEL" --size full
        SETUP_DETAIL="$SETUP_DETAIL, full random model $(since "$t") s"
    else
        SETUP_DETAIL="$SETUP_DETAIL, full random model: already there"
    fi
}

step_tests() {
    log "pytest tests/gpu"
    bounded 540 "$PY" "${PYTEST[@]}" tests/gpu -v -rs --timeout 300 \
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

# --- quick: one window ---------------------------------------------------------------------

QUICK_BUDGET_S=${QUICK_BUDGET_S:-480}
CAP_SCALE=1 # each part's time limit, x2 in a CPU rehearsal
SUMMARY="$OUT/quick.json"
QLOG="$OUT/quick.log"

# part NAME CAP_S NEED_S FILES -- COMMAND...: run COMMAND for at most CAP_S seconds and never past
# the budget; skip it (recorded) when less than NEED_S is left. FILES (space-separated) are
# the part's results, read for its one-line headline in quick.json.
part() {
    local name=$1 cap=$(($2 * CAP_SCALE)) need=$(($3 * CAP_SCALE)) files=$4
    shift 5
    local left=$((QUICK_BUDGET_S - (SECONDS - T0)))
    if [ "$left" -lt "$need" ]; then
        LAST_STATUS=skipped
        log "SKIP $name: ${left}s of the budget left, it needs ${need}s" | tee -a "$QLOG"
        "$PY" tools/gpu/quick_summary.py part "$SUMMARY" "$name" skipped 0 0 \
            "budget: ${left} s left of ${QUICK_BUDGET_S} s, the part needs ${need} s" | tee -a "$QLOG"
        return 0
    fi
    local limit=$((cap < left - 5 ? cap : left - 5))
    local t rc=0 status=ok
    t=$(now)
    log "PART $name (limit ${limit} s, ${left} s of the budget left): $*" | tee -a "$QLOG"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$QLOG" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status="timed out after ${limit} s"
    elif [ "$rc" -ne 0 ]; then
        status="failed (exit $rc)"
    fi
    LAST_STATUS=$status
    # shellcheck disable=SC2086 # FILES is a list
    "$PY" tools/gpu/quick_summary.py part "$SUMMARY" "$name" "$status" "$(since "$t")" "$limit" \
        "$QUICK_REASON" $files | tee -a "$QLOG"
}

step_quick() {
    local cuda=0
    grep -q '"cuda_available": true' "$ENV_JSON" && cuda=1
    local ncpu half
    ncpu=$(nproc)
    half=$((ncpu / 2 > 0 ? ncpu / 2 : 1))
    local dev p1 p2 batches baseline sessions duration precision frontends mode threads=()
    if [ "$cuda" = 1 ]; then
        dev=cuda p1=fp16 p2=bf16 batches="1 16 64 256" baseline=16 sessions="1000 500" duration=30
        precision=fp16 frontends=4 mode=cuda
    else
        # A rehearsal on a machine without CUDA: the same parts, each small, on the CPU.
        dev=cpu p1=fp32 p2=int8 batches="1 2" baseline=2 sessions="4 2" duration=15
        precision=auto frontends=1
        CAP_SCALE=${QUICK_CAP_SCALE:-2}
        # One torch thread: on a small shared machine, OpenMP threads that wait for a descheduled
        # peer made single calls 10-30x slower, at random (seen here at batch 1, 10 s clips).
        threads=(--threads 1)
        mode="rehearsal without CUDA: CUDA tests skip; the engine and streams run CPU stand-ins (fp32 for fp16, int8 for bf16, batch 1 and 2 on one torch thread, 4 and 2 streams for 15 s), time limits x$CAP_SCALE"
    fi
    batches=${QUICK_ENGINE_BATCHES:-$batches}
    baseline=${QUICK_BASELINE:-$baseline}
    sessions=${QUICK_STREAM_SESSIONS:-$sessions}
    duration=${QUICK_STREAM_DURATION:-$duration}
    frontends=${QUICK_FRONTENDS:-$frontends}
    local length=${QUICK_ENGINE_LENGTH:-10}
    local server_cpus="0-$((half - 1))" client_cpus="$half-$((ncpu - 1))" client_procs=$((ncpu - half))
    [ "$ncpu" -gt 1 ] || { server_cpus=0 client_cpus=0 client_procs=1; }
    local settings
    settings=$(printf '{"device": "%s", "engine_precisions": ["%s", "%s"], "engine_batches": "%s", "engine_length_s": %s, "baseline_utterances": %s, "stream_sessions": "%s", "stream_duration_s": %s, "stream_precision": "%s", "frontends": %s, "server_cpus": "%s", "client_cpus": "%s", "client_processes": %s, "cap_scale": %s}' \
        "$dev" "$p1" "$p2" "$batches" "$length" "$baseline" "$sessions" "$duration" "$precision" \
        "$frontends" "$server_cpus" "$client_cpus" "$client_procs" "$CAP_SCALE")
    "$PY" tools/gpu/quick_summary.py init "$SUMMARY" --budget "$QUICK_BUDGET_S" --mode "$mode" \
        --settings "$settings" --env "$ENV_JSON"
    "$PY" tools/gpu/quick_summary.py part "$SUMMARY" setup ok "$SETUP_ELAPSED" 0 "$SETUP_DETAIL" | tee -a "$QLOG"

    # 1. tests/gpu, most telling first: fp32 parity, the GPU features, fp16/bf16 tolerances,
    #    then a real out-of-memory split, then the server streaming finals on CUDA.
    QUICK_REASON=""
    [ "$cuda" = 1 ] || QUICK_REASON="no CUDA: the tests skip with their reason"
    part tests 200 60 "$OUT/gpu-tests.xml $QLOG" -- \
        "$PY" "${PYTEST[@]}" tests/gpu/test_cuda_parity.py tests/gpu/test_cuda_oom.py \
        tests/gpu/test_cuda_server.py -v -rs --timeout 120 --junitxml "$OUT/gpu-tests.xml"

    # 2. Engine throughput at 10 s clips: batch 1/16/64/256 (fp16), then bf16 at the best batch
    #    next to AutoModel.generate() per utterance (SenseVoice's own way of serving).
    QUICK_REASON=""
    [ "$cuda" = 1 ] || QUICK_REASON="no CUDA: $p1 on the CPU stands in for fp16"
    local engine1="$OUT/engine-$dev-$p1.json" engine2="$OUT/engine-$dev-$p2.json"
    # shellcheck disable=SC2086 # batches is a list
    part "engine-$p1" 120 45 "$engine1" -- \
        "$PY" tools/bench_engine.py --model "$MODEL" --device "$dev" --precisions "$p1" \
        --batches $batches --lengths "$length" --min-time 0.5 --min-reps 3 "${threads[@]}" --out "$engine1"
    local best
    best=$("$PY" tools/gpu/quick_summary.py best-batch "$engine1" "${batches##* }")
    QUICK_REASON="best $p1 batch: $best"
    [ "$cuda" = 1 ] || QUICK_REASON="no CUDA: bf16 needs CUDA, int8 on the CPU stands in; best $p1 batch: $best"
    part "engine-$p2" 90 40 "$engine2" -- \
        "$PY" tools/bench_engine.py --model "$MODEL" --device "$dev" --precisions "$p2" \
        --batches "$best" --lengths "$length" --min-time 0.5 --min-reps 3 --baseline "$baseline" \
        "${threads[@]}" --out "$engine2"

    # 3. Streams per GPU server: the real model, N devices for DURATION s; the server on the
    #    first half of the cores with 4 front-end processes, the load generator on the other half.
    QUICK_REASON=""
    [ "$cuda" = 1 ] || QUICK_REASON="no CUDA: the model on the CPU, a few streams stand in"
    local n first=1
    for n in $sessions; do
        local cap=150 need=80
        [ "$first" = 1 ] || cap=120 need=75
        first=0
        part "streams-$n" "$cap" "$need" "$OUT/stream-$dev-$n.json" -- \
            "$PY" tools/bench_stream.py --model "$MODEL" --device "$dev" --precision "$precision" \
            --backends torch --sessions "$n" --duration "$duration" --ramp-s 5 --batching on \
            --max-batch 128 --frontends "$frontends" --client-processes "$client_procs" \
            --server-cpus "$server_cpus" --client-cpus "$client_cpus" --clips "$CLIPS" \
            --out "$OUT/stream-$dev-$n.json"
        case $LAST_STATUS in
        failed*)
            # bench_stream discards the server's output: start it once more, alone, for its log
            # (while the budget allows; a server that does start runs until the limit).
            [ $((QUICK_BUDGET_S - (SECONDS - T0))) -ge 50 ] || break
            log "the server's own output (emostt serve alone, at most 45 s):" | tee -a "$QLOG"
            timeout --kill-after=5 45 "$PY" -m emostt serve --model "$MODEL" --device "$dev" \
                --precision "$precision" --backend torch --frontends "$frontends" --port 18765 \
                --host 127.0.0.1 2>&1 | tail -40 | tee -a "$QLOG" || true
            break
            ;;
        esac
    done
    "$PY" tools/gpu/quick_summary.py table "$SUMMARY" | tee -a "$QLOG"
}

QUICK_REASON=""
LAST_STATUS=""
t_setup=$(now)
if [ "$STEP" = quick ]; then
    : >"$QLOG"
    setup > >(tee -a "$QLOG") 2>&1 # not a pipeline: setup's variables stay in this shell
else
    setup
fi
SETUP_ELAPSED=$(since "$t_setup")
case $STEP in
quick) step_quick ;;
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
log "done: $STEP in $((SECONDS - T0)) s"
ls -la "$OUT"
