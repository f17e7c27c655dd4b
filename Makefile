# Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# What test-fast leaves out (the version matrix also leaves out the end-to-end tests, which
# exercise subprocesses and servers rather than Python or Django versions).
FAST_MARK ?= not slow
NOX_ARGS ?=

.PHONY: install demo test test-fast matrix package lint format bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or later is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## A .venv with everything, the package installed editable.

demo: $(STAMP) ## The sample site on an embedded S3 server (moto), end to end.
	$(PY) sample_project/demo.py

# The Wagtail site's tests run apart: they need its settings (one settings module a process).
WAGTAIL_TESTS := tests/wagtail_site --ds tests.wagtail_site.settings

test: $(STAMP) ## The whole test suite, the Wagtail site's too (DATABASE_URL=postgres://... runs it on PostgreSQL).
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) -m pytest $(WAGTAIL_TESTS) $(PYTEST_ARGS)

test-fast: $(STAMP) ## The suite without the slow end-to-end tests.
	$(PY) -m pytest -m "$(FAST_MARK)" $(PYTEST_ARGS)
	$(PY) -m pytest -m "$(FAST_MARK)" $(WAGTAIL_TESTS) $(PYTEST_ARGS)

matrix: $(STAMP) ## test-fast on Python 3.11 + Django 5.2, 3.12 + 6.0, 3.13 + the newest (nox).
	$(VENV)/bin/nox $(NOX_ARGS)

package: $(STAMP) ## Build the sdist and wheel, twine check, install the wheel in a fresh venv and check it.
	VENV=$(VENV) .ci/package

lint: $(STAMP) ## ruff and mypy, clean.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) ## migrate_storage and verify_files vs rclone, s5cmd, aws s3 sync, a naive loop (BENCH_ARGS=...).
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) bench/measure.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .nox sample_project/.demo .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
