#!/usr/bin/env bash
# Makes a PostgreSQL server answer on 127.0.0.1:5432: the one already there, else the
# distribution's server (installed with apt-get when missing), started with password
# authentication for user `postgres`. Sourced by test.sh and bench-compare.sh; exports
# NOTADB_POSTGRES_URL (set it yourself to use another server).
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${NOTADB_POSTGRES_URL:-}" ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
      echo "installing postgresql" >&2
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    fi
    cluster="$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }')"
    if [ -z "$cluster" ]; then
      version="$(ls /usr/lib/postgresql | sort -n | tail -1)"
      as_root pg_createcluster "$version" main -p 5432 >/dev/null
      cluster="$version main"
    fi
    echo "starting PostgreSQL $cluster on 127.0.0.1:5432" >&2
    as_root pg_ctlcluster $cluster start
    for _ in $(seq 1 60); do
      pg_isready -q -h 127.0.0.1 -p 5432 && break
      sleep 0.5
    done
    as_root runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
  fi
  export NOTADB_POSTGRES_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
fi
