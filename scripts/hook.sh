#!/bin/sh
# Runs an azd hook script (azure.yaml) with a Python that can run it: .venv/bin/python, else python3, else python.
# Stock macOS and Debian/Ubuntu have no `python` command, and the hooks need httpx and azure-identity, so the
# interpreter is checked before the hook starts and a missing one fails with a one-line install hint.
#   sh scripts/hook.sh scripts/register_webhook.py [args...]
set -eu
cd "$(dirname "$0")/.."

py=""
if [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then
            py=$candidate
            break
        fi
    done
fi
if [ -z "$py" ]; then
    echo "hook: no Python found (.venv/bin/python, python3 or python); install Python 3.11+, then run: python3 -m venv .venv && .venv/bin/python -m pip install -r requirements.txt" >&2
    exit 1
fi
if ! "$py" -c "import httpx, azure.identity" >/dev/null 2>&1; then
    echo "hook: $py cannot import httpx and azure.identity; run: $py -m pip install -r requirements.txt (or create .venv: python3 -m venv .venv && .venv/bin/python -m pip install -r requirements.txt)" >&2
    exit 1
fi
exec "$py" "$@"
