# Two commands for a user: `make demo` (install + run the demo chain) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# extra pipeline arguments, e.g. make demo ARGS=--verbose
ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo real-titles test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[train,dev]"
	touch $(STAMP)

demo: install  ## generate the demo data if missing, run the chain, write outputs/runs/demo/submission.csv
	$(PY) -m utils.pipeline run --config configs/demo.yaml $(ARGS)

JUDGE := inputs/samples/shopee-real-titles-extra/judge/validation.csv

real-titles: install  ## real Shopee titles: today's and the final recipe on the judge's validation set, then test.csv once
	$(PY) -m utils.pipeline run --config configs/real-titles-baseline.yaml $(ARGS)
	$(PY) -m utils.pipeline run --config configs/real-titles.yaml --set run=real-titles-judge \
		--set data.test_csv=$(JUDGE) --set data.test_labels_csv=$(JUDGE) $(ARGS)
	$(PY) -m utils.judge compare real-titles-baseline real-titles-judge
	$(PY) -m utils.pipeline run --config configs/real-titles.yaml $(ARGS)

lint: install
	$(PY) -m ruff check utils tests notebooks

test: lint  ## lint, then the test suite (slow tests excluded)
	$(PY) -m pytest

test-all: lint  ## everything, slow tests included (GPU tests skip without a GPU)
	$(PY) -m pytest -m ""

bench: install  ## KNN backends on 70,000 x 512 random unit vectors
	$(PY) -m utils.bench knn

clean:
	rm -rf outputs/runs
