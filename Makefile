# ccm_gateway — the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench bench-full bench-peers bench-instructions profile soak check-config clean redis-server

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the gateway with its dev tools

run: $(STAMP) ## serve on http://127.0.0.1:8080 (embedded config; CONFIG=file.toml for yours)
	$(BIN)/ccm-gateway serve $(if $(CONFIG),--config $(CONFIG),)

test: $(STAMP) redis-server ## lint, then the whole test suite
	$(BIN)/ruff check ccm_gateway tests benchmarks
	$(BIN)/pytest -q

redis-server: # the Redis integration tests start a real redis-server on a loopback port
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package) for the Redis tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check ccm_gateway tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format ccm_gateway tests benchmarks

check-config: $(STAMP) ## CONFIG=file.toml: validate and print it redacted
	$(BIN)/ccm-gateway check-config $(CONFIG)

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## short benchmark (< 3 min): gateway vs bare proxy vs direct, ratios printed
	$(BIN)/python -m benchmarks.runner $(BENCH_ARGS)

bench-full: $(BENCH_STAMP) ## every scenario, longer runs, RSS over 10k requests
	$(BIN)/python -m benchmarks.runner --full $(BENCH_ARGS)

bench-peers: $(BENCH_STAMP) ## also measure the LiteLLM proxy (installed into .venv-peers) on the same mock
	test -x .venv-peers/bin/litellm || ($(PYTHON) -m venv .venv-peers && .venv-peers/bin/pip install --quiet 'litellm[proxy]')
	$(BIN)/python -m benchmarks.runner --peers .venv-peers/bin/litellm $(BENCH_ARGS)

bench-instructions: $(BENCH_STAMP) ## instructions per request (valgrind callgrind): bare proxy vs gateway, noise-free
	@command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	$(BIN)/python -m benchmarks.instructions $(BENCH_ARGS)

profile: $(BENCH_STAMP) ## py-spy flame graph of the gateway under streaming load → benchmarks/results/profile.svg
	$(BIN)/python -m benchmarks.profile

soak: $(STAMP) ## 10 minutes of mixed traffic with 5% faults; RSS, fds, pools, tasks over time → docs/soak.md
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
