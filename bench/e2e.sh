#!/usr/bin/env bash
# End-to-end consume benchmark: Tocsin's Kafka path against kcat's raw consume
# rate on the same pre-loaded topic of the embedded (mock) broker.
#
#   bash bench/e2e.sh BUILD_DIR [N]
#
#   N        events generated with `tocsin gen` (default 1000000); gen writes all
#            three streams, so the expected count is what landed in `calls`.
#   WORKERS  env, space-separated worker counts to run e2e_consume with (default "1")
#   RUNS     env, repetitions of the timed consumes (default 1)
#
# Everything runs on 127.0.0.1; every wait has a deadline; the broker is killed
# on exit. Needs kcat. See bench/README.md for what the figures mean.
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR [N]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
BUILD=$1
N=${2:-1000000}
WORKERS=${WORKERS:-1}
RUNS=${RUNS:-1}
TOCSIN="$BUILD/app/tocsin"
E2E="$BUILD/bench/e2e_consume"
PARTITIONS=64
for f in "$TOCSIN" "$E2E"; do
  [[ -x $f ]] || { echo "e2e.sh: $f not found; build first (cmake --build $BUILD --target tocsin e2e_consume)" >&2; exit 2; }
done
command -v kcat > /dev/null || { echo "e2e.sh: kcat not found (apt-get install kcat)" >&2; exit 2; }
[[ $N =~ ^[0-9]+$ && $N -gt 0 ]] || usage

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tocsin-e2e.XXXXXX")
BROKER_PID=""
cleanup() {
  if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2> /dev/null; then
    kill "$BROKER_PID" 2> /dev/null || true
    for _ in $(seq 100); do kill -0 "$BROKER_PID" 2> /dev/null || break; sleep 0.05; done
    kill -9 "$BROKER_PID" 2> /dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- broker ---------------------------------------------------------------
"$TOCSIN" broker --brokers 1 --partitions $PARTITIONS --topic calls:$PARTITIONS --topic faults:8 \
  --topic complaints:8 --topic alerts:8 --topic tocsin.dlq:8 --bootstrap-file "$TMP/bootstrap" \
  < /dev/null > "$TMP/broker.log" 2>&1 &
BROKER_PID=$!
deadline=$((SECONDS + 30))
until [[ -s $TMP/bootstrap ]]; do
  kill -0 "$BROKER_PID" 2> /dev/null || { echo "e2e.sh: broker exited:" >&2; cat "$TMP/broker.log" >&2; exit 1; }
  ((SECONDS < deadline)) || { echo "e2e.sh: no bootstrap file after 30 s" >&2; exit 1; }
  sleep 0.05
done
B=$(head -n1 "$TMP/bootstrap")
echo "broker: $B (1 mock broker, calls:$PARTITIONS partitions)"

# ---- pre-load -----------------------------------------------------------------
t0=$(now)
timeout 600 "$TOCSIN" gen -b "$B" -n "$N" --rate 0 2> "$TMP/gen.log" || { echo "e2e.sh: gen failed:" >&2; cat "$TMP/gen.log" >&2; exit 1; }
t1=$(now)
echo "pre-load: $(tail -n1 "$TMP/gen.log") in $(elapsed "$t0" "$t1") s"

# What the broker holds in `calls` (its retention drops the oldest batches
# silently, ~5 MiB per partition): the end offsets give what was produced.
COUNT=$(timeout 120 kcat -b "$B" -C -t calls -o beginning -e -q | wc -l)
PRODUCED=$(timeout 60 kcat -b "$B" -C -t calls -o -1 -e -q -f '%o\n' | awk '{ s += $1 + 1 } END { print s + 0 }')
echo "calls topic: $COUNT messages readable, $PRODUCED produced"
if [[ $COUNT -ne $PRODUCED ]]; then
  echo "e2e.sh: WARNING: the broker dropped $((PRODUCED - COUNT)) calls (retention); lower N or raise partitions" >&2
fi
[[ $COUNT -gt 0 ]] || { echo "e2e.sh: nothing in calls" >&2; exit 1; }

# ---- timed consumes -------------------------------------------------------------
# kcat as the issue states it, and with the fetch wait Tocsin itself uses on
# the embedded broker (the mock holds an empty fetch for the full
# fetch.wait.max.ms, 500 ms by default, which kcat pays at the end of each run).
time_kcat() {
  local t0 t1 n
  t0=$(now)
  timeout 120 kcat -b "$B" -C -t calls -o beginning -e -q "$@" > /dev/null
  t1=$(now)
  elapsed "$t0" "$t1"
}

# Runs e2e_consume (a fresh consumer group each time); prints its rate
# (events/s). With several workers a member can join late and make the group
# rebalance mid-measurement (e2e_consume exits 3): retried, at most 3 attempts.
run_tocsin() {
  local workers=$1 label=$2
  shift 2
  local line rc attempt
  for attempt in 1 2 3; do
    rc=0
    line=$(timeout 180 "$E2E" --bootstrap "$B" --topic calls --expect "$COUNT" --workers "$workers" "$@" 2> "$TMP/e2e.log") || rc=$?
    if [[ $rc -ne 0 && $rc -ne 3 ]]; then
      echo "e2e.sh: e2e_consume failed (exit $rc):" >&2
      cut -c1-300 "$TMP/e2e.log" >&2
      exit 1
    fi
    echo "  $line [$label]" >&2
    grep -v '^e2e_consume: t=' "$TMP/e2e.log" | cut -c1-160 | sed 's/^/    /' >&2
    [[ $rc -eq 0 ]] && break
    [[ $attempt -lt 3 ]] && echo "    (rebalance during the measurement: run again)" >&2
  done
  sed -E 's/.* = ([0-9.]+) events\/s.*/\1/' <<< "$line"
}

# Librdkafka 2.0.2 stops fetching for ~1 s whenever the consumer queue holds
# queued.min.messages (100k, counted over all partitions of the subscription):
# a consumer catching up a backlog stalls every second. Raising the thresholds
# shows the rate without those stalls.
QUEUE_PROPS=(-X queued.min.messages=10000000 -X queued.max.messages.kbytes=2097151)

declare -A rates
for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS"
  s=$(time_kcat)
  echo "  kcat: $COUNT msgs in $s s = $(rate "$COUNT" "$s") msg/s [librdkafka defaults]"
  rates[kcat]+="$(rate "$COUNT" "$s") "
  s=$(time_kcat -X fetch.wait.max.ms=5)
  echo "  kcat: $COUNT msgs in $s s = $(rate "$COUNT" "$s") msg/s [fetch.wait.max.ms=5]"
  rates[kcat5]+="$(rate "$COUNT" "$s") "
  for w in $WORKERS; do
    rates[tocsin$w]+="$(run_tocsin "$w" "embedded defaults") "
    rates[tocsinq$w]+="$(run_tocsin "$w" "queued.min.messages raised" "${QUEUE_PROPS[@]}") "
  done
done

# ---- summary --------------------------------------------------------------------
k=$(median <<< "${rates[kcat]}")
k5=$(median <<< "${rates[kcat5]}")
echo
echo "summary ($COUNT calls, median of $RUNS run(s); target: tocsin >= 0.8 x raw consume rate)"
printf "  %-58s %10.0f msg/s\n" "kcat -C -o beginning -e (librdkafka defaults)" "$k"
printf "  %-58s %10.0f msg/s\n" "kcat -C -o beginning -e -X fetch.wait.max.ms=5" "$k5"
for w in $WORKERS; do
  t=$(median <<< "${rates[tocsin$w]}")
  q=$(median <<< "${rates[tocsinq$w]}")
  printf "  %-58s %10.0f ev/s   tocsin/kcat %.2f (%.2f vs fetch.wait 5 ms)\n" \
    "tocsin, $w worker(s), embedded defaults" "$t" "$(awk -v a="$t" -v b="$k" 'BEGIN{print a/b}')" \
    "$(awk -v a="$t" -v b="$k5" 'BEGIN{print a/b}')"
  printf "  %-58s %10.0f ev/s   tocsin/kcat %.2f (%.2f vs fetch.wait 5 ms)\n" \
    "tocsin, $w worker(s), queued.min.messages raised" "$q" "$(awk -v a="$q" -v b="$k" 'BEGIN{print a/b}')" \
    "$(awk -v a="$q" -v b="$k5" 'BEGIN{print a/b}')"
done
