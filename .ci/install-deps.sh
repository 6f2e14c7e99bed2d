#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh machine, and nothing that is already there:
#   redis-server + redis-cli (Debian packages), Azurite (npm, into .tools/azurite),
#   Valkey 8 (via ../shared/tools/fetch-valkey.sh, into .tools/valkey); with WITH_BENCH=1 (make
#   bench) also valgrind, for the benchmark's instruction counts.
# Prints the paths it settled on; safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "install-deps: installing redis-server from Debian's packages" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server redis-tools >/dev/null
fi

if [ "${WITH_BENCH:-}" = "1" ] && { ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; }; then
  echo "install-deps: installing valgrind from Debian's packages (make bench)" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq valgrind >/dev/null
fi

if [ "${SKIP_AZURITE:-}" != "1" ] && [ ! -x "$tools/azurite/node_modules/.bin/azurite-blob" ]; then
  echo "install-deps: installing azurite from npm into .tools/azurite" >&2
  mkdir -p "$tools/azurite"
  npm install --prefix "$tools/azurite" --no-audit --no-fund --loglevel=error azurite@3.35.0 >/dev/null
fi

if [ "${SKIP_VALKEY:-}" != "1" ] && [ ! -x "$tools/valkey/usr/bin/valkey-server" ]; then
  fetch="$root/../shared/tools/fetch-valkey.sh"
  if [ -x "$fetch" ] || [ -f "$fetch" ]; then
    echo "install-deps: unpacking Valkey 8 into .tools/valkey" >&2
    bash "$fetch" "$tools/valkey" >/dev/null
  else
    echo "install-deps: $fetch not found; Valkey tests will be skipped" >&2
  fi
fi

echo "redis-server: $(command -v redis-server)"
[ "${WITH_BENCH:-}" = "1" ] && command -v valgrind >/dev/null && echo "valgrind: $(command -v valgrind)"
[ -x "$tools/azurite/node_modules/.bin/azurite-blob" ] && echo "azurite-blob: $tools/azurite/node_modules/.bin/azurite-blob"
[ -x "$tools/valkey/usr/bin/valkey-server" ] && echo "valkey-server: $tools/valkey/usr/bin/valkey-server"
exit 0
