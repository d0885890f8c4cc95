//! The simulated etcd cluster that every [`super::store::SimStore`] handle
//! shares: keys with create and mod revisions, one revision per transaction
//! that changes something, leases that expire after their TTL (their keys
//! deleted in one revision, with watch events), prefix watches that replay
//! history from a revision unless it was compacted, and the request size
//! limits. Every change is logged as an [`Effect`], with who made it, for the
//! properties; every request as a line of the trace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::plan::LeaseId;
use crate::store::{Change, LockKey, StoreError};
use crate::supervise::sleep_until_some;

mod commit;
mod faults;
mod range;
pub use commit::Write;
pub use faults::no_space;

/// etcd's `--max-txn-ops` default.
pub const MAX_TXN_OPS: usize = 128;
/// The simulated `--max-request-bytes`: scaled down from etcd's 1.5 MiB so
/// that one catalog container ([`super::engine::Kind::Wide`]) exceeds it.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Actor {
    /// Agent process number `n` (its store handle).
    Agent(usize),
    /// An operator or script: the schedule's foreign writes and revokes.
    Foreign,
    /// The cluster itself: a lease that expired.
    Expiry,
}

/// One key changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// Simulated time since the start of the run.
    pub at: Duration,
    pub actor: Actor,
    pub key: String,
    /// `None`: deleted.
    pub value: Option<Vec<u8>>,
    pub revision: i64,
    /// For an expiry: the lease and its owner's handle, and when it was
    /// last kept alive.
    pub expired: Option<(LeaseId, Option<usize>, Duration)>,
    /// The agent process whose candidate key held the host lock when the
    /// change was made (the simulation has one host).
    pub holder: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Kv {
    pub value: Vec<u8>,
    pub lease: LeaseId,
    pub create_revision: i64,
}

/// One change to one key, and what the key held before it.
struct Past {
    change: Change,
    /// `None`: the key did not exist.
    previous: Option<Kv>,
}

struct Lease {
    ttl: Duration,
    expires_at: Instant,
    refreshed_at: Instant,
    /// The handle that was granted it.
    owner: Option<usize>,
}

struct WatchSub {
    prefix: String,
    /// Only the handle's own watches break when its connection does.
    client: usize,
    sender: mpsc::UnboundedSender<Result<Vec<Change>, StoreError>>,
}

/// How one handle reaches the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Up,
    /// Connections refused: requests fail at once.
    Refused,
    /// Packets lost: requests fail after the client's 5 s timeout.
    Blackhole,
    /// Every request takes this long (half before etcd applies it).
    Slow(Duration),
}

pub struct State {
    pub revision: i64,
    pub compacted: i64,
    pub kv: BTreeMap<String, Kv>,
    /// Every change since the last compaction, for watches and reads at a
    /// past revision.
    history: Vec<Past>,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watches: Vec<WatchSub>,
    /// Per handle: active faults of its connection, by fault id.
    reach: BTreeMap<usize, BTreeMap<u64, Reach>>,
    /// Active NOSPACE alarms: puts and lease grants are refused.
    nospace: BTreeSet<u64>,
    pub effects: Vec<Effect>,
    pub trace: Vec<String>,
    pub outside_prefix_attempts: Vec<(usize, String)>,
    /// The agent processes running now: what a machine's process table
    /// tells a new run of the holder's process (`SimStore::holder_run`).
    pub running: BTreeSet<usize>,
    start: Instant,
}

/// A handle on the cluster's state; cloning shares it.
#[derive(Clone)]
pub struct Cluster {
    state: Arc<Mutex<State>>,
    /// Bumped on every change and fault: campaigns and keep-alives look again.
    /// A `Notify`, not a `watch`, so that waiters wake in a fixed order (a
    /// run replays from its seed).
    epoch: Arc<Notify>,
    /// Wakes the lease reaper when leases change.
    leases_changed: Arc<Notify>,
}

impl Cluster {
    /// A new cluster and its lease reaper task (on the current runtime).
    pub fn new() -> Self {
        let state = State {
            revision: 1,
            compacted: 0,
            kv: BTreeMap::new(),
            history: Vec::new(),
            leases: BTreeMap::new(),
            next_lease: 0x694d_0000_0000,
            watches: Vec::new(),
            reach: BTreeMap::new(),
            nospace: BTreeSet::new(),
            effects: Vec::new(),
            trace: Vec::new(),
            outside_prefix_attempts: Vec::new(),
            running: BTreeSet::new(),
            start: Instant::now(),
        };
        let cluster = Self {
            state: Arc::new(Mutex::new(state)),
            epoch: Arc::new(Notify::new()),
            leases_changed: Arc::new(Notify::new()),
        };
        tokio::spawn(cluster.clone().reap());
        cluster
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Completes at the next change or fault (enable it before looking).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.epoch.notified()
    }

    fn bump(&self) {
        self.epoch.notify_waiters();
        self.leases_changed.notify_one();
    }

    /// Expires leases when their time comes.
    async fn reap(self) {
        loop {
            let next = self.lock().leases.values().map(|l| l.expires_at).min();
            let due = tokio::select! {
                biased;
                () = self.leases_changed.notified() => false,
                () = sleep_until_some(next) => true,
            };
            if !due {
                continue;
            }
            let now = Instant::now();
            let due: Vec<LeaseId> = {
                let state = self.lock();
                state
                    .leases
                    .iter()
                    .filter(|(_, l)| l.expires_at <= now)
                    .map(|(id, _)| *id)
                    .collect()
            };
            for lease in due {
                self.end_lease(lease, Actor::Expiry);
            }
        }
    }

    /// Removes `lease` and its keys (one revision): a revoke or an expiry.
    pub fn end_lease(&self, lease: LeaseId, actor: Actor) -> bool {
        let mut state = self.lock();
        let Some(ended) = state.leases.remove(&lease) else {
            return false;
        };
        let keys: Vec<String> = state
            .kv
            .iter()
            .filter(|(_, kv)| kv.lease == lease)
            .map(|(key, _)| key.clone())
            .collect();
        let refreshed = ended.refreshed_at.duration_since(state.start);
        let expired = (actor == Actor::Expiry).then_some((lease, ended.owner, refreshed));
        let ops: Vec<Write> = keys.into_iter().map(Write::Delete).collect();
        state.commit(actor, &ops, 0, expired);
        state.trace_line(format!("{actor:?} ended lease {lease:x}"));
        drop(state);
        self.bump();
        true
    }

    pub fn grant(&self, client: usize, ttl: Duration) -> Result<LeaseId, StoreError> {
        let mut state = self.lock();
        if !state.nospace.is_empty() {
            return Err(no_space());
        }
        state.next_lease += 0x1_0001;
        let id = state.next_lease;
        let now = Instant::now();
        state.leases.insert(
            id,
            Lease {
                ttl,
                expires_at: now + ttl,
                refreshed_at: now,
                owner: Some(client),
            },
        );
        state.trace_line(format!("Agent({client}) granted lease {id:x}"));
        drop(state);
        self.bump();
        Ok(id)
    }

    /// A keep-alive: the lease's remaining TTL, `None` when it is gone.
    pub fn refresh(&self, lease: LeaseId) -> Option<Duration> {
        let mut state = self.lock();
        let now = Instant::now();
        let kept = state.leases.get_mut(&lease).map(|l| {
            l.expires_at = now + l.ttl;
            l.refreshed_at = now;
            l.ttl
        });
        drop(state);
        self.leases_changed.notify_one();
        kept
    }

    /// The leases granted to agent process `owner` that still exist.
    pub fn leases_of(&self, owner: usize) -> Vec<LeaseId> {
        let state = self.lock();
        state
            .leases
            .iter()
            .filter(|(_, lease)| lease.owner == Some(owner))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Applies `ops` in one transaction; its revision (the current one when
    /// nothing changed).
    pub fn txn(
        &self,
        actor: Actor,
        ops: &[Write],
        lease: LeaseId,
        fence: Option<&LockKey>,
    ) -> Result<Option<i64>, StoreError> {
        let mut state = self.lock();
        if let Some(lock) = fence {
            let key = String::from_utf8_lossy(&lock.key);
            let held = state.kv.get(key.as_ref()).map(|kv| kv.create_revision);
            if held != Some(lock.revision) {
                return Err(StoreError::LockLost);
            }
        }
        let bytes: usize = ops.iter().map(Write::bytes).sum();
        if ops.len() > MAX_TXN_OPS {
            return Err(StoreError::TooLarge(
                "etcdserver: too many operations in txn request".into(),
            ));
        }
        if bytes > MAX_REQUEST_BYTES {
            return Err(StoreError::TooLarge(
                "etcdserver: request is too large".into(),
            ));
        }
        let puts = ops.iter().any(|op| matches!(op, Write::Put(..)));
        if puts && !state.nospace.is_empty() {
            return Err(no_space());
        }
        if puts && lease != 0 && !state.leases.contains_key(&lease) {
            return Err(StoreError::LeaseNotFound);
        }
        let revision = state.commit(actor, ops, lease, None);
        drop(state);
        self.bump();
        Ok(revision)
    }

    /// Cancels every watch (as etcd does to watchers that fell behind a
    /// compaction, or at a leader change).
    pub fn cancel_watches(&self) {
        let mut state = self.lock();
        for watch in state.watches.drain(..) {
            let _ = watch.sender.send(Err(StoreError::StreamEnded("watch")));
        }
    }

    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.revision;
        let compacted = state.compacted;
        state
            .history
            .retain(|past| past.change.revision > compacted);
    }

    /// A watch of `prefix` from `revision` on; `None` when that revision
    /// was compacted.
    pub fn watch(
        &self,
        client: usize,
        prefix: &str,
        revision: i64,
    ) -> Option<mpsc::UnboundedReceiver<Result<Vec<Change>, StoreError>>> {
        let mut state = self.lock();
        if revision <= state.compacted {
            return None;
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut backlog: BTreeMap<i64, Vec<Change>> = BTreeMap::new();
        for Past { change, .. } in &state.history {
            if change.revision >= revision && change.key.starts_with(prefix) {
                let changes = backlog.entry(change.revision).or_default();
                changes.push(change.clone());
            }
        }
        for changes in backlog.into_values() {
            let _ = sender.send(Ok(changes));
        }
        state.watches.push(WatchSub {
            prefix: prefix.to_owned(),
            client,
            sender,
        });
        Some(receiver)
    }

    pub fn trace(&self, line: String) {
        self.lock().trace_line(line);
    }
}
