# fxexport: the two commands that matter are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fxexport-installed
# Extras the test suite uses: every one is installed so nothing is skipped for a missing package.
EXTRAS ?= test,timm,edge,zoo,openvino,litert

.PHONY: demo test test-all zoo bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch/torchvision first, pinned, so pip takes the builds on local disk.
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fxexport demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

zoo: $(STAMP)
	$(PY) scripts/zoo.py

bench: $(STAMP)
	$(PY) scripts/bench.py trace export verify

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
