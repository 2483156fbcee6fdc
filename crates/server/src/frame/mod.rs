//! The frame protocol listener: notadb's lean API for the hot calls, beside gRPC (see
//! `notadb_proto::frame` for the wire format and `docs/performance.md` for why).
//!
//! It calls the same service methods as gRPC, so both APIs validate, route, forward and
//! answer alike; only the transport differs. Two answers skip the messages: a `Scan`
//! answered here is written from its stored rows (`encode`), and a `MultiGet` of valid keys
//! served here is read from the request's bytes and answered from one buffer of values
//! (`multi_get`); any other `MultiGet` goes through the gRPC method. Every connection is one task that answers the
//! reads it can on the thread that read them.

mod connection;
mod dispatch;
pub(crate) mod multi_get;

pub use connection::Limits;
pub use dispatch::Services;

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Default largest number of requests one connection keeps in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Accepts connections until `stop` is set, then waits for the open connections to answer
/// what they have in flight.
pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut stopped = stop.clone();
    let accepted_total = metrics::counter!("notadb_frame_connections_total");
    loop {
        tokio::select! {
            biased;
            _ = until_stopped(&mut stopped) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accepted_total.increment(1);
                    let (services, stop) = (services.clone(), stop.clone());
                    connections.spawn(async move {
                        if let Err(e) = connection::serve(stream, services, limits, stop).await {
                            tracing::debug!(%peer, error = %e, "frame connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: go on.
                    tracing::warn!(error = %e, "accepting a frame connection");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Resolves once `stop` is set (or its sender is gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
