#!/usr/bin/env bash
# Redoubt's replica of the durable keyspaces next to a real Redis replica,
# on this machine, in one run:
#   1. initial sync of N keys (DEBUG POPULATE, 100-byte values): time to a
#      loaded copy and its memory, redis-server --replicaof vs Redoubt;
#   2. replication lag under redis-benchmark SET load: bytes behind
#      Redis's master_repl_offset, sampled every 50 ms, for both.
# Usage: scripts/bench-replica.sh [KEYS] (default 1000000). Needs a release
# build (cargo build --release -p redoubt), redis-server, redis-benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-1000000}"
BIN="${REDOUBT_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/redoubt}"
[ -x "$BIN" ] || { echo "no release binary at $BIN (cargo build --release -p redoubt)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
field() { redis-cli -p "$1" INFO "$2" | tr -d '\r' | awk -F: -v k="$3" '$1==k {print $2}'; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

P=$(free_port); R=$(free_port); D=$(free_port); A=$(free_port)
mkdir -p "$work/p" "$work/r" "$work/d"
redis-server --port "$P" --save '' --dir "$work/p" --enable-debug-command yes \
  --repl-diskless-sync-delay 0 --daemonize no >/dev/null &
pids+=($!)
until redis-cli -p "$P" PING >/dev/null 2>&1; do sleep 0.05; done
redis-cli -p "$P" DEBUG POPULATE "$KEYS" key 100 >/dev/null
echo "primary: $KEYS keys, used_memory $(field "$P" memory used_memory_human)"

# 1a. A real replica.
t0=$(now_ms)
redis-server --port "$R" --save '' --dir "$work/r" --replicaof 127.0.0.1 "$P" --daemonize no >/dev/null &
rpid=$!; pids+=($rpid)
deadline=$(( $(date +%s) + 300 ))
until [ "$(field "$R" replication master_link_status 2>/dev/null)" = "up" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the redis replica did not sync in 300 s" >&2; exit 1; }
  sleep 0.02
done
t_redis=$(( $(now_ms) - t0 ))
rss_redis=$(rss_kib "$rpid")

# 1b. Redoubt, every key in a durable keyspace.
cat > "$work/redoubt.toml" <<EOF
listen = "127.0.0.1:$D"
upstream = "redis://127.0.0.1:$P"
data_dir = "$work/d"
[admin]
listen = "127.0.0.1:$A"
[[keyspace]]
pattern = "key:*"
policy = "durable"
EOF
t0=$(now_ms)
"$BIN" serve --config "$work/redoubt.toml" >/dev/null 2>&1 &
dpid=$!; pids+=($dpid)
status() { curl -s "127.0.0.1:$A/status"; }
deadline=$(( $(date +%s) + 300 ))
until status 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["journal"]["replica"]["state"]=="streaming" else 1)' 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "redoubt's replica did not sync in 300 s: $(status)" >&2; exit 1; }
  sleep 0.05
done
t_redoubt=$(( $(now_ms) - t0 ))
rss_redoubt=$(rss_kib "$dpid")
facts=$(status | python3 -c 'import json,sys; r=json.load(sys.stdin)["journal"]["replica"]; f=r["last_full_sync"]; print(r["keys"], r["bytes"], f["rdb_bytes"], f["load_ms"])')
read -r rkeys rbytes rdb load_ms <<<"$facts"
echo
echo "initial sync of $KEYS keys"
printf '  %-22s %8s ms   RSS %7d MiB\n' "redis-server replica" "$t_redis" $((rss_redis / 1024))
printf '  %-22s %8s ms   RSS %7d MiB   (%s keys kept, ~%d MiB accounted, RDB %d MiB, load %s ms)\n' \
  "redoubt" "$t_redoubt" $((rss_redoubt / 1024)) "$rkeys" $((rbytes / 1048576)) $((rdb / 1048576)) "$load_ms"
python3 -c "print('  ratio redoubt/redis: time %.2f, RSS %.2f' % ($t_redoubt/max($t_redis,1), $rss_redoubt/max($rss_redis,1)))"

# 2. Lag under load.
echo
echo "replication lag under redis-benchmark SET (-P 16, 100-byte values, keys in key:*)"
samples="$work/lag.txt"
( while :; do
    m=$(field "$P" replication master_repl_offset)
    r=$(field "$R" replication slave_repl_offset)
    d=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["journal"]["replica"]["offset"])')
    echo "$m $r $d" >> "$samples"
    sleep 0.05
  done ) &
sampler=$!; pids+=($sampler)
redis-benchmark -p "$P" -t set -n 2000000 -r "$KEYS" -d 100 -P 16 -q | tr '\r' '\n' | tail -1
kill "$sampler" 2>/dev/null || true
python3 - "$samples" <<'EOF'
import sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 3]
lr = sorted(max(0, m - r) for m, r, d in rows)
ld = sorted(max(0, m - d) for m, r, d in rows)
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
print("  samples %d; bytes behind master_repl_offset (p50 / p99 / max):" % len(rows))
print("  %-22s %9d / %9d / %9d" % ("redis-server replica", q(lr, .5), q(lr, .99), lr[-1]))
print("  %-22s %9d / %9d / %9d" % ("redoubt", q(ld, .5), q(ld, .99), ld[-1]))
EOF
