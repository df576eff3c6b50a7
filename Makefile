# Two commands matter: `make run` (start the gateway) and `make test` (the whole suite).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
HOST ?= 127.0.0.1
PORT ?= 8000
SIM_PORT ?= 8001

.PHONY: run test lint typecheck pytest services browser kustomize bootstrap bench fuzz soak clean

# Bytecode is compiled once here: where PYTHONDONTWRITEBYTECODE is set (this machine kind sets
# it), every process would otherwise compile its imports anew (3.9 s before `seedance-gateway
# --help` printed anything, against 1.4 s), and the tests start gateways, simulators and the
# command itself as processes, again and again.
bootstrap:  ## install uv if missing, then the locked environment, compiled to bytecode
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet --compile-bytecode

run: bootstrap  ## migrate, then serve (demo mode + simulator when GATEWAY_UPSTREAM_API_KEY is unset)
	$(UV) run --frozen seedance-gateway migrate
	GATEWAY_DEMO_SIMULATOR_PORT=$${GATEWAY_DEMO_SIMULATOR_PORT:-$(SIM_PORT)} $(UV) run --frozen seedance-gateway serve --host $(HOST) --port $(PORT)

test: bootstrap services browser kustomize lint typecheck pytest  ## everything CI runs

services:  ## start PostgreSQL and Redis if they are not answering
	@bash scripts/ensure-services.sh

browser:  ## Debian's Chromium for the browser test (Playwright drives it; it downloads no browser)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

kustomize:  ## kubectl (kustomize v4+ inside) renders deploy/k8s for tests/test_deploy.py; this machine kind ships it
	@command -v kubectl >/dev/null || (apt-get update -qq && apt-get install -y -qq kubectl) \
	  || { echo "kubectl is needed (kustomize v4+): install it from your distribution or Kubernetes' apt repository"; exit 1; }

lint:
	$(UV) run --frozen ruff check $(wildcard app tests bench migrations)
	$(UV) run --frozen ruff format --check $(wildcard app tests bench migrations)

typecheck:
	$(UV) run --frozen mypy

# Most tests wait on real timings, so three run at once (a file each, its fixtures with it); the
# tests that hold processes to per-second budgets and staleness run after, alone on the machine.
pytest:
	$(UV) run --frozen pytest -n 3 --dist loadfile -m "not serial"
	$(UV) run --frozen pytest -m serial

fuzz: bootstrap services  ## schemathesis, long: FUZZ_EXAMPLES cases per operation and phase
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} $(UV) run --frozen pytest -s tests/e2e/test_fuzz.py

soak: bootstrap services  ## the soak test, long: SOAK_SECONDS of load
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(UV) run --frozen pytest -s tests/e2e/test_soak.py

bench: bootstrap services  ## benchmarks (figures are ratios against a baseline run alongside)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(UV) run --frozen python -m bench

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache gateway.db* test-artifacts
