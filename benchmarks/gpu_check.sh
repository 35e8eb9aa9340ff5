#!/usr/bin/env bash
# One-shot GPU check (issue 11): the `gpu` tests, then benchmarks/gpu_check.py's side-by-side
# figures (every available scan backend, eager and captured step, full-method epoch).
# Needs a CUDA host with `pip install -e .` done. Time limits (180 s tests + 290 s benchmarks)
# keep the whole check under 8 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options]      # PYTHON=... to pick the interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch ($("$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA build", torch.version.cuda)' 2>&1 | tail -1)); run it on a GPU host with a CUDA build of torch" >&2
    exit 2
fi
if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    echo "gpu_check: installing pytest (the dev extra) to run the gpu tests"
    "$PYTHON" -m pip install --quiet "pytest>=8" || { echo "gpu_check: could not install pytest; pip install -e '.[dev]'" >&2; exit 2; }
fi

echo "== gpu tests (python -m pytest -m gpu) =="
timeout 180 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests
tests_status=$?
echo
echo "== benchmarks =="
timeout 290 "$PYTHON" benchmarks/gpu_check.py "$@"
bench_status=$?
echo
echo "gpu_check: gpu tests exit ${tests_status}, benchmarks exit ${bench_status} (0 = passed)"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
