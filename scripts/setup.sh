#!/usr/bin/env bash
# Installs the system packages notadb's build needs when they are missing (Debian/Ubuntu).
# Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
# The Kafka log links librdkafka, built from source against the system OpenSSL.
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (needed to build the bundled RocksDB and librdkafka)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup) first" >&2
  exit 1
fi
# rust-toolchain.toml pins the toolchain. rustup downloads it when it can; a machine without
# the network whose stable toolchain is that same version gets stable under the pinned name.
pinned="$(sed -n 's/^channel = "\(.*\)"$/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../rust-toolchain.toml")"
if command -v rustup >/dev/null 2>&1 && ! rustup toolchain list | grep -q "^$pinned-"; then
  stable_sysroot="$(rustc +stable --print sysroot 2>/dev/null || true)"
  if [ -n "$stable_sysroot" ] && rustc +stable --version | grep -q "^rustc $pinned "; then
    toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
    ln -s "$stable_sysroot" "$toolchains/$pinned-$(basename "$stable_sysroot" | sed 's/^stable-//')"
  fi
fi
# One build directory outside the clone, so clones on one machine share the RocksDB build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/notadb/target}"
