#!/usr/bin/env bash
# Instructions per event of the micro benchmarks, counted by cachegrind: a
# figure this VM's timing noise (±30 % run to run) does not move, for telling
# whether a change to the hot path did less work.
#
#   bash bench/instructions.sh BUILD_DIR [FILTER]
#
# Each benchmark runs twice under `valgrind --tool=cachegrind --cache-sim=no`
# with TOCSIN_BENCH_ITERATIONS=A and =B (its warm-up cycles are the same in
# both), and the difference of the totals over B - A iterations is what one
# steady-state event costs (the BM_Worker_* benchmarks iterate over batches
# of 1000: they run A/1000 and B/1000 batches).
# Instructions are not time (a cache miss costs no instruction): read them
# beside the timed figures, never instead.
#
# CACHE=1 also simulates the data caches (--cache-sim=yes, slower) and prints
# the misses per event: L1 (valgrind's guess at this machine's) and L2, given
# as the last level at this VM's 512 KiB per core (--LL; override with
# LL=size,assoc,line). Like instructions they do not move from run to run, so
# they show a change to memory layout or to the lines an event touches.
# Valgrind ignores prefetch instructions: a prefetched line still counts as a
# miss where it is first used, though in time its latency is (partly) hidden.
set -euo pipefail
BUILD=${1:?usage: bench/instructions.sh BUILD_DIR [FILTER]}
FILTER=${2:-'BM_Decode/calls$|BM_DecodeEvaluate_SingleFilterCount$|BM_DecodeEvaluate_Mix50$|BM_Worker_NoKafka_Mix50$'}
BIN="$BUILD/bench/micro_bench"
# Both counts stay within one replay of the smallest corpus (79 944 calls), so
# neither run rewrites the corpus's event times between cycles (untimed, but
# ~300 instructions per event that would otherwise land in the difference).
A=${A:-10000}
B=${B:-70000}
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN is missing: build first (make build)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

CACHE=${CACHE:-0}
LL=${LL:-524288,8,64}
if [ "$CACHE" = 1 ]; then sim=(--cache-sim=yes "--LL=$LL"); else sim=(--cache-sim=no); fi

# benchmark iterations -> "instructions L1-misses L2-misses" of the whole run
# (data misses, reads and writes; 0 0 without CACHE=1)
counts() {
  TOCSIN_BENCH_ITERATIONS=$2 valgrind --tool=cachegrind "${sim[@]}" --cachegrind-out-file=/dev/null \
    "$BIN" --benchmark_filter="^$1(/iterations:[0-9]+)?\$" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  grep -q "^$1/iterations:$2 " "$tmp/out" || { echo "$1 did not run:" >&2; cat "$tmp/out" >&2; exit 1; }
  local ir d1 ll
  ir=$(sed -n 's/.*I *refs: *//p' "$tmp/err" | tr -d ,)
  d1=$(sed -n 's/.*D1 *misses: *\([0-9,]*\).*/\1/p' "$tmp/err" | tr -d ,)
  ll=$(sed -n 's/.*LLd misses: *\([0-9,]*\).*/\1/p' "$tmp/err" | tr -d ,)
  echo "$ir ${d1:-0} ${ll:-0}"
}

"$BIN" --benchmark_list_tests --benchmark_filter="$FILTER" | while read -r name; do
  case "$name" in
    BM_Worker_*) batch=1000 ;;  # an iteration is a batch: A and B count events
    *) batch=1 ;;
  esac
  read -r ia d1a lla < <(counts "$name" $((A / batch)))
  read -r ib d1b llb < <(counts "$name" $((B / batch)))
  n=$(( (B / batch - A / batch) * batch ))
  if [ "$CACHE" = 1 ]; then
    awk -v name="$name" -v ir=$((ib - ia)) -v d1=$((d1b - d1a)) -v ll=$((llb - lla)) -v n=$n \
      'BEGIN { printf "%-45s %9d instructions, %6.1f L1 and %6.1f L2 data misses per event\n", name, ir / n, d1 / n, ll / n }'
  else
    printf '%-45s %9d instructions per event\n' "$name" $(( (ib - ia) / n ))
  fi
done
