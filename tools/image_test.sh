#!/usr/bin/env bash
# Build the container image from ./Dockerfile with no image registry, run it, and check that it
# serves a correct final for docs/samples/turn_left.wav. Not part of CI (minutes; root; buildah).
#
#   sudo bash tools/image_test.sh               # CPU image on a Debian bookworm base made here
#   sudo TARGET=slim bash tools/image_test.sh   # the slim torch-free CPU image, serving the demo
#                                               # model exported here (emostt model export)
#
# Steps: debootstrap a minimal Debian rootfs and import it as the base image (no registry is
# needed), build the Dockerfile with --build-arg BASE_IMAGE=<that base> TORCH_VARIANT=cpu, run the
# image with podman, wait for /readyz, stream the sample through clients/python/stream_file.py and
# check the final's text, then check the image's user, volume, healthcheck and entrypoint.
#
# Environment:
#   WORK=/var/tmp/emostt-image    rootfs, logs and results
#   SUITE=bookworm MIRROR=http://deb.debian.org/debian
#   CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   given to pip in the build as a secret
#   TORCH_WHEELS=/opt/wheels      a local directory holding the CPU torch wheel, mounted into the
#                                 build (when download.pytorch.org is unreachable); unset: index
#   EXPECT="turn left"            expected final text
#   TARGET=runtime                the Dockerfile target: runtime (full) or slim
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=${WORK:-/var/tmp/emostt-image}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
TORCH_WHEELS=${TORCH_WHEELS-/opt/wheels}
EXPECT=${EXPECT:-turn left}
TARGET=${TARGET:-runtime}
BASE=localhost/emostt-base:$SUITE
case "$TARGET" in
  runtime) IMAGE=localhost/emostt:cpu-test ;;
  slim) IMAGE=localhost/emostt:cpu-slim-test ;;
  *) echo "TARGET must be runtime or slim" >&2; exit 2 ;;
esac
PORT=${PORT:-18080}
NAME=emostt-image-test
mkdir -p "$WORK"
log() { printf '[image_test] %s\n' "$*" >&2; }

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing ${missing[*]} (apt)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah podman debootstrap fuse-overlayfs uidmap >/dev/null
    else
      log "missing: ${missing[*]} (apt-get install buildah podman debootstrap)"; exit 2
    fi
  fi
}
need buildah podman debootstrap

# 1. Base image: a minimal Debian rootfs with the distribution's Python (the Dockerfile installs
#    python3 and venv itself when a base lacks them).
if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  rootfs=$WORK/rootfs-$SUITE
  if [ ! -x "$rootfs/usr/bin/apt-get" ] || [ ! -f "$rootfs/.complete" ]; then
    rm -rf "$rootfs"
    log "debootstrap $SUITE into $rootfs"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1
    touch "$rootfs/.complete"
  fi
  log "importing $rootfs as $BASE"
  tar --exclude=./.complete -C "$rootfs" -c . | podman import \
    --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE" >/dev/null
fi

# 2. Build. The CA bundle goes in as a secret (never into a layer); verification stays on.
build_args=(--build-arg "BASE_IMAGE=$BASE" --build-arg TORCH_VARIANT=cpu --target "$TARGET")
volumes=()
if [ -n "$TORCH_WHEELS" ] && [ "$TARGET" = runtime ]; then
  build_args+=(--build-arg TORCH_FIND_LINKS=/wheels)
  volumes+=(--volume "$TORCH_WHEELS:/wheels:ro")
fi
log "building $IMAGE (log: $WORK/build.log)"
start=$(date +%s)
buildah build --format docker --layers --pull=never --isolation "${ISOLATION:-chroot}" --network host \
  --secret "id=pip-ca,src=$CA_BUNDLE" "${build_args[@]}" "${volumes[@]}" \
  -t "$IMAGE" -f Dockerfile . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
build_s=$(( $(date +%s) - start ))
size_bytes=$(podman image inspect "$IMAGE" --format '{{.Size}}')
log "built in ${build_s}s, $(( size_bytes / 1024 / 1024 )) MiB"

# 3. The image's contract: non-root user, /cache volume, healthcheck, entrypoint.
user=$(podman image inspect "$IMAGE" --format '{{.Config.User}}')
volumes_cfg=$(podman image inspect "$IMAGE" --format '{{json .Config.Volumes}}')
health=$(podman image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}')
entrypoint=$(podman image inspect "$IMAGE" --format '{{json .Config.Entrypoint}}')
[ "$user" = "10001:10001" ] || { log "FAIL: image user is '$user'"; exit 1; }
grep -q '"/cache"' <<<"$volumes_cfg" || { log "FAIL: /cache is not a volume: $volumes_cfg"; exit 1; }
grep -q 'healthz' <<<"$health" || { log "FAIL: no /healthz healthcheck: $health"; exit 1; }
grep -q '"emostt","serve"' <<<"$entrypoint" || { log "FAIL: entrypoint $entrypoint"; exit 1; }

# 4. Run it and wait for readiness. RUNNER=podman runs it as production would (read-only root,
#    tmpfs /tmp, a named /cache volume); RUNNER=buildah (default) runs the image's entrypoint with
#    its user, env and working dir under buildah's chroot isolation, for hosts whose OCI runtime
#    cannot start containers (e.g. no setrlimit inside a sandbox).
# The slim image serves exported model dirs only: the demo model exported here, mounted read-only
# (as the chart mounts its export volume).
PY=${PYTHON:-$REPO/.venv/bin/python}
model=demo
mounts=()
if [ "$TARGET" = slim ]; then
  rm -rf "$WORK/demo-onnx"
  "$PY" -m emostt model export demo "$WORK/demo-onnx" >"$WORK/export.log" 2>&1 || { tail -20 "$WORK/export.log"; exit 1; }
  model=/models/demo
  mounts=(--volume "$WORK/demo-onnx:/models/demo:ro")
fi
RUNNER=${RUNNER:-buildah}
read -r -a entry < <(podman image inspect "$IMAGE" --format '{{range .Config.Entrypoint}}{{.}} {{end}}')
ctr=""
server_pid=""
cleanup() {
  if [ "$RUNNER" = podman ]; then
    podman logs "$NAME" >"$WORK/container.log" 2>&1 || true
    podman rm -f "$NAME" >/dev/null 2>&1 || true
  else
    if [ -n "$server_pid" ]; then pkill -KILL -f "tini -- emostt serve" 2>/dev/null || true; fi
    if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  fi
}
trap cleanup EXIT
run_start=$(date +%s)
if [ "$RUNNER" = podman ]; then
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  podman run -d --name "$NAME" --network host --read-only --tmpfs /tmp \
    --volume emostt-image-test-cache:/cache "${mounts[@]}" \
    -e EMOSTT_MODEL="$model" -e EMOSTT_PORT="$PORT" "$IMAGE" >/dev/null
  running() { [ "$(podman inspect "$NAME" --format '{{.State.Running}}')" = true ]; }
  logs() { podman logs "$NAME" 2>&1; }
  in_image() { podman exec "$NAME" "$@"; }
else
  buildah rm "$NAME" >/dev/null 2>&1 || true
  ctr=$(buildah from --pull=never --name "$NAME" "$IMAGE")
  buildah run --isolation chroot --network host "${mounts[@]}" -e EMOSTT_MODEL="$model" \
    -e EMOSTT_PORT="$PORT" "$ctr" -- "${entry[@]}" >"$WORK/container.log" 2>&1 &
  server_pid=$!
  running() { kill -0 "$server_pid" 2>/dev/null; }
  logs() { cat "$WORK/container.log"; }
  in_image() { buildah run --isolation chroot --network host -e EMOSTT_PORT="$PORT" "$ctr" -- "$@"; }
fi
log "waiting for /readyz on :$PORT ($RUNNER)"
ready=""
for _ in $(seq 1 300); do
  running || { logs | tail -30; log "FAIL: container exited"; exit 1; }
  if curl -fsS "http://127.0.0.1:$PORT/readyz" >"$WORK/readyz.json" 2>/dev/null; then ready=yes; break; fi
  sleep 1
done
[ -n "$ready" ] || { logs | tail -30; log "FAIL: not ready after 300 s"; exit 1; }
ready_s=$(( $(date +%s) - run_start ))

# 5. Stream the sample through the shipped client and check the final; then run the image's own
#    HEALTHCHECK command inside it.
"$PY" clients/python/stream_file.py docs/samples/turn_left.wav --url "ws://127.0.0.1:$PORT" \
  --device image-test --json >"$WORK/events.jsonl"
final=$("$PY" -c 'import json,sys; f=[e for e in map(json.loads, open(sys.argv[1])) if e["type"]=="final"]; print(f[-1]["text"] if f else "")' "$WORK/events.jsonl")
log "final: '$final'"
[ "$final" = "$EXPECT" ] || { log "FAIL: expected '$EXPECT'"; exit 1; }
emotion=$("$PY" -c 'import json,sys; f=[e for e in map(json.loads, open(sys.argv[1])) if e["type"]=="final"][-1]; e=f["emotion"]; assert e["label"] in e["scores"], e; print(e["label"])' "$WORK/events.jsonl") \
  || { log "FAIL: the final has no emotion"; exit 1; }
log "emotion: $emotion"
if [ "$TARGET" = slim ]; then
  in_image python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'funasr')))" \
    || { log "FAIL: the slim image has torch or funasr"; exit 1; }
  logs | grep -q "engine: torch-free ONNX Runtime" || { log "FAIL: the slim image did not serve torch-free"; exit 1; }
fi
"$PY" -c 'import json,sys; t=json.loads(sys.argv[1])["Test"]; assert t[0]=="CMD", t; sys.stdout.write("\0".join(t[1:]))' \
  "$health" >"$WORK/healthcheck.cmd"
mapfile -d '' -t health_cmd <"$WORK/healthcheck.cmd"
in_image "${health_cmd[@]}" >/dev/null 2>&1 || { log "FAIL: the image's HEALTHCHECK failed on a healthy server"; exit 1; }
healthcheck=pass

# 6. A clean stop: SIGTERM drains the sessions and the server process finishes (uvicorn re-raises
#    the signal after its shutdown, so the exit status is 143, as for any process ended by SIGTERM).
if [ "$RUNNER" = podman ]; then
  podman stop -t 30 "$NAME" >/dev/null
  exit_code=$(podman inspect "$NAME" --format '{{.State.ExitCode}}')
else
  pkill -TERM -f "^/usr/bin/tini -- emostt serve"
  exit_code=0
  wait "$server_pid" || exit_code=$?
  server_pid=""
fi
case "$exit_code" in 0|143) ;; *) log "FAIL: exit status $exit_code after SIGTERM"; exit 1 ;; esac
logs | grep -q 'Application shutdown complete' || { log "FAIL: no clean shutdown in the log"; exit 1; }

cat >"$WORK/result.json" <<EOF
{"image": "$IMAGE", "target": "$TARGET", "base": "$BASE", "runner": "$RUNNER", "size_bytes": $size_bytes,
 "size_mib": $(( size_bytes / 1024 / 1024 )), "build_s": $build_s, "start_to_ready_s": $ready_s,
 "final": "$final", "emotion": "$emotion", "healthcheck": "$healthcheck", "exit_status_after_sigterm": $exit_code,
 "date": "$(date -u +%FT%TZ)", "buildah": "$(buildah --version | awk '{print $3}')"}
EOF
log "PASS: $(cat "$WORK/result.json")"
