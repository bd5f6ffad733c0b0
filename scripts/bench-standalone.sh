#!/usr/bin/env bash
# Standalone Redoubt vs redis-server, same placement (server on CPU 0,
# redis-benchmark on CPU 1), both persisting:
#   everysec: Redoubt journal.fsync = "everysec" vs appendonly yes + appendfsync everysec
#   always:   Redoubt journal.fsync = "always"   vs appendfsync always (SET only)
# Interleaved runs, medians, ratios Redoubt / redis-server. Not a test.
# evalsha_incr: EVALSHA of a one-line INCR script, loaded into both first.
#   scripts/bench-standalone.sh [REPS]   env: N (default 200000), TESTS
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}; N=${N:-200000}
TESTS=${TESTS:-set,get,incr,lpush,rpop,sadd,hset,zadd,lrange_100,mset}
for c in redis-server redis-benchmark taskset; do
  command -v $c >/dev/null || { echo "bench: $c missing (scripts/test.sh installs redis-server and redis-tools)" >&2; exit 1; }
done
cargo build --release --quiet -p redoubt
D=$(mktemp -d /tmp/redoubt-bench-standalone.XXXX)
RPORT=17101; SPORT=17102; APORT=17103; PIDS=()
# Only the main shell cleans up: pipeline subshells must not kill the servers.
cleanup() { [ "$BASHPID" = "$$" ] || return 0; for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; }
trap cleanup EXIT
up() { until redis-cli -p $1 ping 2>/dev/null | grep -q PONG; do sleep 0.05; done; }

start_pair() { # $1 = everysec|always
  cleanup; PIDS=(); rm -rf $D/redis $D/redoubt; mkdir -p $D/redis
  # The previous pair must be gone, or the new servers cannot bind its ports
  # and `up` would be answered by the old ones.
  while redis-cli -p $RPORT ping >/dev/null 2>&1 || redis-cli -p $SPORT ping >/dev/null 2>&1; do sleep 0.05; done
  taskset -c 0 redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly yes --appendfsync $1 \
    --dir $D/redis --logfile $D/redis.log & PIDS+=($!)
  RUST_LOG=warn REDOUBT_JOURNAL_FSYNC=$1 taskset -c 0 target/release/redoubt serve --listen 127.0.0.1:$SPORT \
    --admin 127.0.0.1:$APORT --data-dir $D/redoubt 2>$D/redoubt.log & PIDS+=($!)
  up $RPORT; up $SPORT
}

run() { # $1 label, $2 port, $3.. extra args -> rows label,test,rps
  taskset -c 1 redis-benchmark -p $2 -n $N -c 50 -r 100000 -q --csv "${@:3}" 2>/dev/null | tr -d '"' |
    awk -F, -v l=$1 'NR>1 || $1!="test" {if ($1!="test") print l","$1","$2}'
}

# A small script run by EVALSHA (an INCR), loaded into both first: how fast
# the local store's Lua runs beside Redis's.
SCRIPT="return redis.call('INCR', KEYS[1])"
evalsha_row() { # $1 label, $2 port, $3 pipeline depth
  local sha
  sha=$(redis-cli -p $2 SCRIPT LOAD "$SCRIPT")
  run "$1" $2 -P $3 EVALSHA "$sha" 1 'counter:__rand_int__' | sed "s/,EVALSHA [^,]*,/,evalsha_incr,/"
}

: > $D/raw.csv
start_pair everysec
for rep in $(seq $REPS); do
  for p in 1 16; do
    for who in redis:$RPORT redoubt:$SPORT; do
      redis-cli -p ${who#*:} flushall >/dev/null
      run "${who%:*}/P$p" ${who#*:} -t $TESTS -P $p >> $D/raw.csv
      evalsha_row "${who%:*}/P$p" ${who#*:} $p >> $D/raw.csv
    done
  done
done
start_pair always
for rep in $(seq $REPS); do
  for who in redis:$RPORT redoubt:$SPORT; do
    run "${who%:*}/always" ${who#*:} -t set -P 1 >> $D/raw.csv
  done
done

printf "%-8s %-22s %12s %12s %7s  %s\n" mode test "redis ops/s" redoubt ratio "aim >= 1.00"
awk -F, '
  function med(s,   a, n, i, j, t) { n = split(s, a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j+1] = a[j]; a[j+1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
  { split($1, w, "/"); k = w[2] "," $2; v[w[1] "," k] = v[w[1] "," k] " " $3; keys[k] = 1 }
  END { for (k in keys) { split(k, p, ","); r = med(v["redis," k]); d = med(v["redoubt," k]); x = (r > 0 ? d / r : 0)
      printf "%-8s %-22s %12.0f %12.0f %7.2f  %s\n", p[1], p[2], r, d, x, (x >= 1.0 ? "met" : "not met") } }'  $D/raw.csv | sort -k1,1 -k2,2
echo "(median of $REPS interleaved runs, n=$N, c=50; P1/P16 = pipeline depth with fsync everysec on both; always = fsync always, SET; raw rows in $D/raw.csv)"
