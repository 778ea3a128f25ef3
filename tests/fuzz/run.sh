#!/usr/bin/env bash
# Runs the libFuzzer targets already built in BUILD_DIR/tests/fuzz/ (builds nothing).
#
#   bash tests/fuzz/run.sh BUILD_DIR SECONDS
#
# Each target that exists runs for SECONDS/2 (at least 5 s) on a temporary copy
# of its seed corpus (the repository is never written to). Prints one summary
# line per target; exits non-zero if any target crashed, leaked, timed out or
# ran out of memory, printing the reproducer path (kept in the temp directory).
set -uo pipefail

if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$1
seconds=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
per_target=$((seconds / 2))
((per_target < 5)) && per_target=5

# Make UBSan findings fatal even if a target was built without -fno-sanitize-recover.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

work=$(mktemp -d "${TMPDIR:-/tmp}/tocsin-fuzz.XXXXXX")
failed=0
ran=0

for name in fuzz_decoder fuzz_rules; do
  bin=$build_dir/tests/fuzz/$name
  [ -x "$bin" ] || { echo "$name: not built in $build_dir/tests/fuzz, skipped"; continue; }
  ran=$((ran + 1))
  seeds=$here/corpus/${name#fuzz_}
  corpus=$work/$name/corpus
  artifacts=$work/$name/artifacts
  log=$work/$name/fuzz.log
  mkdir -p "$corpus" "$artifacts"
  [ -d "$seeds" ] && cp -R "$seeds"/. "$corpus"/
  args=(-max_total_time="$per_target" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/")
  dict=$here/${name#fuzz_}.dict
  [ -f "$dict" ] && args+=(-dict="$dict")

  start=$(date +%s)
  "$bin" "${args[@]}" "$corpus" >"$log" 2>&1
  rc=$?
  elapsed=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  [ -n "$runs" ] || runs=0
  reproducers=$(find "$artifacts" -type f | sort)

  if [ "$rc" -eq 0 ] && [ -z "$reproducers" ]; then
    echo "$name: $runs runs in $elapsed s, no crash"
  else
    failed=1
    echo "$name: FAILED after $runs runs in $elapsed s (exit code $rc)"
    # The sanitizer / libFuzzer report, without the per-input progress lines.
    grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|INITED|RELOAD)' "$log" | tail -n 60 | sed 's/^/  | /'
    if [ -n "$reproducers" ]; then
      while IFS= read -r r; do
        echo "$name: reproducer $r ($(stat -c %s "$r") bytes)"
        echo "  hex: $(od -An -v -tx1 "$r" | tr -d ' \n' | head -c 512)"
        echo "  rerun: $bin $r"
      done <<<"$reproducers"
    else
      echo "$name: no reproducer written; full log: $log"
    fi
  fi
done

if ((failed)); then
  echo "fuzz: FAILED; logs, corpora and reproducers kept in $work"
  exit 1
fi
rm -rf "$work"
if ((ran == 0)); then
  echo "fuzz: no fuzz target found in $build_dir/tests/fuzz" >&2
  exit 1
fi
exit 0
