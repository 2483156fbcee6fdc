#!/usr/bin/env bash
# Builds notadb and runs the demo: one node on the embedded log in a temporary directory,
# the seed data, the seed questions answered over gRPC, then serving until Ctrl-C.
# Arguments go to `notadb demo` (e.g. --once).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --workspace --bin notadb
exec "$CARGO_TARGET_DIR/release/notadb" demo "$@"
