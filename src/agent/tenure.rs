//! The agent's tenure in etcd: its lease and its hold on the host lock, as
//! explicit states.
//!
//! The lock always rides on the lease: losing the lease loses the lock, and
//! a new lease must win the lock again before anything is written. With
//! `--ttl N` the records ride on the same lease; with `--ttl 0` the lease
//! carries the lock alone and the records carry none.

use std::time::Duration;

use crate::plan::LeaseId;
use crate::store::{Campaign, Holder, KeptAlive, LockKey};

/// The TTL of a lease that carries only the host lock (`--ttl 0`): how long
/// a standby waits for a holder that died.
pub const LOCK_ONLY_TTL: Duration = Duration::from_secs(10);

/// The agent's lease.
pub enum Lease {
    /// `--once`, `--dry-run`: this run holds no lease and takes no lock.
    NotWanted,
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
            Lease::NotWanted | Lease::Missing => None,
        }
    }

    /// Whether a lease must be granted or resumed before anything else.
    pub fn needs_work(&self) -> bool {
        matches!(self, Lease::Missing | Lease::Broken(_))
    }
}

/// The agent's hold on its host's lock.
pub enum HostLock {
    /// `--once`, `--dry-run`: this run takes no lock.
    NotWanted,
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
}

impl HostLock {
    /// Whether this agent may write the host's prefix.
    pub fn permits_writes(&self) -> bool {
        matches!(
            self,
            HostLock::NotWanted | HostLock::Held(_) | HostLock::Refused
        )
    }
}

/// Whom we told the operator about, so that a standby says it once per holder.
#[derive(Debug, Default)]
pub struct Announced {
    /// The holder we last reported standing by for.
    pub holder: Option<Holder>,
}
