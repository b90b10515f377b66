# fxexport: the two commands that matter are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two stamps: BASE is the package with its own dependencies only (all `make demo` needs); EXTRAS adds what the
# test suite, the zoo and the benches use on top of it (`make test` after `make demo` reuses what is installed).
BASE := $(VENV)/.fxexport-base
EXTRAS_STAMP := $(VENV)/.fxexport-extras
# Extras the test suite uses: every one is installed so nothing is skipped for a missing package.
EXTRAS ?= test,timm,edge,zoo,openvino,litert
# When this make started (ns since the epoch): `make demo` reports how long the set-up before it took.
START_NS := $(shell date +%s%N)

.PHONY: demo test test-all lint zoo bench install clean

install: $(EXTRAS_STAMP)

$(BASE): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# One resolution: torch/torchvision pinned (so pip takes the builds on local disk) with the package's own
	# dependencies. No byte-compiling of ~10,000 files here: the demo compiles the modules it imports.
	$(PY) -m pip install -q --no-compile "torch==2.14.1" "torchvision==0.29.1" -e .
	touch $(BASE)

$(EXTRAS_STAMP): $(BASE)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# Byte-compile what the demo's install left as source, on both cores (the suite starts many interpreters);
	# a few packages ship files that are not Python 3 (templates, fixtures): compileall exits 1 for those.
	$(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	touch $(EXTRAS_STAMP)

demo: $(BASE)
	@start=$$(date +%s%N); $(PY) -m fxexport demo; rc=$$?; end=$$(date +%s%N); \
	awk -v a=$(START_NS) -v b=$$start -v c=$$end 'BEGIN { printf "make demo: set-up (venv + install) %.1f s, demo step %.1f s, total %.1f s\n", (b - a) / 1e9, (c - b) / 1e9, (c - a) / 1e9 }'; \
	exit $$rc

test: $(EXTRAS_STAMP)
	$(PY) -m pytest -q

lint: $(EXTRAS_STAMP)
	$(PY) -m ruff check .

test-all: $(EXTRAS_STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

zoo: $(EXTRAS_STAMP)
	$(PY) scripts/zoo.py

bench: $(EXTRAS_STAMP)
	$(PY) scripts/bench.py trace export verify

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
