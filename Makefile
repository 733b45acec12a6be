# Two commands do all set-up: `make demo` (the main job) and `make test`. Both install from the
# committed lock (requirements/lock.txt), so a fresh clone gets the versions CI tested.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
FLOOR_LOCK := requirements/floor.txt
PINS := requirements/pins.txt
UV_VERSION := 0.13.9
# The tests that depend on transformers' and mlx-vlm's internals: run on both ends of the declared range.
INTEGRATION_TESTS := $(sort $(wildcard tests/test_transformers_*.py tests/test_mlx_vlm*.py))
INTEGRATION_EXTRAS := transformers,mlx,mlx-vlm,test

.PHONY: demo test test-core test-floor test-latest test-ends test-vllm lock fuzz lint docs serve-docs bench device-check clean

# venv DIR, constraints, extras: a fresh virtualenv with torch first (the pinned CPU wheel), then the package.
define make_venv
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q -c $(PINS) pip
	$(1)/bin/python -m pip install -q -c $(2) torch
	$(1)/bin/python -m pip install -q -c $(2) -e ".[$(3)]"
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call make_venv,$(VENV),$(LOCK),all)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q
	$(PY) -m mkdocs build --strict --quiet --site-dir site

# The core alone (NumPy, Numba, SciPy; no torch, MLX, transformers): the quick loop for core work.
# Tests that need another extra skip, naming it.
CORE_EXTRAS := exact,fast,test
test-core: .venv-core/.installed
	.venv-core/bin/python -m pytest -q -p no:cacheprovider

.venv-core/.installed: pyproject.toml $(LOCK)
	rm -rf .venv-core
	$(PYTHON) -m venv .venv-core
	.venv-core/bin/python -m pip install -q -c $(PINS) pip
	.venv-core/bin/python -m pip install -q -c $(LOCK) -e ".[$(CORE_EXTRAS)]"
	touch $@

# The integration tests on the oldest transformers / mlx-vlm the extras admit (requirements/floor.txt).
test-floor: .venv-floor/.installed
	.venv-floor/bin/python -m pytest -q -p no:cacheprovider $(INTEGRATION_TESTS)

.venv-floor/.installed: pyproject.toml $(FLOOR_LOCK)
	$(call make_venv,.venv-floor,$(FLOOR_LOCK),$(INTEGRATION_EXTRAS))
	touch $@

# The suite against the newest releases (only torch pinned): what the next user who installs gets.
# CI runs the integration tests this way: LATEST_EXTRAS=... LATEST_TESTS=...
LATEST_EXTRAS ?= all
LATEST_TESTS ?= tests
test-latest:
	$(call make_venv,.venv-latest,$(PINS),$(LATEST_EXTRAS))
	.venv-latest/bin/python -m pip list 2>/dev/null | grep -i -E "^(transformers|mlx-vlm|mlx|torch|numpy) "
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider $(LATEST_TESTS)

# Both ends of the integrations' declared range.
test-ends: test-floor
	$(MAKE) test-latest LATEST_EXTRAS=$(INTEGRATION_EXTRAS) LATEST_TESTS="$(INTEGRATION_TESTS)"

# The vLLM plugin's tests, in a virtualenv of their own (vLLM pins transformers below the project's
# range) installed from requirements/vllm.txt by tools/vllm_env.sh.
VLLM_VENV ?= .venv-vllm
test-vllm:
	VLLM_VENV=$(VLLM_VENV) VLLM_ENV_LOCK=1 PYTHON=$(PYTHON) bash tools/vllm_env.sh
	# One process per file: vLLM 0.32's CPU worker start-up scans every loaded module and fails on
	# llvmlite's (numba's) wrappers, so no engine may start after a selection has loaded numba.
	for f in tests_vllm/test_*.py; do \
		HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider $$f \
			|| exit 1; \
	done

# Refresh the locks with uv (in a small tool venv of its own, so a stale lock never blocks this):
# the newest versions the extras admit, and the declared floors of the integrations' libraries.
comma := ,
UV := .venv-lock/bin/uv
lock:
	test -x $(UV) || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/python -m pip install -q uv==$(UV_VERSION) packaging)
	$(UV) pip compile -q pyproject.toml --extra all -c $(PINS) --python-version 3.11 --upgrade -o $(LOCK)
	.venv-lock/bin/python tools/floor_pins.py > .venv-lock/floor-pins.txt
	$(UV) pip compile -q pyproject.toml $(foreach e,$(subst $(comma), ,$(INTEGRATION_EXTRAS)),--extra $(e)) \
		-c $(PINS) -c .venv-lock/floor-pins.txt --python-version 3.11 --upgrade -o $(FLOOR_LOCK)

# Many random inputs over the public surface (a bounded run is part of `make test`).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/test_fuzz.py

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

serve-docs: $(STAMP)
	$(PY) -m mkdocs serve

# Every benchmark writes benchmarks/results/<name>.{json,md}; the docs include the tables.
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/cpu.py
	$(PY) benchmarks/exact.py
	$(PY) benchmarks/features_products.py
	$(PY) benchmarks/gpu_adapters.py
	if $(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) benchmarks/prefill_gpu.py; \
	else echo "no CUDA device: benchmarks/prefill_gpu.py needs one (it builds LLaVA-NeXT-7B shapes)"; fi

# On a CUDA machine (under 8 minutes): CUDA tests, GPU selection and prefill benchmarks -> benchmarks/results/.
device-check: $(STAMP)
	PY=$(PY) bash benchmarks/device_check.sh

clean:
	rm -rf $(VENV) .venv-core .venv-floor .venv-latest .venv-lock .venv-vllm site demo_output .pytest_cache .hypothesis
