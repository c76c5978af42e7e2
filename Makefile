# The two commands of the README. Both create the virtual environment on first use.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench test board offline-bundle

# The main job: benchmark the headline models (TVM with the shipped schedules; ONNX Runtime, OpenVINO,
# ExecuTorch) on this machine, merge the results into results/<hardware>.json and print the comparison table.
bench: $(STAMP)
	$(VENV)/bin/mnv2bench run

# The test suite (the slow end-to-end tests included; skip them locally with PYTEST_ARGS="-m 'not slow'").
# -rs says why each skipped test was skipped; --durations=15 lists the slowest tests.
test: $(STAMP) board
	$(PYTHON) -m pytest -rs --durations=15 $(PYTEST_ARGS)

# The emulated aarch64 board (QEMU userland + TVM RPC server) that the cross-hardware tests use.
board:
	targets/emulated/build_aarch64_board.sh

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[peers]'
	touch $@

# TVM for a machine that reaches no package registry (a lent GPU box): .offline/, for its Python (PY).
PY ?= 3.12
offline-bundle: $(STAMP)
	$(PYTHON) -m targets.offline pack --python $(PY) --out .offline
