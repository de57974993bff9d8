# Two entry points for a fresh machine with only Python 3.11+:
#   make run   -- create .venv, install, start the daemon on feeds.yaml
#   make test  -- create .venv, install with test extras, run the test suite
#   make demo  -- try it offline: bundled sample feeds, then the digest and web view
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo test browser postgres fetch lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scheduler.py $(ARGS)

demo: $(STAMP)
	$(BIN)/aggregator demo $(ARGS)

fetch: $(STAMP)
	$(BIN)/aggregator fetch

# tests/test_webview.py drives a real headless browser: install Debian's chromium when it
# is missing and we can (root with apt-get); otherwise carry on and that test skips.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	      echo "installing chromium for the browser test (apt-get)"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	        echo "could not install chromium; the browser test will skip"; \
	    else echo "chromium not found and not root with apt-get; the browser test will skip"; fi; }

# Tests that need PostgreSQL start their own throwaway server (tests/pgserver.py) from the
# server binaries: install Debian's postgresql when they are missing and we can (root with
# apt-get). The package's own cluster is not needed (we start ours, on a unix socket only),
# so stop it if the package started it. Without the binaries those tests fail, saying so.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	      echo "installing postgresql for the PostgreSQL tests (apt-get)"; \
	      if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null); \
	      then service postgresql stop >/dev/null 2>&1 || true; \
	      else echo "could not install postgresql; the PostgreSQL tests will fail: apt-get install postgresql"; fi; \
	    else echo "PostgreSQL server binaries not found and not root with apt-get; the PostgreSQL tests will fail: apt-get install postgresql"; fi; }

test: $(STAMP) browser postgres
	$(BIN)/ruff check aggregator tests bench scheduler.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
