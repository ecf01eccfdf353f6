# Two commands: `make test` (builds .venv from the pinned lock, runs the suite)
# and `make debug` (single-game debug run under runs/).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements-lock.txt
PYTEST_ARGS ?=
# Two pytest workers: a test spends much of its time in one-threaded XLA
# compiles and in programs that wait on each other, so one worker leaves a
# core idle. `make test PYTEST_WORKERS=0` runs the suite in one process.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal
DEBUG_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv lint test test-fast test-core debug bench clean

# Python 3.10 is required (dm-launchpad 0.5.2 has wheels only for <= 3.10).
# Search order: $$PYTHON, python3.10 on PATH, pyenv's 3.10.x versions.
define FIND_PY310
cands=(); \
[ -n "$${PYTHON:-}" ] && cands+=("$$PYTHON"); \
command -v python3.10 >/dev/null 2>&1 && cands+=("$$(command -v python3.10)"); \
for d in "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.10*/bin/python3.10; do [ -x "$$d" ] && cands+=("$$d"); done; \
found=; for c in "$${cands[@]}"; do \
  if "$$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' 2>/dev/null; then found="$$c"; break; fi; \
done; \
if [ -z "$$found" ]; then \
  echo "error: Python 3.10 not found. Looked at: \$$PYTHON='$${PYTHON:-}', python3.10 on PATH," >&2; \
  echo "       and $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10*/bin/python3.10." >&2; \
  echo "       dm-launchpad 0.5.2 ships wheels only for Python <= 3.10, so 3.10 is required." >&2; \
  echo "       Install it (e.g. 'pyenv install 3.10.13' or 'apt-get install python3.10 python3.10-venv')" >&2; \
  echo "       or point to one with: make test PYTHON=/path/to/python3.10" >&2; \
  exit 1; \
fi
endef

# The lock rebuilds the venv from scratch; a change of pyproject.toml or setup.py
# (tool settings, entry points) only reinstalls the project into it, so a program
# running from the venv meanwhile keeps its packages.
$(VENV)/.installed: $(LOCK)
	@set -euo pipefail; $(FIND_PY310); \
	echo "using $$found ($$("$$found" --version))"; \
	rm -rf $(VENV); "$$found" -m venv $(VENV); \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -r $(LOCK); \
	touch $@

$(VENV)/.project: $(VENV)/.installed pyproject.toml setup.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.project

# Style and types first (seconds): ruff's lint rules and its formatter, and mypy
# over the files pyproject.toml names.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# --durations: every run says where the suite's time goes.
test: venv lint
	$(PYTEST) tests --durations=20 $(PYTEST_ARGS)

test-fast: venv
	$(PYTEST) tests -m "not slow" $(PYTEST_ARGS)

# The agent core (agents/, configs/, learner checkpoints, the two-colors
# experiment) on the stack an accelerator host has: the newest Python 3 here
# and the newest jax, optax, chex, dm-haiku and rlax, no TensorFlow, Reverb or
# Launchpad. Not part of `make test`; `make test-core CORE_PYTHON=python3.x`.
CORE_VENV := .venv-core
# The newest pyenv Python 3.13, else python3 on PATH.
CORE_PYTHON ?= $(shell p=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | tail -1); [ -n "$$p" ] && echo "$$p" || command -v python3)
CORE_PACKAGES := jax optax chex dm-haiku rlax numpy matplotlib pytest pytest-timeout
CORE_TESTS := tests/test_losses.py tests/test_learning.py tests/test_semantics.py \
	tests/test_parallel.py tests/test_configs.py tests/test_checkpoint.py \
	tests/test_two_colors.py tests/test_meta_grad_stats.py

$(CORE_VENV)/.installed:
	@set -euo pipefail; test -x "$(CORE_PYTHON)" || { echo "error: CORE_PYTHON='$(CORE_PYTHON)' is not a Python; set CORE_PYTHON=/path/to/python3.x" >&2; exit 1; }; \
	rm -rf $(CORE_VENV); "$(CORE_PYTHON)" -m venv $(CORE_VENV); \
	$(CORE_VENV)/bin/pip install -q --upgrade pip; \
	$(CORE_VENV)/bin/pip install -q --upgrade $(CORE_PACKAGES); \
	touch $@

test-core: $(CORE_VENV)/.installed
	@$(CORE_VENV)/bin/python -c "import sys, importlib.metadata as m; print('core stack: Python', sys.version.split()[0], *[f'{p} {m.version(p)}' for p in ('jax', 'jaxlib', 'optax', 'chex', 'dm-haiku', 'rlax', 'numpy')])"
	PYTHONPATH=. $(CORE_VENV)/bin/python -m pytest -q -p no:cacheprovider $(CORE_TESTS) $(PYTEST_ARGS)

debug: venv
	$(PY) -m launch.run --preset=debug --game=Pong --agent=bmg $(DEBUG_ARGS)

# All benchmarks (about 15 min on 2 cores); JSON in benchmarks/results/, tables into docs/benchmarks.md.
bench: venv
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
