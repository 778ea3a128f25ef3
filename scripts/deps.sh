#!/usr/bin/env bash
# Installs every Debian package Tocsin needs to build, run and test. Idempotent:
# does nothing (and prints nothing) when all packages are already present.
set -euo pipefail
PKGS=(build-essential cmake ninja-build ccache pkg-config
      librdkafka-dev kcat libsimdjson-dev prometheus-cpp-dev libboost-all-dev
      libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev librocksdb-dev libssl-dev
      libgtest-dev libgmock-dev libbenchmark-dev clang-14 libclang-rt-14-dev
      python3 kannel kannel-extras prometheus
      chromium fonts-wqy-microhei nodejs valgrind)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Debian's nodejs comes without npm; NodeSource's includes it (and conflicts with Debian's npm).
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# playwright-core for the console's browser tests (pinned in package-lock.json; it drives the
# Debian chromium above and never downloads a browser).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -d "$ROOT/tests/integration/console/node_modules" ]; then
  echo "deps: npm ci for tests/integration/console"
  npm ci --prefix "$ROOT/tests/integration/console" --no-audit --no-fund >/dev/null
fi
