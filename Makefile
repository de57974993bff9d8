# Two entry points for a fresh machine with only Python 3.11+:
#   make run   -- create .venv, install, start the daemon on feeds.yaml
#   make test  -- create .venv, install with test extras, run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test fetch lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scheduler.py $(ARGS)

fetch: $(STAMP)
	$(BIN)/aggregator fetch

test: $(STAMP)
	$(BIN)/ruff check aggregator tests bench scheduler.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
