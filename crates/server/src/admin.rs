//! Admin HTTP: `/healthz`, `/readyz`, `/metrics` and a small HTML status page at `/`.

use crate::metrics;
use crate::Topology;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use notadb_node::Node;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin routes for the node of `topology`; `/digest` answers at most once per
/// `digest_every`.
pub fn router(topology: Topology, digest_every: Duration) -> Router {
    let gate = Arc::new(DigestGate {
        every: digest_every,
        last: Mutex::new(None),
    });
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/digest", get(digest).layer(Extension(gate)))
        .with_state(topology)
}

/// When `/digest` last started: it hashes every owned partition, so callers get one answer
/// per interval and a 429 in between.
struct DigestGate {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl DigestGate {
    /// `Ok` and the clock restarted, or how long until the next one may start.
    fn admit(&self) -> Result<(), Duration> {
        let mut last = self.last.lock().expect("digest gate lock");
        let now = Instant::now();
        if let Some(at) = *last {
            let next = at + self.every;
            if next > now {
                return Err(next - now);
            }
        }
        *last = Some(now);
        Ok(())
    }
}

async fn healthz(State(Topology { node, .. }): State<Topology>) -> Response {
    if node.is_healthy() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "a partition stopped applying; see the log\n",
        )
            .into_response()
    }
}

async fn readyz(State(Topology { node, .. }): State<Topology>) -> Response {
    let status = node.status();
    if status.ready {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let behind: Vec<String> = status
        .partitions
        .iter()
        .filter(|p| p.lag_records > 0 || p.lag_seconds > 0.0 || p.failed)
        .take(8)
        .map(|p| {
            format!(
                "partition {} applied {} of {} ({:.1} s behind){}",
                p.partition,
                p.applied,
                p.last,
                p.lag_seconds,
                if p.failed { " (stopped)" } else { "" }
            )
        })
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}\n", behind.join("; ")),
    )
        .into_response()
}

/// Per owned partition: applied seq and state digest, as JSON (replica comparison).
async fn digest(
    State(Topology { node, .. }): State<Topology>,
    Extension(gate): Extension<Arc<DigestGate>>,
) -> Response {
    if let Err(wait) = gate.admit() {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            format!(
                "/digest answers once per {} ms (digest_min_interval_ms); retry in {} ms\n",
                gate.every.as_millis(),
                wait.as_millis()
            ),
        )
            .into_response();
    }
    match node.digests().await {
        Ok(digests) => {
            let rows: Vec<serde_json::Value> = digests
                .into_iter()
                .map(|(p, applied, digest)| {
                    serde_json::json!({
                        "partition": p.0,
                        "applied": applied.0,
                        "digest": format!("{digest:016x}"),
                    })
                })
                .collect();
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::Value::Array(rows).to_string(),
            )
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn metrics_text(State(Topology { node, .. }): State<Topology>) -> Response {
    metrics::refresh(&node);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::handle().render(),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn status_page(State(topology): State<Topology>) -> Html<String> {
    let node: &Node = &topology.node;
    let status = node.status();
    let memory = node.storage().memory_usage();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>notadb</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>",
    );
    let _ = write!(
        html,
        "<h1>notadb node {}</h1><p>{} &middot; {} partitions &middot; RocksDB memtables {} KiB, block cache {} KiB</p>",
        escape(&status.node_id),
        if status.ready { "ready" } else { "<b>not ready</b>" },
        status.partitions.len(),
        memory.memtables >> 10,
        memory.block_cache >> 10
    );
    html.push_str("<h2>Keyspaces</h2><table><tr><th>name</th><th>id</th><th>key</th><th>partition by</th><th>value</th><th>on disk</th></tr>");
    for k in node.list_keyspaces() {
        let s = &k.def.schema;
        let key: Vec<String> = s
            .key
            .iter()
            .map(|e| {
                format!(
                    "{}: {}{}",
                    e.name,
                    e.ty.name(),
                    if e.order == notadb_types::Order::Desc {
                        " desc"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{} KiB</td></tr>",
            escape(&s.name),
            k.def.id,
            escape(&key.join(", ")),
            s.partition_by,
            s.value_format,
            k.approximate_bytes >> 10
        );
    }
    html.push_str("</table><h2>Partitions</h2><table><tr><th>partition</th><th>applied</th><th>last</th><th>lag (records)</th><th>lag (s)</th><th>state</th></tr>");
    for p in &status.partitions {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
            p.partition,
            p.applied,
            p.last,
            p.lag_records,
            p.lag_seconds,
            if p.failed { "stopped" } else { "applying" }
        );
    }
    html.push_str("</table>");
    cluster_table(&mut html, &topology);
    html.push_str("</body></html>");
    Html(html)
}

/// The members of the cluster: group, addresses, readiness, and per partition its applied
/// position and lag.
fn cluster_table(html: &mut String, topology: &Topology) {
    let view = topology.view();
    let _ = write!(
        html,
        "<h2>Cluster</h2><p>{} log &middot; {} partitions in {} shard groups &middot; {} live members</p><table><tr><th>node</th><th>group</th><th>gRPC</th><th>admin</th><th>state</th><th>partitions</th><th>applied</th><th>lag (records)</th><th>max lag (s)</th><th>heartbeat</th></tr>",
        view.log,
        view.partition_count,
        view.group_count,
        view.members.len()
    );
    for m in &view.members {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{} ms ago</td></tr>",
            escape(&m.node_id),
            m.group,
            escape(&m.grpc_addr),
            escape(&m.admin_addr),
            if m.ready { "ready" } else { "<b>not ready</b>" },
            m.partitions.len(),
            m.applied_total(),
            m.lag_records_total(),
            m.max_lag_seconds(),
            m.heartbeat_age_ms
        );
    }
    html.push_str("</table>");
}
