# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make run    create .venv, install, start the gateway (embedded simulator) on :8000
#   make test   install what the tests need (system programs included) and run the suite

# The venv's interpreter: the system's CPython when it is 3.11+, else the first python3 on PATH;
# `make PYTHON=...` picks another. Debian's is built with profile-guided and link-time optimisation
# (as the official image deploy/Dockerfile starts from builds its own) and linked statically: the
# gateway relays an event on it with about 5 % less CPU than on a plain source build such as
# pyenv's (docs/performance.md, "Machine").
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
            && echo /usr/bin/python3 || echo python3)
endif
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests drive for real: the binary each provides, then the package.
SYSTEM_DEPS := nginx:nginx-light prometheus:prometheus promtool:prometheus \
               amtool:prometheus-alertmanager redis-server:redis-server chromium:chromium node:nodejs

.PHONY: run test lint typecheck system-deps bench nginx nginx-stop dashboards render rules-test clean

# The modules setup.py compiles with mypyc: the editable install puts the compiled ones beside
# their sources, where they win, so changing a source means building again (about 90 s).
COMPILED := $(shell sed -n 's/^    "\(gateway\/.*\.py\)",$$/\1/p' setup.py)

$(STAMP): pyproject.toml setup.py $(COMPILED)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }
	@# setup.py compiles with mypyc (a C compiler, Python's headers); Debian's Python makes venvs
	@# only with python3-venv.
	@missing=""; \
	command -v cc >/dev/null 2>&1 && $(PYTHON) -c 'import sysconfig, os, sys; \
	  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || \
	  missing="gcc python3-dev"; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || exit 1; \
	fi
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
	  $(SUDO) apt-get update -qq || exit 1; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || exit 1; \
	fi

test: $(STAMP) system-deps
	$(BIN)/ruff check gateway tests dashboards deploy
	$(BIN)/mypy
	cd frontend && node --test tests/
	$(BIN)/pytest -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check gateway tests dashboards deploy

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP) system-deps
	$(BIN)/claude-gateway bench

nginx:  # nginx in front of `make run`, on http://127.0.0.1:8080
	mkdir -p logs
	nginx -p . -c nginx.conf

nginx-stop:
	nginx -p . -c nginx.conf -s quit

dashboards: $(STAMP)  # regenerate the committed Grafana JSON from dashboards/build.py
	$(BIN)/python dashboards/build.py

render: $(STAMP)  # regenerate the Kubernetes renderings of the alert rules and collector config
	$(BIN)/python deploy/render.py

rules-test:
	cd deploy/prometheus && promtool test rules alerts_test.yml alerts_slow_burn_test.yml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache logs test-artifacts build
	find . -maxdepth 3 -name '*.so' -not -path './$(VENV)/*' -delete
