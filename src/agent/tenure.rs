//! The agent's tenure in etcd: its lease and its hold on the host lock, as
//! explicit states.
//!
//! The lock always rides on the lease: losing the lease loses the lock, and
//! a new lease must win the lock again before anything is written. With
//! `--ttl N` the records ride on the same lease; with `--ttl 0` the lease
//! carries the lock alone and the records carry none.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::claim::Succession;
use super::etcd_view::EtcdView;
use super::Agent;
use crate::config::Config;
use crate::plan::LeaseId;
use crate::store::{Campaign, KeptAlive, LockKey, Store, StoreError};

/// The TTL of a lease that carries only the host lock (`--ttl 0`): how long
/// a standby waits for a holder that died.
const LOCK_ONLY_TTL: Duration = Duration::from_secs(10);

/// Whether a run takes a lease and the host lock at all: a run that writes
/// nothing lasting (`--once`: a lease outlives no process that does not keep
/// it alive; `--dry-run`: it writes nothing) takes neither.
pub fn takes_lease(config: &Config) -> bool {
    !config.once && !config.dry_run
}

/// The TTL of the lease a run keeps: the records' (`--ttl`), or, with
/// `--ttl 0`, that of a lease carrying the lock alone.
pub fn lease_ttl(config: &Config) -> Duration {
    config.lease_ttl.unwrap_or(LOCK_ONLY_TTL)
}

/// The TTL of the lease the records ride on: none with `--ttl 0`, and none
/// for a run that takes no lease.
pub fn records_lease_ttl(config: &Config) -> Option<Duration> {
    config.lease_ttl.filter(|_| takes_lease(config))
}

/// The agent's tenure in etcd: whether it takes a lease and the host lock
/// at all, and if so, both. One type, because the two are wanted or not
/// together (a run that writes nothing lasting takes neither).
pub enum Tenure {
    /// `--once`, `--dry-run`: this run holds no lease and takes no lock;
    /// what it writes (`--once`) is unfenced and on no lease.
    NotWanted,
    /// A lease, and the hold on the host lock that rides on it.
    Kept { lease: Lease, lock: HostLock },
}

impl Tenure {
    /// The tenure a run starts with.
    pub fn initial(config: &Config) -> Self {
        if takes_lease(config) {
            Tenure::Kept {
                lease: Lease::Missing,
                lock: HostLock::Free,
            }
        } else {
            Tenure::NotWanted
        }
    }

    pub fn lease(&self) -> Option<&Lease> {
        match self {
            Tenure::NotWanted => None,
            Tenure::Kept { lease, .. } => Some(lease),
        }
    }

    pub fn lock(&self) -> Option<&HostLock> {
        match self {
            Tenure::NotWanted => None,
            Tenure::Kept { lock, .. } => Some(lock),
        }
    }

    pub fn lease_mut(&mut self) -> Option<&mut Lease> {
        match self {
            Tenure::NotWanted => None,
            Tenure::Kept { lease, .. } => Some(lease),
        }
    }

    pub fn lock_mut(&mut self) -> Option<&mut HostLock> {
        match self {
            Tenure::NotWanted => None,
            Tenure::Kept { lock, .. } => Some(lock),
        }
    }

    /// The lease and the lock apart, to wait on both at once.
    pub fn parts_mut(&mut self) -> (Option<&mut Lease>, Option<&mut HostLock>) {
        match self {
            Tenure::NotWanted => (None, None),
            Tenure::Kept { lease, lock } => (Some(lease), Some(lock)),
        }
    }

    /// Sets the lease, for a run that keeps one (else nothing to set).
    pub fn set_lease(&mut self, to: Lease) {
        if let Some(lease) = self.lease_mut() {
            *lease = to;
        }
    }

    /// Sets the hold on the lock, for a run that takes it.
    pub fn set_lock(&mut self, to: HostLock) {
        if let Some(lock) = self.lock_mut() {
            *lock = to;
        }
    }

    /// The lock as it was, leaving it `Free` (at exit).
    pub fn take_lock(&mut self) -> Option<HostLock> {
        self.lock_mut()
            .map(|lock| std::mem::replace(lock, HostLock::Free))
    }

    /// Our lease, while its keep-alive runs.
    pub fn held_id(&self) -> Option<LeaseId> {
        self.lease().and_then(Lease::held_id)
    }

    /// The lease that may still carry our keys (for deregistering).
    pub fn last_known_id(&self) -> Option<LeaseId> {
        self.lease().and_then(Lease::last_known_id)
    }

    /// The key our writes are fenced by: none when we hold no lock.
    pub fn fence(&self) -> Option<&LockKey> {
        self.lock().and_then(HostLock::fence)
    }

    /// Whether this agent may write the host's prefix: it holds the host
    /// on a live lease (or writes without the lock, refused it), or takes
    /// neither.
    pub fn permits_writes(&self) -> bool {
        match self {
            Tenure::NotWanted => true,
            Tenure::Kept { lease, lock } => {
                matches!(lease, Lease::Held(_))
                    && matches!(lock, HostLock::Held(_) | HostLock::Refused)
            }
        }
    }

    /// Whether a lease must be granted or resumed, or the lock claimed,
    /// before anything else.
    pub fn needs_work(&self) -> bool {
        match self {
            Tenure::NotWanted => false,
            Tenure::Kept { lease, lock } => lease.needs_work() || matches!(lock, HostLock::Free),
        }
    }
}

/// The agent's lease.
pub enum Lease {
    /// None held: grant one.
    Missing,
    /// Its keep-alive broke but the lease may be alive: resume it before
    /// granting another, so that its records stay as they are.
    Broken(LeaseId),
    /// Kept alive by its task.
    Held(KeptAlive),
}

impl Lease {
    pub fn held_id(&self) -> Option<LeaseId> {
        match self {
            Lease::Held(kept) => Some(kept.id()),
            _ => None,
        }
    }

    /// The lease that may still carry our keys (for deregistering).
    pub fn last_known_id(&self) -> Option<LeaseId> {
        match self {
            Lease::Held(kept) => Some(kept.id()),
            Lease::Broken(id) => Some(*id),
            Lease::Missing => None,
        }
    }

    /// Whether a lease must be granted or resumed before anything else.
    pub fn needs_work(&self) -> bool {
        matches!(self, Lease::Missing | Lease::Broken(_))
    }
}

/// The agent's hold on its host's lock.
pub enum HostLock {
    /// Not held and not campaigning: campaign once the lease is held.
    Free,
    /// Campaigning on our lease: waiting for the holder, if any, to go.
    Waiting(Campaign),
    /// Ours: our key rides on our lease.
    Held(LockKey),
    /// etcd's auth refuses us the lock (a role set up before the lock
    /// existed): write without it, as agents did before, until the next
    /// resync tries again.
    Refused,
    /// An agent of another engine holds this host: two engines claim one
    /// host IP. A conflict, never a hand-over (taking the host would delete
    /// the records of the other engine's live containers): this run writes
    /// nothing and does not campaign; it looks at the holder again every
    /// 10 s (`holder::check_holder`) and at each resync.
    Conflict,
}

impl HostLock {
    /// The key our writes are fenced by: none when we hold no lock.
    pub fn fence(&self) -> Option<&LockKey> {
        match self {
            HostLock::Held(key) => Some(key),
            _ => None,
        }
    }
}

impl<S: Store> Agent<S> {
    /// Re-opens the keep-alive of a lease that may have survived a broken
    /// stream (its records stay as they are), or grants a new one (and every
    /// record moves onto it in place, once the lock is ours again).
    pub(super) async fn resume_or_grant_lease(&mut self) -> Result<(), StoreError> {
        let keep_alive_period = (self.lease_ttl / 3).max(Duration::from_millis(500));
        if let Some(&Lease::Broken(id)) = self.tenure.lease() {
            match self.store.keep_alive(id, keep_alive_period).await {
                Ok(kept) => {
                    self.tenure.set_lease(Lease::Held(kept));
                    debug!(lease = id, "lease keep-alive resumed");
                    return Ok(());
                }
                Err(StoreError::LeaseNotFound) => self.lease_lost("etcd does not know the lease"),
                Err(error) => return Err(error),
            }
        }
        let id = self.store.grant_lease(self.lease_ttl).await?;
        let kept = self.store.keep_alive(id, keep_alive_period).await?;
        self.tenure.set_lease(Lease::Held(kept));
        info!(
            lease = id,
            ttl_secs = self.lease_ttl.as_secs(),
            "lease granted"
        );
        self.etcd_view = EtcdView::Stale;
        Ok(())
    }

    /// A campaign ended: the lock is ours, or we campaign again.
    pub(super) fn campaigned(&mut self, result: Result<Option<LockKey>, StoreError>) {
        match result {
            Ok(Some(key)) => {
                info!(
                    lease = key.lease,
                    lock = self.store.lock_name(),
                    "holding this host"
                );
                self.held_on = Some(key.lease);
                self.tenure.set_lock(HostLock::Held(key));
                self.announced.holder = None;
                // Whatever the previous holder left is re-read and moved
                // onto our lease in place.
                self.etcd_view = EtcdView::Stale;
            }
            Ok(None) => self.tenure.set_lock(HostLock::Free),
            Err(error) if error.is_permission_denied() => self.lock_refused(&error),
            Err(error) => {
                self.tenure.set_lock(HostLock::Free);
                self.etcd_failed(error);
                self.retry.schedule();
            }
        }
    }

    /// etcd refuses us the lock: an upgrade must not stop registration, so
    /// write without it, and say what to grant.
    pub(super) fn lock_refused(&mut self, error: &StoreError) {
        warn!(
            lock = self.store.lock_name(),
            error = %error,
            "etcd refuses this agent the host lock; writing without it (grant the role readwrite on the lock's prefix, see docs/security.md)"
        );
        self.no_conflict();
        self.tenure.set_lock(HostLock::Refused);
        self.etcd_view = EtcdView::Stale;
    }

    /// The lease is gone and the lock and records on it with it: a new lease
    /// must win the lock and carry every record again.
    pub(super) fn lease_lost(&mut self, reason: &str) {
        let Tenure::Kept { lease, lock } = &mut self.tenure else {
            return;
        };
        if let Some(lease) = lease.last_known_id() {
            warn!(
                lease,
                reason, "etcd lease lost; taking the host again on a new one"
            );
        }
        *lease = Lease::Missing;
        // A conflict stays one; it never campaigned on this lease.
        if !matches!(lock, HostLock::Conflict) {
            *lock = HostLock::Free;
        }
        self.etcd_view = EtcdView::Stale;
    }

    /// No keep-alive answered for the lease's TTL: etcd may have let it
    /// expire, and another agent may hold the host now. Write nothing until
    /// the lock is ours again; the lease itself is resumed if it is still
    /// alive (etcd may only have been slow to answer), so that our records
    /// stay on it, and our own lock key, if it is still there, holds again.
    pub(super) fn lease_unanswered(&mut self) {
        if let Some(id) = self.tenure.held_id() {
            warn!(
                lease = id,
                lock = self.store.lock_name(),
                "etcd answered no keep-alive for the lease's TTL; the host lock may be gone, writing nothing until it is ours again"
            );
            self.tenure.set_lease(Lease::Broken(id));
        }
        if !matches!(self.tenure.lock(), Some(HostLock::Conflict)) {
            self.tenure.set_lock(HostLock::Free);
        }
        self.etcd_failed(StoreError::Failed(
            "no answer to the lease keep-alive within the lease's TTL".into(),
        ));
    }

    /// Our lock key is gone (our lease ended, or an operator deleted it):
    /// another agent may hold the host now. Write nothing more until the
    /// lock is ours again.
    pub(super) fn lock_lost(&mut self) {
        warn!(
            lock = self.store.lock_name(),
            "the host lock is no longer ours; taking it again or standing by"
        );
        self.tenure.set_lock(HostLock::Free);
        // Whoever holds it now, if it is a run of our engine, keeps it.
        self.succession = Succession::StandsBy;
        self.etcd_view = EtcdView::Stale;
        // Most likely the lease went with the key (revoked, expired) before
        // its keep-alive could tell: check it at once, resuming it if it is
        // alive, instead of campaigning on a dead lease.
        if let Some(id) = self.tenure.held_id() {
            self.tenure.set_lease(Lease::Broken(id));
        }
    }

    /// Which lease a record must ride on to count as right: ours, or, when
    /// this run holds none (`--once`, `--dry-run`), any.
    pub(super) fn lease_policy(&self) -> Option<LeaseId> {
        match self.tenure {
            Tenure::NotWanted => None,
            Tenure::Kept { .. } => Some(self.records_lease()),
        }
    }

    /// The lease our records ride on: ours with `--ttl` > 0, else none (`0`).
    pub(super) fn records_lease(&self) -> LeaseId {
        if self.config.lease_ttl.is_some() {
            self.tenure.held_id().unwrap_or(0)
        } else {
            0
        }
    }
}
