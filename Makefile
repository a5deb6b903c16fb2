# Each target bootstraps .venv on a fresh machine, then does its job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium
NGINX ?= /usr/sbin/nginx

.PHONY: run test lint check bench clean chromium nginx

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway serve --config gateway.yaml

lint: $(STAMP)
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy

check: $(STAMP)
	$(BIN)/gateway check --config gateway.yaml
	$(BIN)/gateway policy check policies/
	$(BIN)/gateway policy test policies/

# The console's browser tests drive Debian's Chromium: installed here when missing and run as root (CI);
# otherwise they skip, with the reason (GATEWAY_TEST_SERVICES=required makes that a failure).
chromium:
	@test -x $(CHROMIUM) || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
		else echo "$(CHROMIUM) missing: the console's browser tests will skip (apt-get install chromium)"; fi; }

# The replica test (tests/integration/test_replicas.py) balances three gateways with Debian's nginx, run from a
# config of its own in the test's folder (the system's nginx is neither started nor used): installed likewise.
nginx:
	@test -x $(NGINX) || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nginx; \
		else echo "$(NGINX) missing: the replica test will skip (apt-get install nginx)"; fi; }

test: lint check chromium nginx
	$(BIN)/pytest -q

bench: $(STAMP)
	bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache gateway.db gateway.db-wal gateway.db-shm
