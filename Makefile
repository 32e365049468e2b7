# Switchboard: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test up deps deps-local sipp bench bench-load bench-more mutation clean

# Two sets of Python packages: the local stack's (make demo, make up: the runtime, the emulator, the local runner)
# and, on top, the test and infra tools (make test, make bench). scripts/deps.sh prints each phase and its time.
$(VENV)/.installed-local: requirements.txt requirements-local.txt
	@PYTHON=$(PYTHON) VENV=$(VENV) scripts/deps.sh python requirements-local.txt
	@touch $@

$(VENV)/.installed: requirements.txt requirements-local.txt requirements-dev.txt
	@PYTHON=$(PYTHON) VENV=$(VENV) scripts/deps.sh python requirements-dev.txt
	@touch $@ $(VENV)/.installed-local

node_modules/.installed: package.json package-lock.json
	@scripts/deps.sh node
	@touch $@

# sipp is the real SIP phone in the end-to-end tests and the demo (Debian package sip-tester).
sipp:
	@command -v sipp >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq sip-tester >/dev/null; \
	  else echo "sipp is missing: sudo apt-get install sip-tester (the demo falls back to the emulator's control API)"; fi; }

## deps-local: what make demo and make up need (they run pip and npm side by side); deps: all make test needs
deps-local: $(VENV)/.installed-local node_modules/.installed sipp

deps: $(VENV)/.installed node_modules/.installed sipp

## test: create .venv, install, run ruff and mypy, start Azurite, run the whole pytest suite
test: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	scripts/with_azurite.sh $(PY) -m pytest $(PYTEST_ARGS)

## up: the local stack in the foreground (Azurite, emulator, app); Ctrl-C stops it. Flags: make up ARGS="--help"
up:
	@$(MAKE) --no-print-directory -j2 deps-local
	$(PY) -m localrun.stack $(ARGS)

## demo: start the stack, place a scripted call with sipp, stream it, print the record, tear down
demo:
	@$(MAKE) --no-print-directory -j2 deps-local
	$(PY) -m localrun.demo $(ARGS)

## bench: every benchmark, each figure next to its baseline (measured in the same run) and its goal
bench: deps
	scripts/with_azurite.sh bash -c '$(PY) bench/webhook_path.py && $(PY) bench/greeting_latency.py && $(PY) bench/call_setup.py && $(PY) bench/task_hub.py && $(PY) bench/lease.py && $(PY) bench/telemetry_overhead.py && $(MAKE) --no-print-directory bench-load && $(MAKE) --no-print-directory bench-more'

## bench-load: the load benchmarks of docs/performance.md (burst, set-up floor, ring path, live calls, overload,
## cold import)
bench-load: deps
	scripts/with_azurite.sh bash -c '$(PY) bench/cold_import.py && $(PY) bench/ring_path.py && $(PY) bench/setup_floor.py && $(PY) bench/burst.py && $(PY) bench/live_calls.py --calls 100 --seconds 30 && $(PY) bench/live_calls.py --calls 250 --seconds 40 && $(PY) bench/overload.py'

## bench-more: the other measured figures of the README (capacity count at 100,000 finished calls, converse CPU
## per call-minute, the greeting with Azure Storage's queue polling modelled, log escaping, rules reload, console)
bench-more: deps
	scripts/with_azurite.sh bash -c '$(PY) bench/logsafe.py && $(PY) bench/rules_reload.py && $(PY) bench/console_live.py && $(PY) bench/greeting_in_azure.py && $(PY) bench/capacity_count.py && $(PY) bench/converse_capacity.py'

## mutation: mutation testing of the code that reads untrusted input, score per module (docs/testing.md).
## Not part of make test. One module: make mutation ARGS=shared/phone.py; the survivors: ARGS=--show-survivors
mutation: deps
	scripts/with_azurite.sh $(PY) scripts/mutation.py --all $(ARGS)

clean:
	rm -rf $(VENV) node_modules .azurite .localrun .pytest_cache .mutation
