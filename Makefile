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

.PHONY: demo test lint unit bench bench-quick lock clean

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

test: lint unit

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a broken suite, reported as such.
unit: $(DEV)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; exit 1; fi; \
	exit $$rc

# every benchmark against its peer, results in benchmarks/results/<date>.json and .md
bench: $(DEV)
	$(BIN)/python benchmarks/run.py

bench-quick: $(DEV)
	$(BIN)/python benchmarks/run.py --quick

# the dev lock first, then the runtime lock held to its versions
lock: $(DEV)
	$(PIP_COMPILE) --extra dev -o $(DEV_LOCK) pyproject.toml
	grep -E '^[A-Za-z0-9_.-]+==' $(DEV_LOCK) | cut -d' ' -f1 > requirements/dev-pins.txt
	$(PIP_COMPILE) -c requirements/dev-pins.txt -o $(RUNTIME_LOCK) pyproject.toml
	rm requirements/dev-pins.txt

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
