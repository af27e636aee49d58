#!/usr/bin/env bash
# A first GPU figure on a lent GPU machine that has JAX with CUDA, no TensorFlow and no package registry.
#
#   bash bench/gpu.sh prepare [DATA]       # here, online: the 224-px data and the missing wheels, into
#                                          # ignored folders (data/chest_xray, bench/wheels), about 50 MB
#   bash bench/gpu.sh run LOG_DIR          # there: prints the GPU, then on JAX with precision auto the
#                                          # 45-epoch --baseline at 80 px, a configs/archive/cpu-hyperband.yaml search with its
#                                          # retrain, the same search again on the warm compilation cache,
#                                          # and bench/compile.py; logs and a summary land in LOG_DIR
#   bash bench/gpu.sh run LOG_DIR --tiny   # anywhere: the same steps on a tiny synthetic setting, a check
#   bash bench/gpu.sh --help               # this text
#
# The device tool copies the repository with `carry: ["data/chest_xray", "bench/wheels"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-bench/wheels}
# What the GPU machine lacks (KINDS.md lists what it has): Keras, Keras Tuner and their small pure-Python
# or compiled needs, pinned as in requirements.txt / the versions installed beside them here.
PACKAGES=(keras==3.15.1 keras-tuner==1.4.8 kt-legacy==1.0.5 namex==0.1.0 optree==0.20.0)

prepare() {
    local source=${1:-../shared/data/chest_xray}
    mkdir -p data "$WHEELS"
    [ -d data/chest_xray ] || cp -r "$source" data/chest_xray
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "${PACKAGES[@]}"
    du -sh data/chest_xray "$WHEELS"
}

run() {
    local log=$1 tiny=${2:-}
    local reports=${GPU_REPORTS:-/tmp/gpu-bench-reports}
    mkdir -p "$log"
    rm -rf "$reports"
    export KERAS_BACKEND=jax  # Keras' default, TensorFlow, is not installed there
    if ! "$PYTHON" -c "import keras, keras_tuner" 2>/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-bench-site "$WHEELS"/*.whl
        export PYTHONPATH=/tmp/gpu-bench-site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c "import jax, keras; print('jax', jax.__version__, [(d.device_kind, getattr(d, 'compute_capability', None)) for d in jax.devices()], '| keras', keras.__version__)"
    local common=(--backend jax --precision auto --reports-dir "$reports" --data-dir data/chest_xray)
    local search_extra=()
    if [ "$tiny" = "--tiny" ]; then
        common=(--backend jax --precision auto --reports-dir "$reports" --synthetic --image-size 48 --final-epochs 2)
        search_extra=(--epochs 2)
    fi
    local started=$SECONDS
    "$PYTHON" search.py --baseline "${common[@]}" 2>&1 | tee "$log/baseline.log"
    echo "baseline: $((SECONDS - started)) s in all"
    started=$SECONDS
    "$PYTHON" search.py --config configs/archive/cpu-hyperband.yaml "${common[@]}" "${search_extra[@]}" 2>&1 | tee "$log/search.log"
    echo "search: $((SECONDS - started)) s in all"
    # The same search again, afresh but with the compilation cache the first one filled: what a repeat costs.
    started=$SECONDS
    "$PYTHON" search.py --config configs/archive/cpu-hyperband.yaml "${common[@]}" "${search_extra[@]}" --run-name warm-cache-search \
        2>&1 | tee "$log/search-warm.log"
    echo "search, warm cache: $((SECONDS - started)) s in all"
    "$PYTHON" bench/compile.py 2>&1 | tee "$log/compile.log" | sed -n '/^| model/,$p'
    "$PYTHON" bench/gpu_summary.py "$reports" "$log" | tee "$log/summary.md"
}

usage() {  # the usage line, then the comment at the top of this file
    echo "usage: bash bench/gpu.sh prepare [DATA] | run LOG_DIR [--tiny]"
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

case ${1:-} in
    -h|--help) usage ;;
    prepare) shift; prepare "$@" ;;
    run) shift; [ $# -ge 1 ] || { echo "usage: bash bench/gpu.sh run LOG_DIR [--tiny]" >&2; exit 2; }; run "$@" ;;
    *) usage >&2; exit 2 ;;
esac
