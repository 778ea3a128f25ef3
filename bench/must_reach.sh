#!/usr/bin/env bash
# Must-reach delivery benchmark through a real Kannel: see bench/must_reach.py and
# bench/README.md ("must_reach"). Usage: bash bench/must_reach.sh [BUILD_DIR] [N] [-- more must_reach.py options]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
n="${2:-2000}"
shift $(( $# > 2 ? 2 : $# ))
[[ "${1:-}" == "--" ]] && shift
exec python3 "$here/must_reach.py" --build "$build" --n "$n" "$@"
