# Two entry points a fresh clone needs: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
DEMO_OUT ?= out/demo

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime only: what an edge box installs (no torch; the CPU build of ONNX Runtime).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[cpu]'
	touch $@

# Everything: training, export, test tools and Ray (the ddrf-batch tests start a local cluster).
$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,train,export,dev,cluster]'
	touch $@

.PHONY: demo test
demo: $(VENV)/.runtime
	mkdir -p $(DEMO_OUT)
	$(BIN)/ddrf-run data/demo/ms.tif --pan data/demo/pan.tif -o $(DEMO_OUT)/demo_ddrf.tif \
	  --quicklook $(DEMO_OUT)/demo_quicklook.png --report $(DEMO_OUT)/demo_report.json --metrics --overwrite

test: $(VENV)/.full
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc
