#!/usr/bin/env bash
# Makes a Redis server answer on 127.0.0.1:6379: the one already there, else redis-server
# (installed with apt-get when missing) started on loopback without snapshots. Sourced by
# test.sh and bench-compare.sh; exports NOTADB_REDIS_URL (set it yourself to use another).
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${NOTADB_REDIS_URL:-}" ]; then
  if ! command -v redis-cli >/dev/null 2>&1 || ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    if ! command -v redis-server >/dev/null 2>&1; then
      echo "installing redis-server" >&2
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
      echo "starting redis-server on 127.0.0.1:6379" >&2
      redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no \
        --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/notadb-redis.log"
      for _ in $(seq 1 40); do
        redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
        sleep 0.25
      done
    fi
  fi
  export NOTADB_REDIS_URL="redis://127.0.0.1:6379"
fi
