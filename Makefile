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

.PHONY: book test test-deps bench install clean

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

test: $(STAMP) test-deps
	$(PY) -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf _build book/*.ipynb book/*.results.csv book/_timings.json
