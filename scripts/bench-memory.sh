#!/usr/bin/env bash
# Memory per client connection: resident memory (VmRSS) of redis-server,
# twemproxy, Redoubt in front of that Redis and standalone Redoubt, idle
# and with CLIENTS connected clients (each has sent one PING and read its
# PONG, then stays idle). Per-connection cost = (RSS with clients - RSS
# idle) / CLIENTS. A measurement, not a test and not a CI gate.
#   scripts/bench-memory.sh      env: CLIENTS (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-10000}
for c in redis-server redis-cli nutcracker python3; do
  command -v $c >/dev/null || { echo "bench: $c missing (scripts/test.sh installs redis-server, redis-tools, nutcracker)" >&2; exit 1; }
done
# Every target holds CLIENTS sockets, and so does the client script (each
# in its own process).
want=$((CLIENTS + 500)); hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$hard" -ge $want ] ||
  { echo "bench: open files hard limit $hard < $want; run with CLIENTS=$((hard - 500))" >&2; exit 1; }
ulimit -n $want
cargo build --release --quiet -p redoubt
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/redoubt
D=$(mktemp -d /tmp/redoubt-bench-memory.XXXX)
RPORT=17401; TPORT=17402; PPORT=17403; PADMIN=17404; SPORT=17405; SADMIN=17406
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; }
trap cleanup EXIT
up() { until redis-cli -p $1 ping 2>/dev/null | grep -q PONG; do sleep 0.05; done; }

redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --maxclients $((CLIENTS + 100)) \
  --dir $D --logfile $D/redis.log & PIDS+=($!); RPID=$!
printf 'p:\n  listen: 127.0.0.1:%s\n  redis: true\n  auto_eject_hosts: false\n  servers:\n   - 127.0.0.1:%s:1\n' \
  $TPORT $RPORT > $D/twem.yml
nutcracker -c $D/twem.yml -s $((TPORT + 100)) -a 127.0.0.1 -o $D/twem.log & PIDS+=($!); TPID=$!
cat > $D/limits.toml <<EOF
[limits]
max_clients = $((CLIENTS + 100))
EOF
RUST_LOG=warn $BIN serve --config $D/limits.toml --upstream redis://127.0.0.1:$RPORT --listen 127.0.0.1:$PPORT \
  --admin 127.0.0.1:$PADMIN --data-dir $D/proxy 2>$D/proxy.log & PIDS+=($!); PPID_=$!
RUST_LOG=warn $BIN serve --config $D/limits.toml --listen 127.0.0.1:$SPORT \
  --admin 127.0.0.1:$SADMIN --data-dir $D/standalone 2>$D/standalone.log & PIDS+=($!); SPID=$!
up $RPORT; up $TPORT; up $PPORT; up $SPORT

rss_kib() { awk '/^VmRSS/ {print $2}' /proc/$1/status; }

# Opens CLIENTS connections to the port, PINGs on each, reads every PONG,
# prints "ready" and holds them until stdin closes.
HOLD='
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    socks.append(s)
for s in socks:
    if s.recv(16) != b"+PONG\r\n":
        sys.exit("no PONG")
print("ready", flush=True)
sys.stdin.read()
'
printf '%-22s %12s %16s %14s\n' target "idle RSS MiB" "RSS with $CLIENTS" "KiB per client"
for t in redis:$RPORT:$RPID twemproxy:$TPORT:$TPID redoubt-proxy:$PPORT:$PPID_ redoubt-standalone:$SPORT:$SPID; do
  IFS=: read -r name port pid <<<"$t"
  idle=$(rss_kib $pid)
  coproc HOLDER { python3 -c "$HOLD" $port $CLIENTS; }
  read -r line <&"${HOLDER[0]}"
  [ "$line" = ready ] || { echo "bench: $name did not answer $CLIENTS clients" >&2; exit 1; }
  full=$(rss_kib $pid)
  exec {HOLDER[1]}>&-
  wait $HOLDER_PID 2>/dev/null || true
  awk -v n=$name -v i=$idle -v f=$full -v c=$CLIENTS \
    'BEGIN { printf "%-22s %12.1f %16.1f %14.1f\n", n, i / 1024, f / 1024, (f - i) / c }'
done
echo "(VmRSS from /proc; logs in $D)"
