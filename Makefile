# Two commands do all set-up: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz lint docs serve-docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The pinned torch resolves to the local CPU wheel; unpinned it pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q
	$(PY) -m mkdocs build --strict --quiet --site-dir site

# Many random inputs over the public surface (a bounded run is part of `make test`).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/test_fuzz.py

lint: $(STAMP)
	$(PY) -m ruff check .

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

serve-docs: $(STAMP)
	$(PY) -m mkdocs serve

# Every benchmark writes benchmarks/results/<name>.{json,md}; the docs include the tables.
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/cpu.py
	$(PY) benchmarks/exact.py
	$(PY) benchmarks/gpu_adapters.py
	if $(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) benchmarks/prefill_gpu.py; \
	else echo "no CUDA device: benchmarks/prefill_gpu.py needs one (it builds LLaVA-NeXT-7B shapes)"; fi

clean:
	rm -rf $(VENV) site demo_output .pytest_cache .hypothesis
