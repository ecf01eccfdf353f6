#!/usr/bin/env bash
# The learner benchmarks on an accelerator host (GPU or TPU), well inside 10
# minutes: seconds per update for every agent on both networks at the full
# preset's batch, and pmap scaling over the host's devices. The agent core
# needs no TensorFlow, Reverb or Launchpad, so the host's own newest stack
# serves (the same packages as `make test-core`, with jax's cuda12 or tpu
# extra). From the repository root:
#
#   python3 -m venv .venv-accel && .venv-accel/bin/pip install -U "jax[cuda12]" optax chex dm-haiku rlax numpy
#   PATH=.venv-accel/bin:$PATH bash benchmarks/accelerator.sh [OUT]
#
# Writes learner-<backend>.json and pmap-<backend>.json into OUT (default
# benchmarks/results); `python -m benchmarks.report --backend <backend>`
# renders their tables.
set -euo pipefail
OUT=${1:-benchmarks/results}
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
python -c "import jax; print('jax', jax.__version__, jax.devices())"
# Full preset batch (32); the deep network compiles in tens of seconds per agent.
timeout 330 python -m benchmarks.learner --networks small,deep --batch 32 --reps 10 --out "$OUT"
# Global batch 32 over 1, 2, 4, 8 devices (counts above the host's are skipped).
timeout 200 python -m benchmarks.pmap_scaling --devices 1,2,4,8 --batch 32 --network deep \
  --agents impala,bmg --reps 5 --timeout 90 --out "$OUT"
ls -l "$OUT"/learner-*.json "$OUT"/pmap-*.json
