#!/usr/bin/env bash
# Side-by-side benchmark: redis-benchmark against Redis direct, twemproxy and
# Redoubt, interleaved in one run, medians and ratios printed.
#   scripts/bench.sh [REPS]        (env: N, WORKLOADS, see bench-compare.sh)
# Placement (the one figures are quoted in): Redis, twemproxy and Redoubt on
# CPU 0, redis-benchmark on CPU 1. Not a test and not a CI gate.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPARE=${COMPARE:-../shared/tools/bench-compare.sh}
[ -x "$COMPARE" ] || { echo "bench: $COMPARE not found (the team's shared tools)" >&2; exit 1; }
for c in redis-server redis-benchmark nutcracker taskset; do
  command -v $c >/dev/null || { echo "bench: $c missing (scripts/test.sh installs redis-server, redis-tools, nutcracker)" >&2; exit 1; }
done
cargo build --release --quiet -p redoubt
REDIS_PORT=${REDIS_PORT:-17001}; PROXY_PORT=${PROXY_PORT:-17005}; ADMIN_PORT=${ADMIN_PORT:-17009}
D=$(mktemp -d /tmp/redoubt-bench.XXXX)
cleanup() { [ -n "${RPID:-}" ] && kill $RPID 2>/dev/null; [ -n "${SPID:-}" ] && kill $SPID 2>/dev/null; true; }
trap cleanup EXIT
if ! redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; then
  taskset -c 0 redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --dir $D >/dev/null & SPID=$!
  until redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; do sleep 0.05; done
fi
RUST_LOG=warn taskset -c 0 target/release/redoubt serve --upstream redis://127.0.0.1:$REDIS_PORT \
  --listen 127.0.0.1:$PROXY_PORT --admin 127.0.0.1:$ADMIN_PORT --data-dir $D/data 2>$D/redoubt.log & RPID=$!
until redis-cli -p $PROXY_PORT ping 2>/dev/null | grep -q PONG; do sleep 0.05; done
# The compare script's table, with issue 15's aim beside each of Redoubt's
# rows: a ratio to Redis direct, and ahead of twemproxy in the same run.
REDIS_PORT=$REDIS_PORT REDIS_CPU=0 TWEM_CPU=0 BENCH_CPU=1 "$COMPARE" $PROXY_PORT "${1:-3}" | awk '
  BEGIN { aim["P1"] = 1.15; aim["P16"] = 0.85; aim["D1024"] = 1.0 }
  $1 == "wl" { print $0 "   aim"; next }
  $3 == "twem" { twem[$1 "," $2] = $7 }
  $3 == "proxy" && ($1 in aim) {
    ok = ($7 >= aim[$1] && $7 > twem[$1 "," $2]) ? "met" : "not met"
    printf "%s   >= %.2f and > twemproxy %.2f: %s\n", $0, aim[$1], twem[$1 "," $2], ok; next }
  { print }'

