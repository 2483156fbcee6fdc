# syntax=docker/dockerfile:1
#
# The notadb server image: `docker build -t notadb .` (BuildKit: cache mounts below).
# See docs/deployment.md. The first build compiles the bundled RocksDB (about 15 minutes on
# 2 cores); the cache mounts keep the cargo registry and target directory between builds.

FROM rust:1-bookworm AS builder

# The bundled RocksDB build needs libclang (bindgen) and a C++ compiler with make; the rust
# image already ships g++ and make, listed here so the requirement is written down.
# Unpinned on purpose: bookworm's current packages, security fixes included.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev clang g++ make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the workspace build reads: manifests, crates, the example services (the CLI links
# them) and the .proto files (crates/proto generates code from ../../proto with protox).
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY examples examples
COPY proto proto

# The target directory is a cache mount, so the binary is copied out in the same step.
ENV CARGO_TARGET_DIR=/cargo-target
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/cargo-target,sharing=locked \
    cargo build --profile dist --locked -p notadb-cli --bin notadb \
    && install -m 0755 /cargo-target/dist/notadb /usr/local/bin/notadb


FROM debian:bookworm-slim

# ca-certificates for TLS to NATS; libstdc++6 for the C++ RocksDB (present in the base image,
# installed explicitly so it stays there).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot and fsGroup can refer to it.
RUN groupadd --system --gid 10001 notadb \
    && useradd --system --uid 10001 --gid notadb --home-dir /var/lib/notadb --no-create-home \
        --shell /usr/sbin/nologin notadb \
    && mkdir -p /var/lib/notadb /etc/notadb \
    && chown notadb:notadb /var/lib/notadb

COPY --from=builder /usr/local/bin/notadb /usr/local/bin/notadb
# Listens on all interfaces and keeps its data in /var/lib/notadb. Replace the file (mount
# over /etc/notadb) or point NOTADB_CONFIG elsewhere; NOTADB_* variables and flags override it.
COPY deploy/docker/notadb.toml /etc/notadb/notadb.toml
ENV NOTADB_CONFIG=/etc/notadb/notadb.toml

USER 10001:10001
WORKDIR /var/lib/notadb
VOLUME ["/var/lib/notadb"]
# 7070 gRPC, 7071 admin HTTP (/healthz, /readyz, /metrics, /), 7072 the frame protocol.
EXPOSE 7070 7071 7072
# SIGTERM drains in-flight requests (shutdown_grace_secs, 30 s by default) before exiting:
# give the container more than that to stop (docker stop -t 60, Kubernetes'
# terminationGracePeriodSeconds).
ENTRYPOINT ["notadb"]
CMD ["serve"]
