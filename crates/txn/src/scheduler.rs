//! Very lightweight locking (VLL, Ren, Thomson and Abadi, VLDB 2012): per key, a count of the
//! exclusive and the shared requests of the transactions in flight, and one queue of those
//! transactions in log order.
//!
//! A transaction requests all of its locks in one step when it is admitted. It is granted at
//! once if no earlier transaction in the queue conflicts with it (its exclusive keys have
//! counts of exactly its own request, its shared keys no exclusive request); otherwise it is
//! blocked. The head of the queue can always run: everything before it has finished. When the
//! executor would otherwise idle, selective contention analysis (SCA) walks the queue with two
//! bit sets of the keys earlier transactions hold or wait for, and grants every blocked
//! transaction that conflicts with none of them. Conflicting transactions therefore run in log
//! order, and non-conflicting ones in any order: the result is the log order's.

use std::collections::{BTreeMap, HashMap};

use notadb_types::Seq;
use xxhash_rust::xxh3::xxh3_64;

use crate::TxnKey;

/// Bits in each of SCA's two key sets. A collision only makes SCA more cautious.
const SCA_BITS: usize = 1 << 16;
/// Most queue entries one SCA pass looks at, from the head: bounds the cost of a pass when
/// the queue is long (entries further back wait for a later pass or for the head).
pub const SCA_WINDOW: usize = 1024;

#[derive(Clone, Copy, Default)]
struct Counts {
    exclusive: u32,
    shared: u32,
}

struct Slot {
    locks: Vec<(TxnKey, bool)>,
    barrier: bool,
    granted: bool,
}

/// The lock table and the queue of one partition's transactions in flight.
#[derive(Default)]
pub struct Scheduler {
    counts: HashMap<TxnKey, Counts>,
    queue: BTreeMap<Seq, Slot>,
    barriers: usize,
    blocked: usize,
    /// SCA's key sets (exclusive, shared), kept between passes.
    sca_bits: (Vec<u64>, Vec<u64>),
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits the entry at `seq` with its locks (`true`: exclusive), each key once. A barrier
    /// takes no keys and conflicts with everything. Returns whether it is granted now.
    pub fn admit(&mut self, seq: Seq, locks: Vec<(TxnKey, bool)>, barrier: bool) -> bool {
        let mut free = if barrier {
            self.queue.is_empty()
        } else {
            self.barriers == 0
        };
        for (key, exclusive) in &locks {
            let c = self.counts.entry(key.clone()).or_default();
            if *exclusive {
                c.exclusive += 1;
                free &= c.exclusive == 1 && c.shared == 0;
            } else {
                c.shared += 1;
                free &= c.exclusive == 0;
            }
        }
        if barrier {
            self.barriers += 1;
        }
        if !free {
            self.blocked += 1;
        }
        self.queue.insert(
            seq,
            Slot {
                locks,
                barrier,
                granted: free,
            },
        );
        free
    }

    /// Releases every lock of the entry at `seq` in one step. Returns the entries granted as a
    /// result: the new head of the queue, if it was blocked.
    pub fn release(&mut self, seq: Seq) -> Option<Seq> {
        let slot = self
            .queue
            .remove(&seq)
            .expect("released entries were admitted");
        debug_assert!(slot.granted, "only granted entries run and release");
        for (key, exclusive) in slot.locks {
            let c = self
                .counts
                .get_mut(&key)
                .expect("admitted keys are counted");
            if exclusive {
                c.exclusive -= 1;
            } else {
                c.shared -= 1;
            }
            if c.exclusive == 0 && c.shared == 0 {
                self.counts.remove(&key);
            }
        }
        if slot.barrier {
            self.barriers -= 1;
        }
        let (&head, slot) = self.queue.iter_mut().next()?;
        if slot.granted {
            return None;
        }
        slot.granted = true;
        self.blocked -= 1;
        Some(head)
    }

    /// Selective contention analysis: grants, in queue order, every blocked entry that no
    /// earlier entry in the queue conflicts with. Returns the entries granted.
    pub fn contention_pass(&mut self) -> Vec<Seq> {
        let mut granted = Vec::new();
        if self.blocked == 0 {
            return granted;
        }
        let (exclusive, shared) = &mut self.sca_bits;
        if exclusive.is_empty() {
            *exclusive = vec![0u64; SCA_BITS / 64];
            *shared = vec![0u64; SCA_BITS / 64];
        } else {
            exclusive.fill(0);
            shared.fill(0);
        }
        let bit = |key: &TxnKey| {
            let mut h = xxh3_64(&key.key);
            h ^= u64::from(key.keyspace.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let b = (h as usize) % SCA_BITS;
            (b / 64, 1u64 << (b % 64))
        };
        for (&seq, slot) in self.queue.iter_mut().take(SCA_WINDOW) {
            if slot.barrier {
                break;
            }
            if !slot.granted {
                let conflicts = slot.locks.iter().any(|(key, excl)| {
                    let (w, m) = bit(key);
                    exclusive[w] & m != 0 || (*excl && shared[w] & m != 0)
                });
                if !conflicts {
                    slot.granted = true;
                    self.blocked -= 1;
                    granted.push(seq);
                }
            }
            for (key, excl) in &slot.locks {
                let (w, m) = bit(key);
                if *excl {
                    exclusive[w] |= m;
                } else {
                    shared[w] |= m;
                }
            }
        }
        granted
    }

    /// Entries admitted and not granted.
    pub fn blocked(&self) -> usize {
        self.blocked
    }

    /// Entries admitted and not released.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Whether the entry at `seq` is admitted and granted.
    pub fn is_granted(&self, seq: Seq) -> bool {
        self.queue.get(&seq).is_some_and(|s| s.granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notadb_types::KeyspaceId;

    fn k(name: &str) -> TxnKey {
        TxnKey::new(KeyspaceId(1), name.as_bytes().to_vec())
    }

    #[test]
    fn conflicting_entries_run_in_log_order() {
        let mut s = Scheduler::new();
        assert!(s.admit(Seq(1), vec![(k("a"), true)], false));
        assert!(!s.admit(Seq(2), vec![(k("a"), false)], false));
        assert!(!s.admit(Seq(3), vec![(k("a"), false)], false));
        // Shared after shared on a free key is granted; exclusive after shared is not.
        assert!(s.admit(Seq(4), vec![(k("b"), false)], false));
        assert!(!s.admit(Seq(5), vec![(k("b"), true)], false));
        assert_eq!(s.blocked(), 3);
        // Releasing the head grants the next head only.
        assert_eq!(s.release(Seq(1)), Some(Seq(2)));
        assert!(!s.is_granted(Seq(3)));
        assert_eq!(s.release(Seq(2)), Some(Seq(3)));
        assert_eq!(s.release(Seq(3)), None, "4 was granted at admission");
        assert_eq!(s.release(Seq(4)), Some(Seq(5)));
        assert_eq!(s.release(Seq(5)), None);
        assert_eq!((s.blocked(), s.in_flight()), (0, 0));
        assert!(s.counts.is_empty());
    }

    #[test]
    fn contention_analysis_grants_only_entries_without_earlier_conflicts() {
        let mut s = Scheduler::new();
        assert!(s.admit(Seq(1), vec![(k("a"), true)], false));
        // Blocked behind 1, and 3 behind 2 on b; 4 is blocked behind 1 on a as a reader.
        assert!(!s.admit(Seq(2), vec![(k("a"), true), (k("b"), true)], false));
        assert!(!s.admit(Seq(3), vec![(k("b"), true)], false));
        assert!(!s.admit(Seq(4), vec![(k("a"), false)], false));
        assert!(s.admit(Seq(5), vec![(k("c"), true)], false));
        assert_eq!(s.contention_pass(), Vec::<Seq>::new());
        // After 1 releases, 2 is the head and granted; SCA still grants nothing (3 waits on
        // b for 2, 4 on a).
        assert_eq!(s.release(Seq(1)), Some(Seq(2)));
        assert_eq!(s.contention_pass(), Vec::<Seq>::new());
        // A reader of a, admitted now, is blocked by 2 and SCA keeps it so.
        assert!(!s.admit(Seq(6), vec![(k("d"), false), (k("a"), false)], false));
        assert!(s.contention_pass().is_empty());
        assert_eq!(s.blocked(), 3);
    }

    #[test]
    fn contention_analysis_finds_a_runnable_entry_behind_a_stalled_head() {
        let mut s = Scheduler::new();
        assert!(s.admit(Seq(1), vec![(k("x"), true)], false));
        assert!(!s.admit(Seq(2), vec![(k("x"), true), (k("y"), true)], false));
        // 3 writes y: blocked behind 2 by the counts... and SCA agrees (2 is earlier).
        assert!(!s.admit(Seq(3), vec![(k("y"), true)], false));
        // 4 reads z and z is free: granted at admission.
        assert!(s.admit(Seq(4), vec![(k("z"), false)], false));
        // 5 writes z after 4 reads it: blocked; nothing earlier but 4 conflicts, so SCA keeps
        // it blocked too.
        assert!(!s.admit(Seq(5), vec![(k("z"), true)], false));
        assert!(s.contention_pass().is_empty());
        // Once 4 releases, 5 is still not the head, but SCA now finds it runnable.
        assert_eq!(s.release(Seq(4)), None);
        assert_eq!(s.contention_pass(), vec![Seq(5)]);
        assert_eq!(s.blocked(), 2);
    }

    #[test]
    fn barriers_wait_for_everything_and_everything_waits_for_them() {
        let mut s = Scheduler::new();
        assert!(s.admit(Seq(1), vec![(k("a"), true)], false));
        assert!(!s.admit(Seq(2), vec![], true));
        assert!(!s.admit(Seq(3), vec![(k("q"), true)], false));
        assert!(s.contention_pass().is_empty());
        assert_eq!(s.release(Seq(1)), Some(Seq(2)));
        assert_eq!(s.release(Seq(2)), Some(Seq(3)));
        assert!(s.admit(Seq(4), vec![(k("r"), true)], false));
    }
}
