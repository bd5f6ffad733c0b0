#!/usr/bin/env bash
# Node.js client tests: ioredis, node-redis and BullMQ, unchanged, against
# the real redoubt binary in front of a real redis-server. Builds nothing: the caller
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

# Files run in parallel, each with its own redis-server and redoubt. A hang
# must fail the suite, not stall it: --test-timeout bounds each file (node 20
# applies it to a file as a whole, and to each test in it unless the test
# sets its own); --test-force-exit ends a file whose tests are done but whose
# clients (a BullMQ worker of a test that timed out) still hold the event
# loop; the outer timeout is the backstop for the run. 120 s per file: the
# BullMQ outage files run a 5 s outage, recovery and a drain of a few
# hundred jobs, up to ~60 s on a loaded machine; the suite runs files one or
# two at a time on 2 cores.
exec timeout --kill-after=10 900 node --test --test-timeout=120000 --test-force-exit test/*.test.js
