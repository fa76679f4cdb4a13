# One-command entry points: `make demo` runs the main job, `make test` runs every check.
# Both create .venv and install into it first, every package from a hash-pinned lock in
# requirements/ (`make demo` the runtime lock only, `make test` the dev lock); nothing needs to
# be installed by hand. `make lock` rewrites the locks after a change to pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME_LOCK := requirements/runtime.txt
DEV_LOCK := requirements/dev.txt
stamp = $(VENV)/.installed-$(1)-$(shell cat pyproject.toml $(2) | cksum | cut -d' ' -f1)
RUNTIME := $(call stamp,runtime,$(RUNTIME_LOCK))
DEV := $(call stamp,dev,$(DEV_LOCK))
# loa itself goes in last, without dependencies and built with the lock's setuptools
install = $(BIN)/python -m pip install --quiet --require-hashes -r $(1) \
	&& $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
# the index only (no local wheel folders or mirrors from this machine's pip configuration)
PIP_COMPILE = PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile \
	--quiet --generate-hashes --allow-unsafe --all-build-deps --strip-extras \
	--no-emit-index-url --no-emit-find-links --pip-args=--isolated

.PHONY: demo test lint unit tools pytest bench bench-quick lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml $(RUNTIME_LOCK) | $(BIN)/python
	$(call install,$(RUNTIME_LOCK))
	rm -f $(VENV)/.installed-runtime-* && touch $@

# the dev lock holds the runtime lock's versions: a venv made for tests serves the demo too
$(DEV): pyproject.toml $(DEV_LOCK) | $(BIN)/python
	$(call install,$(DEV_LOCK))
	rm -f $(VENV)/.installed-* && touch $@ $(RUNTIME)

demo: $(RUNTIME)
	$(BIN)/loa demo

# every check: lint, then the whole suite on both event loops and both Redis servers
test: lint tools
	@$(MAKE) --no-print-directory pytest

# a developer's quick run: one loop (uvloop) and one server (the local Redis service), without
# tests/e2e (processes, cluster, browser, Prometheus, benchmarks, demo: `make test` runs them),
# spread over twice as many pytest-xdist workers as cores, as most tests wait on Redis, sockets
# or subprocesses; worksteal, so a worker left with long tests hands the rest to the others
UNIT_WORKERS ?= $(shell echo $$(( 2 * $$(nproc 2>/dev/null || echo 1) )))
unit: $(DEV)
	@LOA_TEST_MATRIX=quick $(MAKE) --no-print-directory pytest \
	  PYTEST_ARGS="--ignore=tests/e2e -n $(UNIT_WORKERS) --dist worksteal $(PYTEST_ARGS)"

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# what the end-to-end tests run beside loa, installed here and never inside a test: Debian's
# Chromium and Prometheus (as root, when missing) and the npm SMPP server the peers use
tools:
	@if ! command -v chromium >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq --no-install-recommends chromium chromium-driver prometheus \
	      || (apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	          chromium chromium-driver prometheus)) >/dev/null; \
	  else echo "chromium or prometheus missing (apt install them): their tests will skip" >&2; fi; \
	fi
	@if [ ! -f tests/peers/node_modules/smpp/package.json ] && command -v npm >/dev/null; then \
	  npm ci --prefix tests/peers --no-audit --no-fund --silent; fi

# pytest exits 5 when it collected no test: that is a broken suite, reported as such.
pytest: $(DEV)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; exit 1; fi; \
	exit $$rc

# every benchmark against its peer, results in benchmarks/results/<date>.json and .md
bench: $(DEV) tools
	$(BIN)/python benchmarks/run.py

bench-quick: $(DEV) tools
	$(BIN)/python benchmarks/run.py --quick

# the dev lock first, then the runtime lock held to its versions
lock: $(DEV)
	$(PIP_COMPILE) --extra dev -o $(DEV_LOCK) pyproject.toml
	grep -E '^[A-Za-z0-9_.-]+==' $(DEV_LOCK) | cut -d' ' -f1 > requirements/dev-pins.txt
	$(PIP_COMPILE) -c requirements/dev-pins.txt -o $(RUNTIME_LOCK) pyproject.toml
	rm requirements/dev-pins.txt

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
