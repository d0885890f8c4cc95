//! The agent's exit, as far as etcd goes (docs/host-lock.md: One agent per host,
//! Faults): a holder hands the host over or keeps it for its next run, or
//! deregisters; a standby withdraws.

use std::future::Future;

use tokio::time::{timeout, Duration};
use tracing::{debug, info, warn};

use super::claim::Succession;
use super::tenure::{records_lease_ttl, HostLock};
use super::Agent;
use crate::store::{HolderRun, LockKey, Store, StoreError};

/// How long resigning the lock may take at exit: a standby takes over at
/// once if it comes through, or when the lease expires if not, so it is
/// kept short (within the 2 s some supervisors grant).
const HAND_OVER: Duration = Duration::from_millis(800);
/// How long `--deregister-on-exit` may take at exit: long enough for a slow
/// etcd (a leader election, a disk stall), since with `--ttl 0` records it
/// cannot remove stay; within the 10 s of `docker stop` and systemd's 90 s.
pub const DEREGISTER: Duration = Duration::from_secs(5);

impl<S: Store> Agent<S> {
    /// At exit: a holder hands the host over (resigns, so that a standby
    /// takes over at once and moves the records onto its lease without a
    /// delete; `resign_or_keep`), or with `--deregister-on-exit` removes
    /// its records; a standby withdraws its candidacy.
    pub(super) async fn hand_over(&mut self) {
        let lease = self.tenure.last_known_id();
        let never_listed = !self.wanted.is_listed();
        let Some(lock) = self.tenure.take_lock() else {
            // --once, --dry-run: no lease, no lock, nothing to hand over.
            return;
        };
        match lock {
            lock @ (HostLock::Held(_) | HostLock::Refused)
                if self.config.deregister_on_exit && never_listed =>
            {
                // What runs was never seen: deleting could take live
                // containers' records (docs/host-lock.md: a run never deletes what it
                // cannot see).
                warn!(
                    records_left = self.etcd_view.len(),
                    "not deregistering: the engine was never listed; the records stay, on the lease if they have one"
                );
                if let HostLock::Held(key) = lock {
                    self.resign_or_keep(key).await;
                }
            }
            lock @ (HostLock::Held(_) | HostLock::Refused) if self.config.deregister_on_exit => {
                let deregistered =
                    timeout(DEREGISTER, self.store.deregister(lease, lock.fence())).await;
                let error = match deregistered {
                    Ok(Ok(())) => {
                        info!(prefix = self.config.host.as_str(), "deregistered this host");
                        return;
                    }
                    Ok(Err(StoreError::LockLost)) => {
                        // Another agent holds the host now: its records are
                        // not ours to remove.
                        warn!(
                            lock = self.store.lock_name(),
                            "not deregistering: the host lock is no longer ours"
                        );
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no answer within {DEREGISTER:?}"),
                };
                let left = self.etcd_view.len();
                match records_lease_ttl(&self.config) {
                    Some(ttl) => warn!(
                        error, records_left = left, expire_in_secs = ttl.as_secs(),
                        "could not deregister; the records left expire with the lease"
                    ),
                    None => warn!(
                        error, records_left = left, prefix = self.config.host.as_str(),
                        "could not deregister; with --ttl 0 the records left stay until removed by hand"
                    ),
                }
            }
            HostLock::Held(key) => self.resign_or_keep(key).await,
            // Records ride on the lease; they stay until it expires.
            HostLock::Refused => {}
            // The host was taken from us while our lease lives (a new run
            // took over), or we may have lost it (no keep-alive answered):
            // records may still ride on the lease we held it on until the
            // next holder has moved them onto its own, so it is left to
            // expire; only our candidacy goes, so that nobody waits behind it.
            HostLock::Free | HostLock::Waiting(_)
                if self.succession == Succession::StandsBy
                    || (lease.is_some() && lease == self.held_on) =>
            {
                if let Some(lease) = lease {
                    within_budget("withdraw our candidacy", self.store.withdraw(lease)).await;
                }
            }
            HostLock::Free | HostLock::Waiting(_) | HostLock::Conflict => {
                // This lease never held the lock, so it carries no record,
                // only our candidacy, if any.
                if let Some(lease) = lease {
                    within_budget("revoke the standby's lease", self.store.revoke_lease(lease))
                        .await;
                }
            }
        }
    }

    /// A holder at exit: resigns if a live standby waits, so that it takes over
    /// at once; else keeps its lock key on the lease, so that our next run
    /// on this machine sees it gone and takes over at once, keeping the
    /// records alive even if the engine does not answer it yet (docs/host-lock.md: One
    /// agent per host). Resigning for nobody would leave that run to find
    /// no holder and wait for the engine before it writes anything.
    async fn resign_or_keep(&mut self, key: LockKey) {
        let resign = async {
            // Only a live candidate takes over: one that is gone (a standby
            // killed, its key waiting for its lease) would hold the host
            // with nobody behind it.
            let next = self.store.next_in_line(key.lease).await?;
            if next.is_none_or(|next| self.store.holder_run(&next) == HolderRun::Gone) {
                return Ok(false);
            }
            self.store.resign(key).await.map(|()| true)
        };
        match timeout(HAND_OVER, resign).await {
            Ok(Ok(true)) => info!("handed the host over to a standby"),
            Ok(Ok(false)) => info!(
                lock = self.store.lock_name(),
                "no standby waits; keeping the host lock on the lease, for our next run to take over"
            ),
            Ok(Err(error)) => {
                warn!(error = %error, "could not hand over; a standby takes over when the lease expires")
            }
            Err(_) => warn!(
                budget_ms = HAND_OVER.as_millis() as u64,
                "handing over timed out; a standby takes over when the lease expires"
            ),
        }
    }
}

/// One request at exit, within [`HAND_OVER`]; a failure only costs a wait
/// for the lease to expire, so it is logged at debug.
async fn within_budget(what: &'static str, request: impl Future<Output = Result<(), StoreError>>) {
    match timeout(HAND_OVER, request).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!(error = %error, what, "could not finish at exit"),
        Err(_) => debug!(what, "timed out at exit"),
    }
}
