#!/usr/bin/env bash
# The learner benchmarks on an accelerator host (GPU or TPU), well inside 10
# minutes: seconds per update for every agent on both networks at the full
# preset's batch, and pmap scaling over the host's devices. The agent core
# needs no TensorFlow, Reverb or Launchpad (nor rlax's distributions), so the
# host's own newest stack serves: jax with its cuda or tpu extra, optax, chex,
# numpy, and dm-haiku. From the repository root:
#
#   python3 -m venv .venv-accel && .venv-accel/bin/pip install -U "jax[cuda12]" optax chex dm-haiku numpy
#   PATH=.venv-accel/bin:$PATH bash benchmarks/accelerator.sh [OUT]
#
# A host that has jax but cannot reach a package index takes dm-haiku and jmp
# as wheels (`pip install --no-deps --target DIR *.whl`, PYTHONPATH=DIR). A
# tree copied without git names its commit in STACX_GIT_COMMIT.
#
# Writes learner-<backend>.json and pmap-<backend>.json into OUT (default
# benchmarks/results); `python -m benchmarks.report --backend <backend>`
# renders their tables.
set -euo pipefail
OUT=${1:-benchmarks/results}
PY=${PYTHON:-python3}
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)" PYTHONUNBUFFERED=1
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"
# Full preset batch (32); the deep network compiles in tens of seconds per agent.
timeout 330 $PY -m benchmarks.learner --networks deep,small --batch 32 --reps 10 --out "$OUT"
# Global batch 32 over 1, 2, 4, 8 devices (counts above the host's are skipped).
timeout 200 $PY -m benchmarks.pmap_scaling --devices 1,2,4,8 --batch 32 --network deep \
  --agents impala,bmg --reps 5 --timeout 90 --out "$OUT"
ls -l "$OUT"/learner-*.json "$OUT"/pmap-*.json
