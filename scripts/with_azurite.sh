#!/usr/bin/env bash
# Runs a command with Azurite listening on 127.0.0.1:10000-10002, starting it (data in .azurite/) if it
# is not already running, and stopping what this script started when the command ends.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid=""
if ! listening 10000 || ! listening 10001 || ! listening 10002; then
  data="$root/.azurite"
  mkdir -p "$data"
  "$root/node_modules/.bin/azurite" --silent --location "$data" --skipApiVersionCheck --loose \
    --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 >"$data/azurite.log" 2>&1 &
  pid=$!
  # Azurite stops at once on SIGINT but may take a minute on SIGTERM while keep-alive connections stay open.
  stop() { kill -INT "$pid" 2>/dev/null || return 0; for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done; kill -KILL "$pid" 2>/dev/null || true; }
  trap stop EXIT
  for _ in $(seq 1 150); do
    listening 10000 && listening 10001 && listening 10002 && break
    kill -0 "$pid" 2>/dev/null || { echo "Azurite exited; see $data/azurite.log" >&2; exit 1; }
    sleep 0.2
  done
  listening 10002 || { echo "Azurite did not open ports 10000-10002 within 30 s" >&2; exit 1; }
  echo "Azurite started (pid $pid, data in .azurite/)"
fi
"$@"
