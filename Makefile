# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench fmt clean protos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.run

## run: install and start croupier on its embedded SQLite file, with a local admin key
run: $(VENV)/.run
	@mkdir -p .croupier
	@test -s .croupier/admin-key || $(BIN)/python -c "import secrets; print('ck_' + secrets.token_urlsafe(32))" > .croupier/admin-key
	@echo "Admin API key: $$(cat .croupier/admin-key)"
	CROUPIER_ADMIN_KEY="$$(cat .croupier/admin-key)" $(BIN)/croupier serve --dev

## test: lint, then the whole suite on SQLite and PostgreSQL
test: $(VENV)/.dev lint
	@scripts/ensure-postgres.sh
	@scripts/ensure-redis.sh
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/mypy --strict tests bench examples

fmt: $(VENV)/.dev
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

## protos: regenerate the wallet's gRPC code (src/croupier/api/grpc/_gen) from protos/
GEN := src/croupier/api/grpc/_gen
protos: $(VENV)/.dev
	@rm -rf build/protos && mkdir -p build/protos
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=build/protos --pyi_out=build/protos \
		protos/wallet/v1/wallet.proto
	mv build/protos/wallet/v1/wallet_pb2.py build/protos/wallet/v1/wallet_pb2.pyi $(GEN)/
	@rm -rf build/protos

## bench: throughput and latency against a raw aiohttp client, measured in the same run
bench: $(VENV)/.dev
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/wallet.py
	$(BIN)/python bench/burst.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
