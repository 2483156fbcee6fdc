#!/usr/bin/env bash
# Installs what the build needs when missing, then runs every test of the workspace.
# Tests build with the release profile, like the demo and the benchmarks, so a machine
# compiles the bundled RocksDB once.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The JetStream log and cluster tests start their own nats-server on free loopback ports.
source scripts/nats.sh
# The Kafka log tests start their own tansu broker on free loopback ports.
source scripts/kafka.sh
# `notadb-bench compare` is tested against real PostgreSQL and Redis servers on loopback.
source scripts/postgres.sh
source scripts/redis.sh
cargo test --release --workspace --all-targets
cargo test --release --workspace --doc
