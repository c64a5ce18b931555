# Everyday commands. `make demo` and `make test` each set up .venv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup system-deps demo test unit integration lint typecheck check clean checkov

# setup.py compiles the fast tfvars reader when a C compiler is there; without one tfo reads with its
# Python readers (the same results, seconds slower on thousands of files).
$(BIN)/.installed: pyproject.toml setup.py orchestrator/hcl/_literal.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@$(BIN)/python -c "import orchestrator.hcl._literal" 2>/dev/null || \
	  echo "note: no C compiler (gcc): tfvars are read by the Python readers only"
	touch $@

# Bytecode for the project's own modules, as pip writes it for an installed package: every tfo, worker
# and test-provider process would otherwise compile them again (~0.06 s each), e.g. where
# PYTHONDONTWRITEBYTECODE is set. Up-to-date files are skipped; a stale one is never used.
setup: $(BIN)/.installed
	@$(BIN)/python -m compileall -q orchestrator cli workers tests/__init__.py tests/testprovider >/dev/null

demo: setup
	bash ops/demo.sh

# redis-server for the distributed tests, systemd-analyze and docker-compose for the ops kit's linters,
# chromium and chromium-driver for the dashboard's browser tests, promtool (prometheus) for its metrics and
# alert rules, gcc for the compiled
# tfvars reader the tests check: installed with apt-get when missing and we are root.
system-deps:
	@command -v gcc >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev; \
	  else echo "note: gcc not found; the compiled tfvars reader's tests fail without it"; fi; }
	@command -v redis-server >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  else echo "note: redis-server not found; the distributed tests fail without it"; fi; }
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; \
	  else echo "note: systemd-analyze not found; the ops kit's linter test fails without it"; fi; }
	@command -v docker-compose >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose; \
	  else echo "note: docker-compose not found; the compose file's linter test fails without it"; fi; }
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "note: chromium/chromedriver not found; the dashboard's browser tests fail without them"; fi; }
	@command -v promtool >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	  else echo "note: promtool (Debian's prometheus) not found; the metrics and alert-rule tests fail without it"; fi; }

# Checkov in its own environment (its pins would move tfo's), for the policy tests and for local use:
# [tfo.policy] checkov_bin = ".venv-checkov/bin/checkov".
CHECKOV_VERSION ?= 3.3.30
$(VENV)-checkov/bin/checkov:
	$(PYTHON) -m venv $(VENV)-checkov
	$(VENV)-checkov/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'

checkov: $(VENV)-checkov/bin/checkov

# Two lanes (tests/conftest.py): the SIGKILL trials, which mostly wait out visibility timeouts, beside the rest.
test: system-deps setup checkov
	@$(BIN)/python -c "import orchestrator.hcl._literal" 2>/dev/null || $(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pytest -q -ra -n 2 --dist loadgroup

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup system-deps
	$(BIN)/pytest -q -ra tests/integration

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: setup
	$(BIN)/mypy

check: lint test

clean:
	rm -rf $(VENV) $(VENV)-checkov .tfo .tfo-demo .pytest_cache .mypy_cache .ruff_cache *.egg-info
