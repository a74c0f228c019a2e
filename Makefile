# `make demo` and `make test` each set up what they need in a local virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfcompress-installed

.PHONY: demo test test-zoo bench clean

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,demo]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tfcompress demo --out demo_out

# Two workers: most test time is single-threaded graph tracing, so this halves it.
test: $(STAMP)
	$(PY) -m pytest -q -n 2

# Every keras.applications family and the hand-built transformers / sequence
# models through prune, cluster and QAT -> int8 (slow: tens of minutes).
test-zoo: $(STAMP)
	$(PY) -m pip install --quiet -e ".[zoo]"
	$(PY) -m pytest -q -n 2 -m "zoo or not zoo" tests/test_zoo.py

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/compare.py

clean:
	rm -rf $(VENV) demo_out build *.egg-info
