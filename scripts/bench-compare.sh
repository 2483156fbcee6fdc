#!/usr/bin/env bash
# The side-by-side benchmark: makes PostgreSQL, Redis and a JetStream nats-server answer on
# loopback (installing and starting them when missing), builds notadb, and runs
# `notadb-bench compare` (which starts its own notadb node). Arguments go to the command,
# e.g. `--out bench-results --duration 5s`. NOTADB_BENCH_PROFILE=dist measures the binary the
# Dockerfile ships (fat LTO, one codegen unit; about 14 more minutes of building).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/nats.sh
source scripts/postgres.sh
source scripts/redis.sh
if [ -z "${NOTADB_BENCH_NATS_URL:-}" ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    store="$(mktemp -d)"
    echo "starting nats-server with JetStream on 127.0.0.1:4222 (store $store)" >&2
    "$NOTADB_NATS_SERVER" -js -a 127.0.0.1 -p 4222 -sd "$store" >/dev/null 2>&1 &
    nats_pid=$!
    trap 'kill $nats_pid 2>/dev/null; rm -rf "$store"' EXIT
    for _ in $(seq 1 40); do
      (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break
      sleep 0.25
    done
  fi
  export NOTADB_BENCH_NATS_URL="nats://127.0.0.1:4222"
fi
profile="${NOTADB_BENCH_PROFILE:-release}"
cargo build --profile "$profile" --workspace --bin notadb --bin notadb-bench
"$CARGO_TARGET_DIR/$profile/notadb-bench" compare "$@"
