#!/usr/bin/env bash
# User-space instructions per command, counted by valgrind: a measure that
# does not move with the machine's load, for judging a change to the hot
# path (the ratio benches are the record, these the measure). Not a test.
#
#   scripts/instructions.sh standalone TEST PIPE [N]   redis-benchmark -t TEST -P PIPE
#   scripts/instructions.sh proxy TEST PIPE [N]        in front of a redis-server
#   scripts/instructions.sh redis TEST PIPE [N]        redis-server itself (everysec)
#   scripts/instructions.sh outage [N]                 durable SETs while Redis is down
#
# standalone/proxy/redis: cachegrind over a run of N requests and one of
# 2N (50 clients, 1,000 keys); per command = the difference / N, so
# start-up and shutdown cancel out. outage: callgrind, fsync = "always",
# one durable keyspace `key:*`, the upstream killed, counters zeroed once
# /status says down, then N SETs (50 clients, 100,000 keys); prints the
# total / N (every thread: sessions, the journal's writer) and keeps the
# profile for callgrind_annotate. Defaults: N = 20000.
# env: BIN, the redoubt binary (default: target/release/redoubt, built).
# Not REDOUBT_BIN: Redoubt refuses REDOUBT_* settings it does not know.
set -euo pipefail
cd "$(dirname "$0")/.."
for c in valgrind redis-server redis-benchmark redis-cli curl python3; do
  command -v $c >/dev/null || { echo "instructions: $c missing (apt-get install valgrind; scripts/test.sh installs redis-server and redis-tools)" >&2; exit 1; }
done
MODE=${1:?usage: scripts/instructions.sh standalone|proxy|redis TEST PIPE [N] | outage [N]}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet -p redoubt
  BIN=$PWD/target/release/redoubt
fi
D=$(mktemp -d /tmp/redoubt-instructions.XXXX)
UPORT=17451; PORT=17452; APORT=17453; PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; }
trap cleanup EXIT
up() { # $1 port, $2 pid of the server, $3 its log
  until redis-cli -p $1 ping 2>/dev/null | grep -q PONG; do
    kill -0 $2 2>/dev/null || { echo "instructions: the server on port $1 exited:" >&2; grep -v '^==' "$3" >&2 || true; exit 1; }
    sleep 0.1
  done
}
state() { curl -fsS -m 10 http://127.0.0.1:$APORT/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }

if [ "$MODE" = outage ]; then
  N=${2:-20000}
  printf '[journal]\nfsync = "always"\n\n[[keyspace]]\npattern = "key:*"\npolicy = "durable"\n' > $D/redoubt.toml
  mkdir -p $D/up
  redis-server --port $UPORT --bind 127.0.0.1 --save '' --appendonly no --dir $D/up >/dev/null 2>&1 & UPID=$!; PIDS+=($UPID)
  up $UPORT $UPID /dev/null
  (cd $D && RUST_LOG=warn exec valgrind --tool=callgrind --callgrind-out-file=$D/callgrind.out "$BIN" serve \
    --config $D/redoubt.toml --upstream redis://127.0.0.1:$UPORT --listen 127.0.0.1:$PORT \
    --admin 127.0.0.1:$APORT --data-dir $D/data >/dev/null 2>$D/valgrind.log) & SPID=$!; PIDS+=($SPID)
  up $PORT $SPID $D/valgrind.log
  until [ "$(state 2>/dev/null)" = up ]; do sleep 0.2; done
  kill -9 $UPID
  until [ "$(state 2>/dev/null)" = down ]; do sleep 0.2; done
  callgrind_control -z $SPID >/dev/null
  redis-benchmark -p $PORT -t set -n $N -c 50 -r 100000 -q >/dev/null 2>&1
  callgrind_control -d $SPID >/dev/null
  kill $SPID; wait $SPID 2>/dev/null || true
  f=$(ls -S $D/callgrind.out.* | head -1)
  total=$(grep -m1 "^summary:" "$f" | awk '{print $2}')
  echo "outage durable SET (fsync always): $(( total / N )) instructions per command ($total over $N)"
  echo "profile: callgrind_annotate --inclusive=yes $f"
  trap - EXIT; cleanup
  exit 0
fi

TEST=${2:?TEST (a redis-benchmark -t name)}; PIPE=${3:?PIPE}; N=${4:-20000}
if [ "$MODE" = proxy ]; then
  redis-server --port $UPORT --bind 127.0.0.1 --save '' --appendonly no --dir $D >/dev/null 2>&1 & PIDS+=($!)
  up $UPORT $! /dev/null
fi
one() { # $1 = how many runs of N -> the server's instruction total
  rm -rf $D/data; mkdir -p $D/data
  case $MODE in
    redis) valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=$D/cg.$1 redis-server --port $PORT \
             --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --dir $D/data >/dev/null 2>$D/vg.$1 & ;;
    standalone) RUST_LOG=warn REDOUBT_JOURNAL_FSYNC=everysec valgrind --tool=cachegrind --cache-sim=no \
             --cachegrind-out-file=$D/cg.$1 "$BIN" serve --listen 127.0.0.1:$PORT --admin 127.0.0.1:$APORT \
             --data-dir $D/data >/dev/null 2>$D/vg.$1 & ;;
    proxy) RUST_LOG=warn valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=$D/cg.$1 "$BIN" serve \
             --upstream redis://127.0.0.1:$UPORT --listen 127.0.0.1:$PORT --admin 127.0.0.1:$APORT \
             --data-dir $D/data >/dev/null 2>$D/vg.$1 & ;;
    *) echo "instructions: unknown mode $MODE" >&2; exit 2 ;;
  esac
  local pid=$!
  up $PORT $pid $D/vg.$1
  for _ in $(seq $1); do
    redis-benchmark -p $PORT -n $N -c 50 -r 1000 -P $PIPE -q -t $TEST >/dev/null 2>&1
  done
  if [ "$MODE" = redis ]; then redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true; else kill -TERM $pid; fi
  wait $pid 2>/dev/null || true
  grep -m1 "^summary:" $D/cg.$1 | awk '{print $2}'
}
a=$(one 1); b=$(one 2)
echo "$MODE $TEST -P $PIPE: $(( (b - a) / N )) instructions per command (runs of $N and $((2 * N)))"
rm -rf $D
