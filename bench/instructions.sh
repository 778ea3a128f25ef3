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

irefs() {  # benchmark iterations -> total instructions of the run
  TOCSIN_BENCH_ITERATIONS=$2 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$BIN" --benchmark_filter="^$1(/iterations:[0-9]+)?\$" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  grep -q "^$1/iterations:$2 " "$tmp/out" || { echo "$1 did not run:" >&2; cat "$tmp/out" >&2; exit 1; }
  sed -n 's/.*I *refs: *//p' "$tmp/err" | tr -d ,
}

"$BIN" --benchmark_list_tests --benchmark_filter="$FILTER" | while read -r name; do
  case "$name" in
    BM_Worker_*) batch=1000 ;;  # an iteration is a batch: A and B count events
    *) batch=1 ;;
  esac
  a=$(irefs "$name" $((A / batch)))
  b=$(irefs "$name" $((B / batch)))
  printf '%-45s %9d instructions per event\n' "$name" $(( (b - a) / (B / batch - A / batch) / batch ))
done
