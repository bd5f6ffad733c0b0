#!/usr/bin/env bash
# CPU time and system calls per command, counted by the kernel (`perf
# stat` on the server processes: task-clock and syscall tracepoints) while
# redis-benchmark runs: a measure that moves far less between runs than the
# throughput ratios of bench.sh (CPU time, not wall time), and that counts
# what callgrind does not see: the kernel's share, locked instructions,
# cache misses. Servers on CPU 0, the load on CPU 1, as bench.sh places
# them; interleaved runs. Not a test.
#
#   scripts/cpu-per-command.sh [REPS]   env: MODE (proxy | standalone,
#       default proxy), TEST (a redis-benchmark -t name, default get),
#       PIPE (default 1), N (requests per run, default 200000),
#       BIN (the redoubt binary; default target/release/redoubt, built)
#
# proxy: Redis direct, twemproxy in front of it, Redoubt in front of it;
# "behind" is the CPU the Redis behind a proxy spends per command, "total"
# what CPU 0 spends per command (the proxy and the Redis behind it): the
# throughput a shared CPU allows is about 1 / total.
# standalone: redis-server and Redoubt, both persisting with everysec.
# Per command: cpu_ns (user + kernel), rd/wr (read, readv or recvfrom; write,
# writev or sendto), ep (epoll_wait), cs (context switches).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}; MODE=${MODE:-proxy}; TEST=${TEST:-get}; PIPE=${PIPE:-1}; N=${N:-200000}
for c in redis-server redis-benchmark redis-cli taskset perf; do
  command -v $c >/dev/null || { echo "cpu-per-command: $c missing (perf: apt-get install linux-perf; scripts/test.sh installs redis-server and redis-tools)" >&2; exit 1; }
done
[ "$MODE" = standalone ] || command -v nutcracker >/dev/null || { echo "cpu-per-command: nutcracker missing (scripts/test.sh installs it)" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet -p redoubt
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/redoubt
fi
D=$(mktemp -d /tmp/redoubt-cpu.XXXX)
RPORT=17561; TPORT=17562; PPORT=17563; PADMIN=17564; SPORT=17565
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; }
trap cleanup EXIT
up() { until redis-cli -p $1 ping 2>/dev/null | grep -q PONG; do sleep 0.05; done; }
EVENTS=task-clock,context-switches
if perf stat -e syscalls:sys_enter_read -- true >/dev/null 2>&1; then
  for s in read recvfrom readv write sendto writev epoll_wait; do EVENTS=$EVENTS,syscalls:sys_enter_$s; done
else
  echo "cpu-per-command: syscall tracepoints unavailable (tracefs not mounted or not root): CPU time only" >&2
fi

# "cpu_ns rd wr ep cs" per command from perf's CSV $1.
per_cmd() {
  awk -F, -v n=$N '
    $1 ~ /^[0-9.]+$/ { v[$3] = $1 }
    END {
      rd = v["syscalls:sys_enter_read"] + v["syscalls:sys_enter_recvfrom"] + v["syscalls:sys_enter_readv"]
      wr = v["syscalls:sys_enter_write"] + v["syscalls:sys_enter_sendto"] + v["syscalls:sys_enter_writev"]
      printf "%.0f %.3f %.3f %.3f %.4f", v["task-clock"] * 1e6 / n, rd / n, wr / n, v["syscalls:sys_enter_epoll_wait"] / n, v["context-switches"] / n
    }' $1
}

if [ "$MODE" = standalone ]; then
  mkdir -p $D/redis $D/redoubt
  taskset -c 0 redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
    --dir $D/redis --logfile $D/redis.log & RPID=$!; PIDS+=($RPID)
  RUST_LOG=warn REDOUBT_JOURNAL_FSYNC=everysec taskset -c 0 "$BIN" serve --listen 127.0.0.1:$SPORT \
    --admin 127.0.0.1:$PADMIN --data-dir $D/redoubt 2>$D/redoubt.log & SPID=$!; PIDS+=($SPID)
  up $RPORT; up $SPORT
  TARGETS="redis:$RPORT:$RPID: redoubt:$SPORT:$SPID:"
else
  taskset -c 0 redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --dir $D --logfile $D/redis.log & RPID=$!; PIDS+=($RPID)
  printf 'p:\n  listen: 127.0.0.1:%s\n  redis: true\n  auto_eject_hosts: false\n  servers:\n   - 127.0.0.1:%s:1\n' \
    $TPORT $RPORT > $D/twem.yml
  taskset -c 0 nutcracker -c $D/twem.yml -s $((TPORT + 100)) -a 127.0.0.1 -o $D/twem.log & TPID=$!; PIDS+=($TPID)
  RUST_LOG=warn taskset -c 0 "$BIN" serve --upstream redis://127.0.0.1:$RPORT --listen 127.0.0.1:$PPORT \
    --admin 127.0.0.1:$PADMIN --data-dir $D/redoubt 2>$D/redoubt.log & PPID_=$!; PIDS+=($PPID_)
  up $RPORT; up $TPORT; up $PPORT
  TARGETS="direct:$RPORT:$RPID: twemproxy:$TPORT:$TPID:$RPID redoubt:$PPORT:$PPID_:$RPID"
fi

printf '%-10s %9s %7s %7s %7s %6s %6s %6s %7s\n' target rps cpu_ns behind total rd wr ep cs
for rep in $(seq $REPS); do
  for t in $TARGETS; do
    IFS=: read -r name port pid behind <<< "$t"
    taskset -c 1 redis-benchmark -p $port -n 20000 -c 50 -r 1000 -P $PIPE -q -t $TEST >/dev/null 2>&1
    W=()
    perf stat -x, -e $EVENTS -p $pid -o $D/own.csv & W+=($!)
    [ -n "$behind" ] && { perf stat -x, -e $EVENTS -p $behind -o $D/behind.csv & W+=($!); }
    sleep 0.3
    taskset -c 1 redis-benchmark -p $port -n $N -c 50 -r 1000 -P $PIPE -q -t $TEST > $D/bench.out 2>&1
    kill -INT "${W[@]}"; wait "${W[@]}" || true
    rps=$(tr '\r' '\n' < $D/bench.out | awk '/requests per second/ {print $2}' | tail -1)
    read -r cpu rd wr ep cs <<< "$(per_cmd $D/own.csv)"
    b=0; [ -n "$behind" ] && b=$(per_cmd $D/behind.csv | awk '{print $1}')
    printf '%-10s %9.0f %7s %7s %7s %6s %6s %6s %7s\n' $name $rps $cpu $b $((cpu + b)) $rd $wr $ep $cs | tee -a $D/rows
  done
done
echo "medians of total CPU ns per command (redis-benchmark -t $TEST -P $PIPE, 50 clients, $N requests, $REPS runs):"
for t in $TARGETS; do
  name=${t%%:*}
  awk -v n=$name '$1 == n {print $5}' $D/rows | sort -g | awk -v n=$name '{a[NR]=$1} END {m = NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "  %-10s %6.0f\n", n, m}'
done
