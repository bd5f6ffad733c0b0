#!/usr/bin/env bash
# Tail latency at a fixed rate: Redis direct, twemproxy and Redoubt (proxy
# mode) on CPU 0, the load on CPU 1. The rate is half of Redis direct's
# peak (`redis-benchmark -t get -c 50`, no pipelining); every target gets
# that same rate, open loop (crates/redoubt/examples/rate_load.rs: latency
# from each request's due time). Interleaved runs, medians. Not a test.
#   scripts/bench-latency.sh [REPS]     env: SECONDS (per run, default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}; SECS=${SECONDS_PER_RUN:-10}
for c in redis-server redis-benchmark redis-cli nutcracker taskset; do
  command -v $c >/dev/null || { echo "bench: $c missing (scripts/test.sh installs redis-server, redis-tools, nutcracker)" >&2; exit 1; }
done
cargo build --release --quiet -p redoubt --example rate_load
T=${CARGO_TARGET_DIR:-$PWD/target}/release
D=$(mktemp -d /tmp/redoubt-bench-latency.XXXX)
RPORT=17501; TPORT=17502; PPORT=17503; PADMIN=17504
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; }
trap cleanup EXIT
up() { until redis-cli -p $1 ping 2>/dev/null | grep -q PONG; do sleep 0.05; done; }

taskset -c 0 redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --dir $D --logfile $D/redis.log & PIDS+=($!)
printf 'p:\n  listen: 127.0.0.1:%s\n  redis: true\n  auto_eject_hosts: false\n  servers:\n   - 127.0.0.1:%s:1\n' \
  $TPORT $RPORT > $D/twem.yml
taskset -c 0 nutcracker -c $D/twem.yml -s $((TPORT + 100)) -a 127.0.0.1 -o $D/twem.log & PIDS+=($!)
RUST_LOG=warn taskset -c 0 $T/redoubt serve --upstream redis://127.0.0.1:$RPORT --listen 127.0.0.1:$PPORT \
  --admin 127.0.0.1:$PADMIN --data-dir $D/redoubt 2>$D/redoubt.log & PIDS+=($!)
up $RPORT; up $TPORT; up $PPORT
redis-cli -p $RPORT set rate:load:k 123 >/dev/null

peak=$(taskset -c 1 redis-benchmark -p $RPORT -t get -n 200000 -c 50 -q --csv 2>/dev/null | tr -d '"' | awk -F, '$1=="GET" {print int($2)}')
rate=$((peak / 2))
: > $D/raw
for rep in $(seq $REPS); do
  for t in direct:$RPORT twemproxy:$TPORT redoubt:$PPORT; do
    echo "${t%:*} $(taskset -c 1 $T/examples/rate_load ${t#*:} $rate $SECS)" >> $D/raw
  done
done
printf '%-10s %8s %8s %9s %10s %8s\n' target p50_us p99_us p999_us "p99/direct" late
awk '
  function med(s,   a, n, i, j, t) { n = split(s, a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j+1] = a[j]; a[j+1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
  { p50[$1] = p50[$1] " " $2; p99[$1] = p99[$1] " " $3; p999[$1] = p999[$1] " " $4; late[$1] = late[$1] " " $6 }
  END { split("direct twemproxy redoubt", T, " ")
    for (i = 1; i <= 3; i++) { t = T[i]
      printf "%-10s %8d %8d %9d %10.2f %8d\n", t, med(p50[t]), med(p99[t]), med(p999[t]), med(p99[t]) / med(p99["direct"]), med(late[t]) } }' $D/raw
echo "(rate $rate GET/s = half of Redis direct's redis-benchmark peak $peak, 50 connections, ${SECS} s per run, median of $REPS interleaved runs; late = requests sent > 1 ms past due; raw in $D/raw)"
