# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make run    create .venv, install, start the gateway (embedded simulator) on :8000
#   make test   install what the tests need (system programs included) and run the suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests drive for real: the binary each provides, then the package.
SYSTEM_DEPS := nginx:nginx-light prometheus:prometheus promtool:prometheus \
               redis-server:redis-server chromium:chromium node:nodejs

.PHONY: run test lint typecheck system-deps bench nginx clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/claude-gateway serve

system-deps:
	@missing=""; for pair in $(SYSTEM_DEPS); do \
	  bin=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: $(STAMP) system-deps
	$(BIN)/ruff check gateway tests dashboards
	$(BIN)/mypy
	cd frontend && node --test tests/
	$(BIN)/pytest -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check gateway tests dashboards

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP) system-deps
	$(BIN)/claude-gateway bench

nginx:
	mkdir -p logs/nginx
	nginx -p . -c nginx.conf

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache logs test-artifacts
