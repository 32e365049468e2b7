#!/usr/bin/env bash
# Installs one part of what `make demo` / `make up` / `make test` need, saying what it does and how long it took.
#   scripts/deps.sh python REQUIREMENTS_FILE   create .venv if missing, pip install REQUIREMENTS_FILE into it
#   scripts/deps.sh node                       npm ci (Azurite, into node_modules/)
# pip's own progress is shown (one line per package it fetches or installs); lines about packages that are already
# there are left out, so a re-run after a small change to a requirements file stays short.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

start=$SECONDS
say() { printf '[deps %3ds] %s\n' "$((SECONDS - start))" "$*"; }

case "${1:-}" in
  python)
    req=${2:?"usage: scripts/deps.sh python REQUIREMENTS_FILE"}
    if [ ! -x "$VENV/bin/python" ]; then
      say "creating $VENV with $("$PYTHON" --version 2>&1)"
      "$PYTHON" -m venv "$VENV"
    fi
    say "pip install -r $req into $VENV ..."
    # --progress-bar off: the bars are redrawn in place on a terminal but become a line per redraw in CI logs.
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -r "$req" 2>&1 \
      | { grep --line-buffered -v -E '^(Requirement already satisfied|Using cached|  Using cached)' || true; } \
      | sed -u 's/^/    /'
    say "python packages of $req ready"
    ;;
  node)
    say "npm ci (Azurite, the Azure Storage emulator, into node_modules/) ..."
    npm ci --no-audit --no-fund --loglevel=error
    say "node_modules ready"
    ;;
  *)
    echo "usage: scripts/deps.sh python REQUIREMENTS_FILE | node" >&2
    exit 2
    ;;
esac
