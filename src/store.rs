//! The store seam: what the agent needs of etcd, in our own types. The etcd
//! adapter (`etcd.rs`) implements it against a real cluster; the agent loop
//! (`agent.rs`) depends on it and on nothing else of etcd.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::engine::EngineIdentity;
use crate::plan::{LeaseId, Observed, Operation};

mod batching;
pub mod paging;
mod timing;
pub use batching::apply_in_batches;
pub use timing::{
    candidate_key, lock_name, CONNECT_TIMEOUT, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, LOCK_ROOT,
    REQUEST_TIMEOUT,
};

/// Why a request to the store failed, classified by what the agent does
/// about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached, did not answer in time, or refused
    /// for now (space quota exceeded, too many requests, a stale auth
    /// token...): trouble that waiting and retrying heal.
    #[error("etcd request failed: {0}")]
    Failed(String),
    /// The store's auth refuses this user the request: an operator must
    /// grant a permission. Retried like [`StoreError::Failed`].
    #[error("etcd request failed: {0}")]
    PermissionDenied(String),
    /// Our lease does not exist (any more).
    #[error("etcd lease not found")]
    LeaseNotFound,
    /// The store refused this request as such: beyond its size limits.
    /// Retrying the same request cannot succeed: a per-record error.
    #[error("etcd refused the request: {0}")]
    TooLarge(String),
    /// The host lock the write was fenced by is no longer ours (our lease
    /// ended, and another agent may hold the host): nothing was written.
    #[error("the host lock is no longer ours")]
    LockLost,
    /// A write outside the host prefix was asked for, and refused.
    #[error("refusing to touch {key:?}: it is outside {prefix:?}")]
    OutsidePrefix { key: String, prefix: String },
    /// A stream (watch, keep-alive) ended.
    #[error("etcd closed the {0} stream")]
    StreamEnded(&'static str),
    /// etcd cancelled a watch because the revision it had to send from was
    /// compacted: whoever watched must read again.
    #[error("etcd cancelled the watch: revision {0} and older are compacted")]
    WatchCompacted(i64),
}

impl StoreError {
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, StoreError::PermissionDenied(_))
    }
}

/// Our host's records and the revision they were read at.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub records: BTreeMap<String, Observed>,
    pub revision: i64,
}

/// What became of a list of operations.
#[derive(Debug, Default)]
pub struct Applied {
    /// Operations the store confirmed, in order.
    pub done: Vec<Operation>,
    /// Operations it refused as too large, with its reason.
    pub rejected: Vec<(Operation, StoreError)>,
    /// Revisions our transactions created, to recognise our own writes in
    /// the watch.
    pub revisions: Vec<i64>,
}

/// A change under a watched prefix, as the watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// The revision of the write that made the change.
    pub revision: i64,
    /// The value it put; `None`: the key was deleted. The agent looks only
    /// at whose change it is; the consumers' index applies the value.
    pub value: Option<Vec<u8>>,
}

impl Change {
    pub fn deleted(&self) -> bool {
        self.value.is_none()
    }
}

/// Why a lease's keep-alive ended.
#[derive(Debug)]
pub enum LeaseEnd {
    /// The store says the lease is gone (expired or revoked): so are its keys.
    Expired,
    /// The keep-alive broke; the lease itself may well be alive.
    Broken(StoreError),
    /// No keep-alive was answered for as long as the lease lives: etcd has
    /// let it expire by now, or could at any moment, and another agent may
    /// hold the host (a silent partition: nothing else tells).
    Unanswered,
}

/// A lease whose keep-alive task is running.
pub struct KeptAlive {
    /// The lease kept alive.
    id: LeaseId,
    /// Reports once, when the keep-alive ends.
    ended: oneshot::Receiver<LeaseEnd>,
    /// The keep-alive task; aborted when this is dropped.
    task: JoinHandle<()>,
}

impl KeptAlive {
    /// `task` keeps `id` alive and reports through the sender of `ended`.
    pub fn new(id: LeaseId, ended: oneshot::Receiver<LeaseEnd>, task: JoinHandle<()>) -> Self {
        Self { id, ended, task }
    }

    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// Completes when the keep-alive ends, saying why.
    pub async fn ended(&mut self) -> LeaseEnd {
        (&mut self.ended)
            .await
            .unwrap_or(LeaseEnd::Broken(StoreError::StreamEnded(
                "lease keep-alive",
            )))
    }
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The key that holds a host's lock for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockKey {
    /// The election's name.
    pub name: Vec<u8>,
    /// Our candidate key under it.
    pub key: Vec<u8>,
    /// The revision that created it.
    pub revision: i64,
    /// The lease it rides on.
    pub lease: LeaseId,
}

/// A campaign in flight: completes with our key once we hold the lock, or
/// with `None` when the request ran out of time first (campaign again).
pub type Campaign = BoxFuture<'static, Result<Option<LockKey>, StoreError>>;

/// The agent holding (or first in line for) a host's lock, as it announced
/// itself in its candidate key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The candidate key: tells one holder from the next.
    pub key: String,
    pub lease: LeaseId,
    pub hostname: String,
    pub pid: u32,
    /// The boot of the holder's machine; empty when its agent did not say
    /// (an older version).
    pub boot_id: String,
    /// When the holder's process started (clock ticks since boot); 0 when
    /// its agent did not say.
    pub started: u64,
    /// The holder's pid namespace; empty when its agent did not say.
    pub pid_ns: String,
    /// The `--docker-host` it follows; empty when its agent did not say.
    pub docker_host: String,
    /// The engine the holder follows; none when its agent did not say (an
    /// older version) or said something that is not an identity.
    pub engine: Option<EngineIdentity>,
}

/// What this machine can tell of a lock holder's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderRun {
    /// A run on this machine, in this boot, whose process is gone.
    Gone,
    /// A process on this machine, in this boot, that still runs.
    AliveHere,
    /// Nothing: another machine or container, another boot, an older agent.
    Unknown,
}

/// The changes under our prefix, as a watch reports them.
pub trait PrefixChanges {
    /// The next changes; an error when the watch is broken or was cancelled
    /// (e.g. compacted), after which it must be re-created from a fresh read.
    fn next_changes(&mut self) -> impl Future<Output = Result<Vec<Change>, StoreError>>;
}

/// The consumers' seam (`list`, `render`, through `follow`): every host's
/// records under a prefix, read in pages at one revision and watched from
/// the next. Read-only; implemented by the etcd adapter
/// (`etcd::RecordsReader`) and by the simulator's cluster.
pub trait RecordSource {
    type Watch: PrefixChanges;

    /// Every key (that is UTF-8) and value under `prefix`, folded into what
    /// `start` makes, page by page: nothing but `fold` decides what stays
    /// in memory.
    fn read<T>(
        &mut self,
        prefix: &str,
        start: impl Fn() -> T,
        fold: impl FnMut(&mut T, paging::Entry<'_>),
    ) -> impl Future<Output = Result<paging::PrefixRead<T>, StoreError>>;

    /// Watches `prefix` from `revision` on.
    fn watch(
        &mut self,
        prefix: &str,
        revision: i64,
    ) -> impl Future<Output = Result<Self::Watch, StoreError>>;
}

/// How many candidates for a host's lock a run looks at, oldest first, for
/// gone runs of its machine waiting in line: two agents per host is the
/// rule, so a line longer than this is a crowd of its own.
pub const CANDIDATES_LOOKED_AT: usize = 16;

/// The store, confined to one host's prefix, as the agent loop uses it.
pub trait Store {
    type Watch: PrefixChanges;

    /// The name of our host's lock, for log lines.
    fn lock_name(&self) -> String;

    /// Every record under our host prefix, with the lease it rides on.
    fn observe(&mut self) -> impl Future<Output = Result<Snapshot, StoreError>>;

    /// Applies `operations` in order, puts on `lease` (`0`: none); refuses
    /// any operation outside the host prefix. With a `fence`, every
    /// transaction applies only while that lock key still exists as it was
    /// created ([`StoreError::LockLost`] otherwise), so that an agent whose
    /// lock ended can never write beside the next holder.
    fn apply(
        &mut self,
        operations: &[Operation],
        lease: LeaseId,
        fence: Option<&LockKey>,
    ) -> impl Future<Output = Result<Applied, StoreError>>;

    /// Watches our host prefix from `revision` on.
    fn watch(&mut self, revision: i64) -> impl Future<Output = Result<Self::Watch, StoreError>>;

    /// A new lease of `ttl`.
    fn grant_lease(&mut self, ttl: Duration) -> impl Future<Output = Result<LeaseId, StoreError>>;

    /// Keeps `lease` alive, one keep-alive every `period`; fails with
    /// [`StoreError::LeaseNotFound`] when it is gone.
    fn keep_alive(
        &mut self,
        lease: LeaseId,
        period: Duration,
    ) -> impl Future<Output = Result<KeptAlive, StoreError>>;

    /// Revokes `lease`: every key on it goes at once.
    fn revoke_lease(&mut self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>>;

    /// Starts campaigning for our host's lock on `lease`.
    fn campaign(
        &mut self,
        lease: LeaseId,
        engine: &EngineIdentity,
    ) -> impl Future<Output = Result<Campaign, StoreError>>;

    /// Who holds our host's lock (the oldest candidate), if anyone.
    fn lock_holder(&mut self) -> impl Future<Output = Result<Option<Holder>, StoreError>>;

    /// The candidates for our host's lock, oldest (the holder) first; at
    /// most [`CANDIDATES_LOOKED_AT`] of them.
    fn candidates(&mut self) -> impl Future<Output = Result<Vec<Holder>, StoreError>>;

    /// The oldest candidate for our host's lock but the one on `ours`: who
    /// holds it next if we resign.
    fn next_in_line(
        &mut self,
        ours: LeaseId,
    ) -> impl Future<Output = Result<Option<Holder>, StoreError>>;

    /// Gives the lock up: the next candidate holds it at once.
    fn resign(&mut self, key: LockKey) -> impl Future<Output = Result<(), StoreError>>;

    /// What this machine can tell of the process that holds the lock: gone
    /// (a previous run of ours died; its key only waits for its lease to
    /// expire), alive here, or nothing (another machine, an older agent).
    fn holder_run(&self, holder: &Holder) -> HolderRun;

    /// Removes the lock key of such a `holder` (if it is still that run's),
    /// so that our campaign holds at once; its records stay where they are.
    fn take_over(&mut self, holder: &Holder) -> impl Future<Output = Result<(), StoreError>>;

    /// Like `take_over`, and in the same transaction puts our candidate key
    /// on `lease` for `engine`: the lock is never free between the two, so
    /// that no other engine's agent can take it in between.
    fn take_over_for(
        &mut self,
        holder: &Holder,
        lease: LeaseId,
        engine: &EngineIdentity,
    ) -> impl Future<Output = Result<(), StoreError>>;

    /// Withdraws our candidacy on `lease` (deletes its candidate key, if it
    /// is still on that lease) without revoking the lease, whose records
    /// may still wait for the holder to move them.
    fn withdraw(&mut self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>>;

    /// Removes every record of this host: deletes everything under the
    /// prefix (with a `fence`, only while that lock key exists as it was
    /// created, like every write: [`StoreError::LockLost`] otherwise, and
    /// nothing is deleted), then revokes `lease`.
    fn deregister(
        &mut self,
        lease: Option<LeaseId>,
        fence: Option<&LockKey>,
    ) -> impl Future<Output = Result<(), StoreError>>;
}
