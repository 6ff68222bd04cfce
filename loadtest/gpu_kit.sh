#!/usr/bin/env bash
# The kit for issue 11's one GPU run (loadtest/gpu_suite.py), built here and carried there.
#
# A lent GPU host is bare, cannot reach a package index, and takes at most 64 MiB a call
# (the working tree included). Its image has python3 3.12 with PyTorch (CUDA 13), the CPU
# onnxruntime, numpy, OpenCV, SciPy, aiohttp, msgpack, prometheus-client, PyYAML, tqdm
# (the device library's KINDS.md lists it); the rest the suite imports travels as wheels.
#
#   bash loadtest/gpu_kit.sh build     # here: wheels + prepared models -> .gpu/parts/NN
#   bash loadtest/gpu_kit.sh calls     # here: print the run calls, one per part
#
# On the host, each call carries one part (carry [".gpu/parts/NN"]) and runs
#   bash loadtest/gpu_kit.sh stash             # keep the part in /tmp/lfr-kit
# and the call with the last part runs
#   bash loadtest/gpu_kit.sh stash suite       # join, check, unpack, install, run the suite
# which writes $OUT/gpu_suite.json and $OUT/gpu_suite.log. The host keeps /tmp while it
# is warm (30 s after a call), so the calls go back to back. `.gpu/` is ignored through
# .git/info/exclude (never committed: wheels and model files).
set -euo pipefail
cd "$(dirname "$0")/.."

KIT=.gpu
PART_BYTES=62000000  # 62 MB: with the working tree (about 3 MB) under a call's 64 MiB
STASH=${LFR_KIT_STASH:-/tmp/lfr-kit}
SITE=${LFR_KIT_SITE:-/tmp/ortgpu}

# name==version for python 3.12 on manylinux x86-64: what the image lacks. The versions
# are the development venv's (tested together), onnxruntime-gpu the newest on the index.
WHEELS=(
    onnxruntime-gpu==1.31.1
    structlog==26.1.0
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    usearch==2.26.6 numkong==7.8.6
    msgspec==0.23.0 ruamel.yaml==0.19.1 tenacity==9.2.1
    ray==2.60.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
    rpds-py==2026.9.1
)

build() {
    local python=${PYTHON:-.venv/bin/python}
    local home=${LFR_HOME:-$HOME/.local/share/lfr}
    mkdir -p .git/info
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >>.git/info/exclude
    [ -d "$home/models" ] || { echo "no prepared models in $home (run lfr models prepare)"; exit 1; }
    rm -rf "$KIT/stage" "$KIT/parts"
    mkdir -p "$KIT/wheels" "$KIT/stage" "$KIT/parts"
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$KIT/wheels" "${WHEELS[@]}"
    cp -r "$KIT/wheels" "$KIT/stage/wheels"
    mkdir -p "$KIT/stage/home"
    cp -r "$home/models" "$KIT/stage/home/models"
    [ -d "$home/samples" ] && cp -r "$home/samples" "$KIT/stage/home/samples"
    # Stored, not compressed: wheels are zip files already, and the models barely shrink.
    tar -cf "$KIT/kit.tar" -C "$KIT/stage" wheels home
    (cd "$KIT" && sha256sum kit.tar >kit.tar.sha256)
    split -b "$PART_BYTES" -d -a 2 "$KIT/kit.tar" "$KIT/parts/part-"
    for part in "$KIT"/parts/part-*; do
        mkdir -p "$KIT/parts/${part##*-}"
        mv "$part" "$KIT/parts/${part##*-}/"
    done
    cp "$KIT/kit.tar.sha256" "$KIT/parts/$(ls "$KIT/parts" | tail -1)/"
    rm -rf "$KIT/stage" "$KIT/kit.tar"
    du -sh "$KIT"/parts/*
}

calls() {
    local parts last
    parts=$(ls "$KIT/parts")
    last=$(echo "$parts" | tail -1)
    for n in $parts; do
        if [ "$n" = "$last" ]; then
            echo "run carry=[\"$KIT/parts/$n\"] timeout_s=600: bash loadtest/gpu_kit.sh stash suite"
        else
            echo "run carry=[\"$KIT/parts/$n\"] timeout_s=120: bash loadtest/gpu_kit.sh stash"
        fi
    done
}

stash() {
    mkdir -p "$STASH"
    cp "$KIT"/parts/*/* "$STASH"/
    ls -la "$STASH"
}

unpack() {
    # Join the parts, check the whole against the hash taken here, and unpack it.
    (cd "$STASH" && cat part-* >kit.tar && sha256sum -c kit.tar.sha256 && tar -xf kit.tar \
        && rm kit.tar)
}

suite() {
    unpack
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$STASH"/wheels/*.whl
    set -o pipefail
    PYTHONUNBUFFERED=1 python3 loadtest/gpu_suite.py --site "$SITE" \
        --models-home "$STASH/home" --out "$OUT/gpu_suite.json" 2>&1 | tee "$OUT/gpu_suite.log"
}

[ $# -gt 0 ] || { sed -n '2,20p' "$0"; exit 2; }
for step in "$@"; do
    case $step in
        build | calls | stash | unpack | suite) "$step" ;;
        *) echo "unknown step: $step (build, calls, stash, unpack, suite)"; exit 2 ;;
    esac
done
