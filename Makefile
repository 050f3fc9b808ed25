# Two commands set everything up on a fresh machine (Python 3.11 and internet access to PyPI):
#   make book   - install, execute every notebook on its default parameters, build the HTML book
#   make test   - install, run the test suite
# Everything is installed into .venv; nothing outside the project folder is touched except
# Debian's chromium package, which the browser test needs (installed by `make test-deps`).

PYTHON_BIN ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
JOBS       ?= 2

.PHONY: book test test-slow test-gears test-deps lint format bench install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(PY) -m helpers book --jobs $(JOBS)

test-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null; \
	  else sudo apt-get install -y -q chromium >/dev/null; fi; }

# The test suite without the end-to-end runs (under 5 minutes on 2 cores).
test: $(STAMP) test-deps
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow and not gears"

# The end-to-end runs (marker slow): the main job (every notebook on its defaults, a second
# run compared output by output, the HTML book opened in Chromium) and each chapter run twice
# on small parameters; about 15 minutes on 2 cores.
test-slow: $(STAMP) test-deps
	$(PY) -m pytest -n 2 --dist loadfile -m "slow and not gears"

# The tests that train GEARS in its own environment (built here on first use, about 3 minutes),
# CI's regeneration of a shipped GEARS prediction among them.
test-gears: $(STAMP)
	GEARS_BUILD_ENV=1 $(PY) -m pytest -m gears

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/scale.py

clean:
	rm -rf _build book/*.ipynb book/*.results.csv book/_timings.json
