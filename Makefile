# ccm_gateway — the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench check-config clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the gateway with its dev tools

run: $(STAMP) ## serve on http://127.0.0.1:8080 (embedded config; CONFIG=file.toml for yours)
	$(BIN)/ccm-gateway serve $(if $(CONFIG),--config $(CONFIG),)

test: $(STAMP) ## lint, then the whole test suite
	$(BIN)/ruff check ccm_gateway tests
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ccm_gateway tests

format: $(STAMP)
	$(BIN)/ruff format ccm_gateway tests

check-config: $(STAMP) ## CONFIG=file.toml: validate and print it redacted
	$(BIN)/ccm-gateway check-config $(CONFIG)

bench: $(STAMP)
	@echo "make bench: the benchmark suite is not built yet (issue: bundled benchmarks)"; exit 1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
