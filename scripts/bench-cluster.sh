#!/usr/bin/env bash
# Redis Cluster: redis-benchmark through Redoubt (one endpoint, standalone
# mode) against redis-benchmark --cluster straight at the nodes, interleaved
# in one run, medians and the ratio printed.
#   scripts/bench-cluster.sh [REPS]     (env: N requests per run, default 100000)
# Three primaries, no replicas, on CPU 0 with Redoubt; redis-benchmark on
# CPU 1. Not a test and not a CI gate.
set -euo pipefail
cd "$(dirname "$0")/.."
for c in redis-server redis-cli redis-benchmark taskset; do
  command -v $c >/dev/null || { echo "bench-cluster: $c missing (scripts/test.sh installs redis-server, redis-tools)" >&2; exit 1; }
done
cargo build --release --quiet -p redoubt
REPS=${1:-3}; N=${N:-100000}
BASE=${BASE:-17101}; PROXY_PORT=${PROXY_PORT:-17205}; ADMIN_PORT=${ADMIN_PORT:-17209}
D=$(mktemp -d /tmp/redoubt-bench-cluster.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
NODES=()
for i in 0 1 2; do
  p=$((BASE + i)); mkdir -p "$D/$p"
  taskset -c 0 redis-server --port $p --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file nodes.conf --save '' --appendonly no --dir "$D/$p" >/dev/null & PIDS+=($!)
  NODES+=("127.0.0.1:$p")
done
for n in "${NODES[@]}"; do until redis-cli -p "${n##*:}" ping >/dev/null 2>&1; do sleep 0.05; done; done
redis-cli --cluster create "${NODES[@]}" --cluster-yes >/dev/null
until redis-cli -p $BASE cluster info | grep -q cluster_state:ok; do sleep 0.1; done
RUST_LOG=warn taskset -c 0 target/release/redoubt serve --upstream "redis+cluster://${NODES[0]}" \
  --listen 127.0.0.1:$PROXY_PORT --admin 127.0.0.1:$ADMIN_PORT --data-dir "$D/data" 2>"$D/redoubt.log" & PIDS+=($!)
until redis-cli -p $PROXY_PORT ping 2>/dev/null | grep -q PONG; do sleep 0.05; done

rps() { # redis-benchmark arguments
  taskset -c 1 redis-benchmark -q -n "$N" -r 100000 "$@" --csv 2>/dev/null | awk -F'","' '/^"[A-Z]/ && !/^"test"/ { print $2 + 0 }'
}
printf "%-6s %-6s %12s %12s %7s\n" wl test cluster redoubt ratio
for wl in "P1:-c 50 -P 1" "P16:-c 50 -P 16"; do
  name=${wl%%:*}; args=${wl#*:}
  for t in set get; do
    direct=(); through=()
    for _ in $(seq "$REPS"); do
      # shellcheck disable=SC2086
      direct+=("$(rps --cluster -p $BASE $args -t $t)")
      # shellcheck disable=SC2086
      through+=("$(rps -p $PROXY_PORT $args -t $t)")
    done
    med() { printf "%s\n" "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
    d=$(med "${direct[@]}"); r=$(med "${through[@]}")
    printf "%-6s %-6s %12.0f %12.0f %7.2f\n" "$name" "$t" "$d" "$r" "$(echo "$r / $d" | bc -l)"
  done
done
