#!/usr/bin/env bash
# Node.js client tests: ioredis and BullMQ, unchanged, against the real
# redoubt binary in front of a real redis-server. Builds nothing: the caller
# has built target/debug/redoubt (or sets TEST_REDOUBT_BIN).
set -euo pipefail
cd "$(dirname "$0")"

root="$(cd ../../.. && pwd)"
export TEST_REDOUBT_BIN="${TEST_REDOUBT_BIN:-$root/target/debug/redoubt}"
if [ ! -x "$TEST_REDOUBT_BIN" ]; then
  echo "node client tests: no redoubt binary at $TEST_REDOUBT_BIN (cargo build -p redoubt, or set TEST_REDOUBT_BIN)" >&2
  exit 2
fi
command -v node >/dev/null || { echo "node client tests: node (>= 20) not found" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "node client tests: redis-server not found" >&2; exit 2; }

# (Re)install when node_modules is missing or older than the lock file.
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# Files run in parallel, each with its own redis-server and redoubt. The
# outer timeout is a backstop: a hang must fail the suite, not stall it.
exec timeout --kill-after=10 180 node --test --test-timeout=60000 test/*.test.js
