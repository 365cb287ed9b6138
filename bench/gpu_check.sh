#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU; under 8 minutes (each step is capped).
#
#   bench/gpu_check.sh
#
# 1. Finds a Python whose torch sees CUDA: $PYTHON, else .venv/bin/python, else python3
#    (GPU machines often have a CUDA torch installed system-wide). With none, it builds
#    a venv in .gpu-check/ from PyPI, whose torch==2.13.0 is the CUDA 13.0 build (a ~3 GB
#    download). Whatever else the tests need and that interpreter lacks is installed into
#    .gpu-check/deps (pinned by constraints.txt), leaving the interpreter's own packages,
#    its CUDA torch above all, as they are.
# 2. Runs the tests marked `gpu` (pytest -m gpu): the trainer on CUDA with bf16 autocast,
#    checkpoints from the GPU loaded on a CPU, a forked child using CUDA, and, when the
#    service's dependencies are there, a real GPU worker training jobs from the gpu queue.
# 3. Runs bench/gpu_train.py: samples per second of the service's trainer vs. a bare loop.
# 4. Runs bench/distributed_scaling.py --gpu: the same job on 1 GPU against all of them
#    (resources.procs_per_node = the GPUs visible, one process per GPU, NCCL).
# 5. Prints a short table (device, samples/s service vs. bare, ratio) and the JSON lines.
#
# Offline, point $GPU_CHECK_WHEELS at a folder of wheels to install from instead of an
# index. Logs go to $GPU_CHECK_LOGS (a new temporary folder by default). Exit status:
# non-zero when no CUDA device is found, or a test or the benchmark failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
LOGS=${GPU_CHECK_LOGS:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$LOGS"
started=$(date +%s)
say() { echo "gpu_check: $*" >&2; }

# As in the docker image: a worker's parent asks about CUDA without initialising it.
export PYTORCH_NVML_BASED_CUDA_CHECK=1
# The project is imported from this checkout, never from an installed copy.
# What this script installs for an interpreter that lacks it comes after.
DEPS=$ROOT/.gpu-check/deps
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}:$DEPS"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS=$GPU_CHECK_WHEELS
fi
# PostgreSQL and Redis are optional here: the integration test then runs on SQLite alone.
unset TRAINSERVE_TEST_REQUIRE_SERVICES

has_cuda() {
  "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}

if ! nvidia-smi -L >/dev/null 2>&1; then
  say "no NVIDIA GPU is visible here (nvidia-smi -L failed): nothing to check"
  exit 1
fi

VENV_PY=$ROOT/.gpu-check/venv/bin/python
PY=""
for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && has_cuda "$candidate"
  then
    PY=$(command -v "$candidate")
    break
  fi
done
if [ -z "$PY" ]; then
  say "no Python here has a torch that sees CUDA; installing one into .gpu-check/venv"
  if ! { [ -x "$VENV_PY" ] || python3 -m venv .gpu-check/venv; } \
     || ! "$VENV_PY" -m pip install --quiet -c constraints.txt "torch==2.13.0" \
          >"$LOGS/install-torch.log" 2>&1; then
    say "could not install torch (see $LOGS/install-torch.log)"
    exit 1
  fi
  has_cuda "$VENV_PY" || { say "torch.cuda.is_available() is false with $VENV_PY"; exit 1; }
  PY=$VENV_PY
fi

# module=requirement pairs: what the gpu-marked unit tests import, then what the service
# (API, worker, database and broker clients) needs for the GPU worker's integration test.
UNIT_NEEDS=(numpy=numpy safetensors=safetensors pydantic=pydantic pytest=pytest)
SERVICE_NEEDS=(fastapi=fastapi "uvicorn=uvicorn[standard]" pydantic_settings=pydantic-settings
  multipart=python-multipart celery=celery redis=redis sqlalchemy=sqlalchemy alembic=alembic
  "psycopg=psycopg[binary]" prometheus_client=prometheus-client httpx=httpx)

missing() {  # the pairs among "$@" whose module $PY cannot import, one a line
  local pair
  for pair in "$@"; do "$PY" -c "import ${pair%%=*}" 2>/dev/null || echo "$pair"; done
}

ensure() {  # make every pair in "$@" importable, installing what is missing
  local need requirements pair target=()
  mapfile -t need < <(missing "$@")
  [ ${#need[@]} -eq 0 ] && return 0
  requirements=()
  for pair in "${need[@]}"; do requirements+=("${pair#*=}"); done
  # Into our own venv directly; for any other interpreter, beside it in $DEPS.
  [ "$PY" = "$VENV_PY" ] || target=(--target "$DEPS")
  say "installing ${requirements[*]}${target[*]:+ into $DEPS}"
  "$PY" -m pip install --quiet -c constraints.txt "${target[@]}" "${requirements[@]}" \
    >>"$LOGS/install.log" 2>&1
  mapfile -t need < <(missing "$@")
  if [ ${#need[@]} -ne 0 ]; then
    say "still missing: ${need[*]%%=*} (see $LOGS/install.log)"
    return 1
  fi
}

ensure "${UNIT_NEEDS[@]}" || exit 1
mapfile -t test_files < <(grep -rl --include='test_*.py' 'pytest.mark.gpu' tests/unit)
if ensure "${SERVICE_NEEDS[@]}"; then
  mapfile -t -O "${#test_files[@]}" test_files < <(
    grep -rl --include='test_*.py' 'pytest.mark.gpu' tests/integration)
else
  say "so the GPU worker's integration test is left out"
fi

GPU_NAME=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
TORCH=$("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')
say "$GPU_NAME, torch $TORCH, python $PY"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true

# -- the gpu-marked tests -------------------------------------------------------------------
timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" -rs "${test_files[@]}" \
  >"$LOGS/tests.log" 2>&1
tests_rc=$?
tests_line=$(grep -E "(passed|failed|error|skipped|no tests ran)" "$LOGS/tests.log" | tail -n1)
if [ $tests_rc -ne 0 ]; then
  say "GPU tests failed (rc $tests_rc); the end of $LOGS/tests.log:"
  tail -n 60 "$LOGS/tests.log" >&2
fi

# -- the training benchmark -----------------------------------------------------------------
timeout 120 "$PY" bench/gpu_train.py --rounds 3 >"$LOGS/bench.log" 2>&1
bench_rc=$?
if [ $bench_rc -ne 0 ]; then
  say "the benchmark failed (rc $bench_rc):"
  tail -n 30 "$LOGS/bench.log" >&2
fi

# -- data-parallel: 1 GPU against all of them (one process per GPU, NCCL) ----------------
timeout 150 "$PY" bench/distributed_scaling.py --gpu >"$LOGS/scaling.log" 2>&1
scaling_rc=$?
if [ $scaling_rc -ne 0 ]; then
  say "the data-parallel benchmark failed (rc $scaling_rc):"
  tail -n 30 "$LOGS/scaling.log" >&2
fi

echo
echo "== trainserve GPU check: $GPU_NAME, torch $TORCH, $(( $(date +%s) - started )) s"
echo "== gpu tests (${test_files[*]}): ${tests_line:-no result} (rc $tests_rc)"
[ $bench_rc -eq 0 ] && cat "$LOGS/bench.log"
echo "== 1 GPU vs all (bench/distributed_scaling.py --gpu, rc $scaling_rc):"
[ $scaling_rc -eq 0 ] && tail -n 1 "$LOGS/scaling.log"
echo "== logs: $LOGS"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $scaling_rc -eq 0 ]
