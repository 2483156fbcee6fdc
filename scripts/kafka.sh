#!/usr/bin/env bash
# Makes a Kafka-protocol broker available for the Kafka log tests and `notadb dev-cluster
# --log kafka`: tansu (crates.io), built once with SQLite storage into a tools directory
# outside the clone and reused. The build takes 10 to 15 minutes on 2 cores.
# Sourced by test.sh; exports NOTADB_TANSU.
set -euo pipefail

tansu_version="0.6.0"
tools="${NOTADB_TOOLS_DIR:-$HOME/.cache/notadb/tools}"
bin="${NOTADB_TANSU:-$tools/bin/tansu}"

tansu_ok() {
  [ -x "$1" ] || return 1
  "$1" --version 2>/dev/null | grep -q "$tansu_version" || return 1
  # The tests keep topics across broker restarts: the SQLite engine must be built in.
  "$1" --help 2>/dev/null | grep -q "Storage engines:.*libsql"
}

if ! tansu_ok "$bin"; then
  echo "building tansu $tansu_version (Kafka-protocol broker) into $tools; this takes minutes" >&2
  mkdir -p "$tools"
  nice cargo install tansu --version "$tansu_version" --locked \
    --features dynostore,libsql --root "$tools" \
    --target-dir "${NOTADB_TANSU_TARGET_DIR:-$HOME/.cache/notadb/tansu-target}" >&2
  bin="$tools/bin/tansu"
fi
if ! tansu_ok "$bin"; then
  echo "no tansu $tansu_version with the libsql storage engine found (tried $bin)" >&2
  exit 1
fi
export NOTADB_TANSU="$bin"
