#!/usr/bin/env bash
# One-shot GPU check (issues 11 and 16), offline: the `gpu` tests, then benchmarks/scan_gpu.py
# (every scan backend on the DASS stage maps), then benchmarks/gpu_check.py's side-by-side figures
# (every scan backend, eager and captured step, full-method epoch). It tests this checkout (put
# first on PYTHONPATH) with what `pip install -e ".[dev]"` installed, and installs nothing: without
# pytest the tests are skipped in one line and the benchmarks still run. Each step has a time
# limit (default 170 + 100 + 210 s: under 8 minutes on one H100/H200); a step stopped by its
# limit keeps the rows it printed. The tests run first, so the benchmarks find Triton's kernels
# compiled in its cache.
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options]
#   PYTHON=...                 the interpreter (default: python)
#   GPU_CHECK_TEST_SECONDS=170 GPU_CHECK_SCAN_SECONDS=100 GPU_CHECK_BENCH_SECONDS=210   (limits)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PYTHON="${PYTHON:-python}"
TEST_SECONDS="${GPU_CHECK_TEST_SECONDS:-170}"
SCAN_SECONDS="${GPU_CHECK_SCAN_SECONDS:-100}"
BENCH_SECONDS="${GPU_CHECK_BENCH_SECONDS:-210}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu_check: no interpreter '$PYTHON'; activate the environment where you ran pip install -e '.[dev]', or set PYTHON" >&2
    exit 2
fi
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch ($("$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA build", torch.version.cuda)' 2>&1 | tail -1)); run it on a GPU host with a CUDA build of torch" >&2
    exit 2
fi
if ! import_error="$("$PYTHON" -c "import lungsrad.models, lungsrad.training.loop" 2>&1)"; then
    echo "gpu_check: lungsrad does not import from $PWD ($(printf '%s\n' "$import_error" | tail -1)); run pip install -e '.[dev]' in this environment" >&2
    exit 2
fi

"$PYTHON" -c 'import sys, torch, lungsrad; print(f"gpu_check: Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name()}; lungsrad from {lungsrad.__file__}")'
# Triton builds a small C launcher on first use (libcuda, a C compiler, Python.h): check up front.
if ! triton_error="$("$PYTHON" -c "import triton; triton.runtime.driver.active.utils" 2>&1)"; then
    echo "gpu_check: WARNING: Triton cannot set up its CUDA driver here ($(printf '%s\n' "$triton_error" | tail -1)); the triton backend's tests and rows will fail (Triton needs libcuda, a C compiler: gcc or \$CC, and the Python headers: python3-dev)" >&2
fi

# "exit N", "stopped at its N s limit" or "SKIPPED" for the summary; 0 means passed.
describe() {
    case "$1" in
        0) echo "passed" ;;
        124 | 137) echo "stopped at its $2 s limit (rows above are what finished)" ;;
        *) echo "exit $1" ;;
    esac
}

echo "== gpu tests (python -m pytest -m gpu, limit ${TEST_SECONDS} s) =="
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    timeout --kill-after=20 "$TEST_SECONDS" "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider --durations=5 tests
    tests_status=$?
    tests_summary="$(describe "$tests_status" "$TEST_SECONDS")"
else
    echo "gpu_check: pytest is not installed here (pip install -e '.[dev]' brings it): gpu tests SKIPPED, benchmarks still run"
    tests_status=skipped
    tests_summary="SKIPPED (no pytest)"
fi

echo
echo "== scan benchmark (benchmarks/scan_gpu.py, limit ${SCAN_SECONDS} s) =="
# Shorter do_bench windows than its defaults (100 + 25 ms) keep four stages within the limit.
timeout --kill-after=20 "$SCAN_SECONDS" "$PYTHON" benchmarks/scan_gpu.py --rep-ms 40 --warmup-ms 10
scan_status=$?

echo
echo "== training-step benchmarks (benchmarks/gpu_check.py, limit ${BENCH_SECONDS} s) =="
timeout --kill-after=20 "$BENCH_SECONDS" "$PYTHON" benchmarks/gpu_check.py "$@"
bench_status=$?

echo
echo "gpu_check: gpu tests ${tests_summary}; scan_gpu.py $(describe "$scan_status" "$SCAN_SECONDS"); gpu_check.py $(describe "$bench_status" "$BENCH_SECONDS")"
[ "$tests_status" = 0 ] && [ "$scan_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
