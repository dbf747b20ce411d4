# btpipe developer targets. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# e.g. make bench BENCH_ARGS='--only small,delta' runs those sections again, keeping the others' figures
BENCH_ARGS ?=

.PHONY: install test lint pytest demo docs bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Byte code is written as pip writes it for an installed package, so start-up stays fast even
# where the environment says not to write it (PYTHONDONTWRITEBYTECODE); only changed files compile.
install: $(STAMP)
	@$(BIN)/python -m compileall -q pipeline

lint: install
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy pipeline
	$(BIN)/lint-imports --no-cache
	$(BIN)/cog --check --check-fail-msg='run make docs' docs/*.md

# Two processes: each holds the in-process emulators and sockets of its half only, which keeps
# the suite well inside the open-file limit.
pytest: install
	$(BIN)/pytest -q $(PYTEST_ARGS) tests/api tests/cli tests/emulator tests/export
	$(BIN)/pytest -q $(PYTEST_ARGS) --ignore=tests/api --ignore=tests/cli --ignore=tests/emulator --ignore=tests/export

test: install lint pytest

demo: install
	$(BIN)/python -m pipeline.cli.demo

# The generated parts of docs/*.md (the --help blocks of docs/cli.md, ...); `make lint` fails when they are stale.
docs: install
	$(BIN)/cog -r docs/*.md

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

chaos: install
	$(BIN)/pytest -q -m chaos tests/reliability

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
