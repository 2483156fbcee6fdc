//! Membership: every node puts a heartbeat (group, addresses, readiness, applied positions,
//! lease candidacies) into the members store (the JetStream bucket `{name}_members`, whose
//! entries expire after the member TTL, or the Kafka topic `{topic}.members`); every node
//! watches the store to keep its routing table.

use crate::control::{KvChange, KvStore};
use crate::error::ClusterError;
use crate::meta::ClusterDoc;
use futures::StreamExt;
use notadb_node::Node;
use notadb_record::now_micros;
use notadb_types::{GroupId, PartitionId, Seq, Token};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Pause before re-watching after the watch stream ended (a NATS restart).
const REWATCH_PAUSE: Duration = Duration::from_millis(500);

/// One partition's position on a member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberPartition {
    /// The partition's id.
    pub partition: u16,
    /// The member's applied seq of the partition.
    pub applied: u64,
    /// Highest seq the member knows in the partition's log.
    pub last: u64,
    /// Age of the oldest entry the member is applying, in seconds; 0 when it is not behind.
    pub lag_seconds: f64,
}

/// A node's heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub node_id: String,
    /// The shard group it serves.
    pub group: GroupId,
    /// Where it serves gRPC.
    pub grpc_addr: String,
    /// Where it serves admin HTTP.
    pub admin_addr: String,
    /// Where it serves the frame protocol; empty when it does not (or is older).
    #[serde(default)]
    pub frame_addr: String,
    /// Whether the node was ready (`Node::is_ready`) when it sent the heartbeat.
    pub ready: bool,
    /// The positions of the partitions the node owns.
    pub partitions: Vec<MemberPartition>,
    /// The sender's wall clock when it sent the heartbeat, Unix milliseconds: for display,
    /// and to age heartbeats a node reads back at start-up.
    pub sent_unix_ms: u64,
    /// The leases this node competes for, with when it began to (Unix milliseconds): on a
    /// broker without leases of its own, the live candidate that began first holds a lease
    /// (see `lease.rs`).
    #[serde(default)]
    pub candidacies: Vec<(String, u64)>,
}

impl Member {
    /// The member's applied seq for `p` (0 when it does not serve `p`).
    pub fn applied(&self, p: PartitionId) -> Seq {
        self.partition(p).map_or(Seq(0), |s| Seq(s.applied))
    }

    /// Entries of `p` the member has not applied yet.
    pub fn lag(&self, p: PartitionId) -> u64 {
        self.partition(p)
            .map_or(u64::MAX, |s| s.last.saturating_sub(s.applied))
    }

    fn partition(&self, p: PartitionId) -> Option<&MemberPartition> {
        self.partitions.iter().find(|s| s.partition == p.0)
    }
}

/// How long ago, by this node's clock, a heartbeat sent at `sent_unix_ms` was sent (zero if
/// it seems to come from the future).
pub(crate) fn age_of(sent_unix_ms: u64) -> Duration {
    let now = now_micros() as u64 / 1000;
    Duration::from_millis(now.saturating_sub(sent_unix_ms))
}

impl Member {
    /// The heartbeat `node`, serving `group` at these addresses, would send now.
    pub fn of_node(node: &Node, group: GroupId, at: &crate::Advertised) -> Member {
        let status = node.status();
        Member {
            node_id: status.node_id,
            group,
            grpc_addr: at.grpc_addr.clone(),
            admin_addr: at.admin_addr.clone(),
            frame_addr: at.frame_addr.clone().unwrap_or_default(),
            ready: status.ready,
            partitions: status
                .partitions
                .iter()
                .map(|p| MemberPartition {
                    partition: p.partition.0,
                    applied: p.applied.0,
                    last: p.last.0,
                    lag_seconds: p.lag_seconds,
                })
                .collect(),
            sent_unix_ms: now_micros() as u64 / 1000,
            candidacies: Vec::new(),
        }
    }
}

/// A member as this node last heard of it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its last heartbeat.
    pub member: Member,
    /// How long ago its last heartbeat arrived here.
    pub age: Duration,
}

/// The routing table: the cluster's shape and its live members.
pub struct Routes {
    doc: ClusterDoc,
    ttl: Duration,
    self_id: String,
    members: RwLock<BTreeMap<String, (Member, Instant)>>,
}

impl Routes {
    pub(crate) fn new(doc: ClusterDoc, ttl: Duration, self_id: String) -> Routes {
        Routes {
            doc,
            ttl,
            self_id,
            members: RwLock::new(BTreeMap::new()),
        }
    }

    /// The cluster's shape.
    pub fn doc(&self) -> &ClusterDoc {
        &self.doc
    }

    /// This node's id.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// Notes a heartbeat (also this node's own, so it shows in the table at once).
    pub fn saw(&self, member: Member) {
        self.saw_aged(member, Duration::ZERO);
    }

    /// Notes a heartbeat that arrived `age` ago (one read back at start-up): it expires
    /// `age` sooner.
    pub fn saw_aged(&self, member: Member, age: Duration) {
        let at = Instant::now()
            .checked_sub(age.min(self.ttl + Duration::from_secs(1)))
            .unwrap_or_else(Instant::now);
        self.members
            .write()
            .expect("routes lock")
            .insert(member.node_id.clone(), (member, at));
    }

    /// The holder of lease `key` among the live members that compete for it: the one that
    /// began competing first (ties by node id).
    pub fn lease_holder(&self, key: &str) -> Option<String> {
        self.live()
            .into_iter()
            .filter_map(|s| {
                let since = s.member.candidacies.iter().find(|(k, _)| k == key)?.1;
                Some((since, s.member.node_id))
            })
            .min()
            .map(|(_, id)| id)
    }

    /// Forgets a member that left.
    pub fn left(&self, node_id: &str) {
        self.members.write().expect("routes lock").remove(node_id);
    }

    /// Every member heard from within the TTL, by node id.
    pub fn live(&self) -> Vec<Seen> {
        self.members
            .read()
            .expect("routes lock")
            .values()
            .filter(|(_, at)| at.elapsed() <= self.ttl)
            .map(|(m, at)| Seen {
                member: m.clone(),
                age: at.elapsed(),
            })
            .collect()
    }

    /// The live, ready members of `group` (this node included) by node id: the first is the
    /// group's cache loader, so that concurrent misses of a key, wherever they arrive, meet
    /// on one replica. Tables that disagree for a moment (a member joining or leaving) can
    /// make two replicas load one key once each.
    pub fn loaders(&self, group: GroupId) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .live()
            .into_iter()
            .map(|s| s.member)
            .filter(|m| m.group == group && m.ready)
            .collect();
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        members
    }

    /// Live replicas of `group` other than this node, best first for a request on
    /// `partition` that must see `tokens`: ready ones, then those that applied the tokens,
    /// then the least lagging.
    pub fn replicas(
        &self,
        group: GroupId,
        partition: Option<PartitionId>,
        tokens: &[Token],
    ) -> Vec<Member> {
        let mut replicas: Vec<Member> = self
            .live()
            .into_iter()
            .map(|s| s.member)
            .filter(|m| m.group == group && m.node_id != self.self_id)
            .collect();
        let has_tokens = |m: &Member| tokens.iter().all(|t| m.applied(t.partition) >= t.seq);
        let lag = |m: &Member| match partition {
            Some(p) => m.lag(p),
            None => m
                .partitions
                .iter()
                .map(|s| s.last.saturating_sub(s.applied))
                .sum(),
        };
        replicas.sort_by_key(|m| (!m.ready, !has_tokens(m), lag(m), m.node_id.clone()));
        replicas
    }
}

/// The leases this node competes for (by name, with when it began to), sent in its
/// heartbeats.
pub(crate) type Candidacies = std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

/// Puts this node's heartbeat every `interval` until `stop`, then deletes it.
pub(crate) async fn heartbeat_loop(
    members: std::sync::Arc<dyn KvStore>,
    routes: std::sync::Arc<Routes>,
    node: Node,
    addrs: (GroupId, crate::Advertised),
    candidacies: Candidacies,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (group, at) = addrs;
    let id = node.config().node_id.clone();
    loop {
        if let Err(e) = node.refresh_log_positions().await {
            tracing::debug!(error = %e, "could not read the log's end");
        }
        let mut beat = Member::of_node(&node, group, &at);
        beat.candidacies = candidacies
            .lock()
            .expect("candidacies lock")
            .iter()
            .map(|(k, since)| (k.clone(), *since))
            .collect();
        let bytes = serde_json::to_vec(&beat).expect("serializable");
        routes.saw(beat);
        if let Err(e) = members.put(&id, bytes.into()).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    if let Err(e) = members.delete(&id).await {
        tracing::warn!(error = %e, "could not remove this node's heartbeat");
    }
}

fn saw_heartbeat(routes: &Routes, key: &str, value: &[u8], aged: bool) {
    match serde_json::from_slice::<Member>(value) {
        Ok(member) => {
            let age = if aged {
                age_of(member.sent_unix_ms)
            } else {
                Duration::ZERO
            };
            routes.saw_aged(member, age)
        }
        Err(e) => tracing::warn!(key, error = %e, "unreadable heartbeat"),
    }
}

/// Keeps `routes` up to date with the store until `stop`: the heartbeats it holds (aged by
/// their send time), then every change.
pub(crate) async fn watch_members(
    members: std::sync::Arc<dyn KvStore>,
    routes: std::sync::Arc<Routes>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let watched = async {
            let watch = members.watch(&[""]).await?;
            for entry in members.entries("").await? {
                saw_heartbeat(&routes, &entry.key, &entry.value, true);
            }
            Ok::<_, ClusterError>(watch)
        };
        match watched.await {
            Ok(mut watch) => loop {
                let next = tokio::select! {
                    _ = stop.changed() => return,
                    next = watch.next() => next,
                };
                match next {
                    None => break,
                    Some(KvChange::Put(entry)) => {
                        saw_heartbeat(&routes, &entry.key, &entry.value, false)
                    }
                    Some(KvChange::Deleted(key)) => routes.left(&key),
                }
            },
            Err(e) => tracing::warn!(error = %e, "watching members failed; retrying"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(REWATCH_PAUSE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, group: u16, ready: bool, applied: u64, last: u64) -> Member {
        Member {
            node_id: id.into(),
            group: GroupId(group),
            grpc_addr: format!("{id}:7070"),
            frame_addr: String::new(),
            admin_addr: format!("{id}:7071"),
            ready,
            partitions: vec![MemberPartition {
                partition: 1,
                applied,
                last,
                lag_seconds: 0.0,
            }],
            sent_unix_ms: 0,
            candidacies: Vec::new(),
        }
    }

    #[test]
    fn replicas_prefer_ready_then_tokens_then_least_lag_and_skip_self_and_other_groups() {
        let routes = Routes::new(ClusterDoc::new(4, 2), Duration::from_secs(10), "me".into());
        routes.saw(member("me", 1, true, 10, 10));
        routes.saw(member("lagging", 1, true, 5, 10));
        routes.saw(member("current", 1, true, 9, 10));
        routes.saw(member("unready", 1, false, 10, 10));
        routes.saw(member("other", 0, true, 10, 10));
        let ids = |tokens: &[Token]| -> Vec<String> {
            routes
                .replicas(GroupId(1), Some(PartitionId(1)), tokens)
                .into_iter()
                .map(|m| m.node_id)
                .collect()
        };
        assert_eq!(ids(&[]), ["current", "lagging", "unready"]);
        let token = Token {
            partition: PartitionId(1),
            seq: Seq(9),
        };
        assert_eq!(ids(&[token]), ["current", "lagging", "unready"]);
        let token = Token {
            partition: PartitionId(1),
            seq: Seq(6),
        };
        // Both ready replicas have it: the least lagging first.
        assert_eq!(ids(&[token])[0], "current");
        routes.left("current");
        assert_eq!(ids(&[]), ["lagging", "unready"]);
    }

    #[test]
    fn the_first_live_candidate_holds_a_lease() {
        let routes = Routes::new(ClusterDoc::new(4, 2), Duration::from_secs(10), "me".into());
        let candidate = |id: &str, since: u64| Member {
            candidacies: vec![("txn.forwarder".into(), since)],
            ..member(id, 0, true, 1, 1)
        };
        assert_eq!(routes.lease_holder("txn.forwarder"), None);
        routes.saw(candidate("b", 200));
        routes.saw(candidate("a", 300));
        routes.saw(member("c", 0, true, 1, 1));
        assert_eq!(routes.lease_holder("txn.forwarder").as_deref(), Some("b"));
        routes.left("b");
        assert_eq!(routes.lease_holder("txn.forwarder").as_deref(), Some("a"));
        // A heartbeat read back long after it was sent is not live.
        routes.saw_aged(candidate("z", 1), Duration::from_secs(60));
        assert_eq!(routes.lease_holder("txn.forwarder").as_deref(), Some("a"));
        assert_eq!(routes.lease_holder("transmitter"), None);
    }

    #[test]
    fn members_older_than_the_ttl_are_not_live() {
        let routes = Routes::new(
            ClusterDoc::new(4, 2),
            Duration::from_millis(20),
            "me".into(),
        );
        routes.saw(member("a", 0, true, 1, 1));
        assert_eq!(routes.live().len(), 1);
        std::thread::sleep(Duration::from_millis(40));
        assert!(routes.live().is_empty());
    }
}
