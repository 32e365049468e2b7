# Switchboard: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test up deps sipp bench bench-load clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# sipp is the real SIP phone in the end-to-end tests and the demo (Debian package sip-tester).
sipp:
	@command -v sipp >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq sip-tester >/dev/null; \
	  else echo "sipp is missing: sudo apt-get install sip-tester (the demo falls back to the emulator's control API)"; fi; }

deps: $(VENV)/.installed node_modules/.installed sipp

## test: create .venv, install, run ruff and mypy, start Azurite, run the whole pytest suite
test: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	scripts/with_azurite.sh $(PY) -m pytest $(PYTEST_ARGS)

## up: the local stack in the foreground (Azurite, emulator, app); Ctrl-C stops it
up: deps
	$(PY) -m localrun.stack

## demo: start the stack, place a scripted call with sipp, stream it, print the record, tear down
demo: deps
	$(PY) -m localrun.demo

## bench: every benchmark, each figure next to its baseline (measured in the same run) and its goal
bench: deps
	scripts/with_azurite.sh bash -c '$(PY) bench/webhook_path.py && $(PY) bench/greeting_latency.py && $(PY) bench/call_setup.py && $(PY) bench/task_hub.py && $(PY) bench/lease.py && $(PY) bench/telemetry_overhead.py && $(MAKE) --no-print-directory bench-load'

## bench-load: the load benchmarks of docs/performance.md (burst, ring path, live calls, overload, cold import)
bench-load: deps
	scripts/with_azurite.sh bash -c '$(PY) bench/cold_import.py && $(PY) bench/ring_path.py && $(PY) bench/burst.py && $(PY) bench/live_calls.py --calls 100 --seconds 30 && $(PY) bench/live_calls.py --calls 250 --seconds 40 && $(PY) bench/overload.py'

clean:
	rm -rf $(VENV) node_modules .azurite .localrun .pytest_cache
