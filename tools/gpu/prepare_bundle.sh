#!/usr/bin/env bash
# Prepare .gpu-bundle/ here, for a GPU machine that reaches no package registry:
#   wheels/     what that machine's Python lacks (tools/gpu/bundle-packages.txt), for CPython
#               3.12 on manylinux x86-64, at the versions of this project's .venv; installed
#               there with --no-index --no-deps into a site directory. Not emostt itself: the
#               working tree's code (and its demo model) runs there, from PYTHONPATH=service
#   clips.npz   espeak-ng phrases for the tests and the streaming benchmark (no espeak-ng there)
#   MANIFEST.txt
# The bundle travels with the device tool's `carry` (64 MiB with the working tree): the
# script fails if it is larger than BUNDLE_MAX_MIB (default 60).
#
#   bash tools/gpu/prepare_bundle.sh                              # .gpu-bundle, cp312
#   BUNDLE_PYTHON_VERSION=3.11 BUNDLE_DIR=/tmp/b311 bash tools/gpu/prepare_bundle.sh   # a dry run here
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${BUNDLE_DIR:-.gpu-bundle}
PYVER=${BUNDLE_PYTHON_VERSION:-3.12}
VENV=${VENV:-.venv}
MAX_MIB=${BUNDLE_MAX_MIB:-60}
PY="$VENV/bin/python"

rm -rf "$OUT"
mkdir -p "$OUT/wheels"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# pip matches manylinux tags exactly: name every glibc baseline up to the machine's (2.39).
platforms=()
for tag in manylinux1_x86_64 manylinux2010_x86_64 manylinux2014_x86_64 \
    manylinux_2_5_x86_64 manylinux_2_12_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 \
    manylinux_2_26_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_31_x86_64 \
    manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux_2_39_x86_64; do
    platforms+=(--platform "$tag")
done

"$PY" -m pip freeze >"$work/freeze.txt" 2>/dev/null
pinned() { # the .venv's version of a package, else the name alone (the newest)
    local name=$1 pattern
    pattern="^${name//[-_.]/[-_.]}=="
    grep -i -m1 -E "$pattern" "$work/freeze.txt" || echo "$name"
}

grep -v -E '^\s*(#|$)' tools/gpu/bundle-packages.txt | while read -r name; do
    spec=$(pinned "$name")
    if "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp "${platforms[@]}" -d "$OUT/wheels" "$spec" >"$work/log" 2>&1; then
        continue
    fi
    # No wheel on the index (an sdist only): build it here; only pure-Python wheels may travel.
    "$PY" -m pip wheel --quiet --no-deps --no-binary=:all: -w "$work/built" "$spec" >>"$work/log" 2>&1 || {
        cat "$work/log" >&2
        echo "prepare_bundle: no wheel for $spec" >&2
        exit 1
    }
    for wheel in "$work"/built/*.whl; do
        case $wheel in
        *-none-any.whl) mv "$wheel" "$OUT/wheels/" ;;
        *)
            echo "prepare_bundle: $spec built a platform wheel here ($wheel); it cannot travel" >&2
            exit 1
            ;;
        esac
    done
done

"$PY" tools/gpu/save_clips.py "$OUT/clips.npz" --limit 160

(cd "$OUT" && find . -type f -printf '%s\t%p\n' | sort -k2 >"$work/manifest")
mv "$work/manifest" "$OUT/MANIFEST.txt"
total=$(du -sb "$OUT" | cut -f1)
mib=$(awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "bundle: $OUT, $(find "$OUT/wheels" -name '*.whl' | wc -l) wheels, ${mib} MiB (limit ${MAX_MIB} MiB)"
if [ "$total" -gt $((MAX_MIB * 1048576)) ]; then
    echo "prepare_bundle: the bundle is larger than ${MAX_MIB} MiB; it would not travel" >&2
    exit 1
fi
