# Two commands for a user: `make demo` (install + run the demo chain) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# extra pipeline arguments, e.g. make demo ARGS=--verbose
ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo real-titles test test-all lint bench bench-gpu gpu-wheels clean

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

# What a GPU machine without network lacks (it has torch, torchvision, timm, transformers, sentence-transformers,
# numpy, pandas, scipy, scikit-learn, pytest, matplotlib, pillow...), as measured on two visits. xgboost is left out
# (its CUDA wheel is 130 MB): 05's `model: auto` then trains LightGBM there, and the XGBoost GPU tests skip.
GPU_BOX_WHEELS := papermill|nbclient|nbformat|ipykernel|ipython|jupyter.client|jupyter.core|pyzmq|tornado|traitlets\
	|comm|matplotlib.inline|prompt.toolkit|pexpect|ptyprocess|stack.data|asttokens|executing|pure.eval|wcwidth\
	|jsonschema|jsonschema.specifications|referencing|rpds.py|fastjsonschema|platformdirs|tenacity|entrypoints\
	|nest.asyncio2|faiss.cpu|lightgbm|rapidfuzz|sparse.dot.topn|imagehash|pywavelets|wordllama\
	|pytorch.metric.learning|pydantic|pydantic.core|annotated.types|typing.inspection|toml|entmax
WHEELS := .whl
space := $(subst ,, )
BENCH_PY := $(if $(wildcard $(PY)),$(PY),python3)

gpu-wheels: install  ## the wheels above, at this venv's versions, for the GPU machine's Python 3.12, into .whl/
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d $(WHEELS) $$($(PY) -m pip freeze | grep -iE "^($(subst $(space),,$(GPU_BOX_WHEELS)))==")
	du -sh $(WHEELS)

bench-gpu:  ## the prepared GPU check, 9 minutes at most, one JSON report (on a GPU machine: `make bench-gpu`)
	@if [ -d $(WHEELS) ] && [ ! -x $(PY) ]; then python3 -m pip install -q --no-index --no-deps \
		--target /tmp/site $(WHEELS)/*.whl; fi
	PYTHONPATH=/tmp/site:. $(BENCH_PY) -m utils.bench gpu $(ARGS)

clean:
	rm -rf outputs/runs
