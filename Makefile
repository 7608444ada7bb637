# The README's commands. `make test` is what CI runs (.ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test install servers lint typecheck contracts unit ha suites mutation fmt clean dev demo

test: lint typecheck contracts suites

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# redis-server and OpenBao for the integration tests (installed when absent)
servers: $(STAMP)
	VENV=$(VENV) tools/ensure-servers.sh

# the embedded default: no servers, local key, in-memory state, the example scopes/
dev: $(STAMP)
	$(VENV)/bin/broker dev

# broker dev + broker gateway + a git server + an API, and an agent that works and missteps
# (no Redis, no OpenBao; needs git): examples/sandbox-demo/README.md
demo: $(STAMP)
	$(PY) examples/sandbox-demo/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check broker tests tools examples bench
	$(VENV)/bin/ruff format --check broker examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

contracts: $(STAMP)
	$(VENV)/bin/lint-imports

# pytest exits 5 when nothing was collected: that is a failure here, never a pass.
unit: $(STAMP) servers
	$(PY) -m pytest --cov --cov-report=term:skip-covered; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# the HA suites (clusters of real processes that mostly wait on I/O): marked `ha`
ha: $(STAMP) servers
	$(PY) -m pytest -m ha -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no ha tests: failing"; exit 1; fi; exit $$rc

# the main suite, the HA suites and the mutation check (on a copy of the tree) side by
# side: they mostly wait on servers and on each other's processes; all three must pass
suites: $(STAMP) servers
	$(MAKE) --no-print-directory ha > .ha.log 2>&1 & ha=$$!; \
	  $(PY) tools/mutation_check.py --copy > .mutation.log 2>&1 & mut=$$!; \
	  $(MAKE) --no-print-directory unit; unit=$$?; \
	  wait $$ha; ha_rc=$$?; wait $$mut; mut_rc=$$?; \
	  echo "---- make ha ----"; cat .ha.log; echo "---- the mutation check ----"; cat .mutation.log; \
	  test $$unit -eq 0 && test $$ha_rc -eq 0 && test $$mut_rc -eq 0

mutation: $(STAMP)
	$(PY) tools/mutation_check.py

fmt: $(STAMP)
	$(VENV)/bin/ruff format broker
	$(VENV)/bin/ruff check --fix broker tests tools

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .coverage
