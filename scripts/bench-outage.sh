#!/usr/bin/env bash
# Issue 5's outage benchmark. A measurement, not a test and not a CI gate.
#   (a) durable writes while Redis is down: Redoubt with journal.fsync =
#       "always" and a durable keyspace covering redis-benchmark's keys
#       (key:*), its upstream SIGKILLed (state down), vs redis-server with
#       appendonly yes / appendfsync always; both data dirs on one disk,
#       servers on CPU 0, redis-benchmark on CPU 1; `-t set -c 50`,
#       interleaved runs, medians. Aim >= 1.0x.
#   (b) replay rate vs `redis-cli --pipe` of the same commands exported
#       with `journal export`: crates/proxy/benches/replay.rs (`-- ratio`),
#       replay with its checkpointing. Aim >= 0.5x.
#   (c) Redis back -> Redoubt serving upstream, empty journal, durable
#       keyspaces configured, default [health]: scripts/outage-timings.py
#       --rounds. Aim: up_after x interval_ms + 100 ms.
#   scripts/bench-outage.sh [REPS]   env: N (SETs per run, default 200000),
#   REPLAY_BENCH_N (default 200000), ROUNDS (for c, default 10), ONLY=a|b|c
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}; N=${N:-200000}; ROUNDS=${ROUNDS:-10}; ONLY=${ONLY:-abc}
for c in redis-server redis-benchmark redis-cli taskset curl python3; do
  command -v $c >/dev/null || { echo "bench: $c missing (scripts/test.sh installs redis-server and redis-tools)" >&2; exit 1; }
done
cargo build --release --quiet -p redoubt
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/redoubt
D=$(mktemp -d /tmp/redoubt-bench-outage.XXXX)
PIDS=()
# Only the main shell cleans up: pipeline subshells must not kill the servers.
cleanup() { [ "$BASHPID" = "$$" ] || return 0; for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; }
trap cleanup EXIT
up() { until redis-cli -p $1 ping 2>/dev/null | grep -q PONG; do sleep 0.05; done; }
state() { curl -fsS http://127.0.0.1:$1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
pending() { curl -fsS http://127.0.0.1:$1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["journal"]["pending_commands"])'; }
med() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
cat > $D/redoubt.toml <<'EOF'
[journal]
fsync = "always"

[[keyspace]]
pattern = "key:*"
policy = "durable"
EOF
echo "bench-outage: data dirs under $D ($(df --output=source $D | tail -1)); load before: $(cut -d' ' -f1-3 /proc/loadavg)"

A_REDIS=-; A_REDOUBT=-; A_RATIO=-
if [[ $ONLY == *a* ]]; then
  UPORT=17201; RPORT=17202; SPORT=17203; APORT=17204
  mkdir -p $D/upstream $D/redis
  redis-server --port $UPORT --bind 127.0.0.1 --save '' --appendonly no --dir $D/upstream --logfile $D/upstream.log & UPID=$!
  PIDS+=($UPID)
  taskset -c 0 redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
    --dir $D/redis --logfile $D/redis.log & PIDS+=($!)
  RUST_LOG=warn taskset -c 0 $BIN serve --config $D/redoubt.toml --upstream redis://127.0.0.1:$UPORT \
    --listen 127.0.0.1:$SPORT --admin 127.0.0.1:$APORT --data-dir $D/redoubt 2>$D/redoubt.log & PIDS+=($!)
  up $UPORT; up $RPORT; up $SPORT
  until [ "$(state $APORT 2>/dev/null)" = up ]; do sleep 0.05; done
  { kill -9 $UPID && wait $UPID; } 2>/dev/null || true
  until [ "$(state $APORT)" = down ]; do sleep 0.05; done
  : > $D/a.csv
  for rep in $(seq $REPS); do
    for who in redis:$RPORT redoubt:$SPORT; do
      rps=$(taskset -c 1 redis-benchmark -p ${who#*:} -t set -n $N -c 50 -r 100000 -q --csv 2>/dev/null |
        tr -d '"' | awk -F, '$1=="SET" {print $2}')
      echo "${who%:*},$rps" >> $D/a.csv
    done
  done
  [ "$(state $APORT)" = down ] || { echo "bench: Redoubt's upstream came back during (a)?" >&2; exit 1; }
  journaled=$(pending $APORT)
  [ "$journaled" -eq $((N * REPS)) ] ||
    { echo "bench: Redoubt journaled $journaled of $((N * REPS)) SETs: not every SET was a durable write" >&2; exit 1; }
  A_REDIS=$(grep '^redis,' $D/a.csv | cut -d, -f2 | med)
  A_REDOUBT=$(grep '^redoubt,' $D/a.csv | cut -d, -f2 | med)
  A_RATIO=$(awk -v a=$A_REDOUBT -v b=$A_REDIS 'BEGIN {printf "%.2f", a / b}')
  # Each Redoubt run against the Redis run just before it: the medians
  # above are the record; these show how far the machine moved between.
  A_PAIRS=$(paste -d, <(grep '^redis,' $D/a.csv | cut -d, -f2) <(grep '^redoubt,' $D/a.csv | cut -d, -f2) |
    awk -F, '{printf "%s%.2f", (NR > 1 ? " " : ""), $2 / $1}')
  cleanup; PIDS=(); wait 2>/dev/null || true
  rm -rf $D/upstream $D/redis $D/redoubt
fi

B_REPLAY=-; B_PIPE=-; B_RATIO=-
if [[ $ONLY == *b* ]]; then
  cargo bench --quiet -p proxy --bench replay -- ratio 2>$D/b.err | tee $D/b.txt | grep '^replay' || true
  line=$(grep '^replay' $D/b.txt) || { echo "bench: the replay bench printed no ratio line (see $D/b.txt, $D/b.err)" >&2; exit 1; }
  B_REPLAY=$(sed -E 's/.*replayer ([0-9]+) cmd\/s.*/\1/' <<<"$line")
  B_PIPE=$(sed -E 's/.*--pipe ([0-9]+) cmd\/s.*/\1/' <<<"$line")
  B_RATIO=$(sed -E 's/.*ratio ([0-9.]+).*/\1/' <<<"$line")
fi

C_MS=-; C_AIM=-; C_RATIO=-
if [[ $ONLY == *c* ]]; then
  TEST_REDOUBT_BIN=$BIN python3 scripts/outage-timings.py --config $D/redoubt.toml --rounds $ROUNDS --json | tee $D/c.txt | grep -v '^{'
  read -r C_MS C_AIM < <(tail -1 $D/c.txt | python3 -c 'import json,sys; j=json.load(sys.stdin); print(round(j["back_ms_median"]), j["aim_ms"])')
  C_RATIO=$(awk -v a=$C_MS -v b=$C_AIM 'BEGIN {printf "%.2f", a / b}')
fi

echo
printf '%-58s %14s %14s %7s %s\n' measure redoubt baseline ratio aim
printf '%-58s %14s %14s %7s %s\n' "(a) durable SET while redis is down, fsync always (ops/s)" $A_REDOUBT $A_REDIS $A_RATIO ">= 1.0 (redis appendfsync always)"
printf '%-58s %14s %14s %7s %s\n' "(b) replay with checkpointing (commands/s)" $B_REPLAY $B_PIPE $B_RATIO ">= 0.5 (redis-cli --pipe)"
printf '%-58s %14s %14s %7s %s\n' "(c) redis back -> served upstream, empty journal (ms)" $C_MS $C_AIM $C_RATIO "<= 1.0 (up_after x interval_ms + 100)"
[ -z "${A_PAIRS:-}" ] || echo "(a) pair by pair, each Redoubt run / the Redis run before it: $A_PAIRS"
echo "(a: median of $REPS interleaved runs, n=$N, c=50, servers on CPU 0, benchmark on CPU 1; b: median of 9 alternating, ${REPLAY_BENCH_N:-200000} SETs; c: median of $ROUNDS rounds; load after: $(cut -d' ' -f1-3 /proc/loadavg); raw in $D)"
