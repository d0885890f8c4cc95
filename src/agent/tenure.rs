//! The agent's tenure in etcd: its lease and its hold on the host lock, as
//! explicit states.
//!
//! The lock always rides on the lease: losing the lease loses the lock, and
//! a new lease must win the lock again before anything is written. With
//! `--ttl N` the records ride on the same lease; with `--ttl 0` the lease
//! carries the lock alone and the records carry none.

use std::time::Duration;

use tokio::time::{timeout, Instant};

use tracing::{debug, error, info, warn};

use super::claim::{claim, Claim, EngineSeen, Succession};
use super::etcd_view::EtcdView;
use super::Agent;
use crate::config::Config;
use crate::engine::EngineIdentity;
use crate::plan::LeaseId;
use crate::store::{Campaign, Holder, HolderRun, KeptAlive, LockKey, Store, StoreError};

/// The TTL of a lease that carries only the host lock (`--ttl 0`): how long
/// a standby waits for a holder that died.
const LOCK_ONLY_TTL: Duration = Duration::from_secs(10);
/// How often a standby looks whether the holder's process on this machine
/// still runs: a look at the process table, nothing asked of etcd.
const HOLDER_CHECK: Duration = Duration::from_secs(1);

/// How many gone runs in line for the lock one claim takes over at most.
const TAKE_OVER_ROUNDS: u32 = 8;

/// How long resigning the lock may take at exit: a standby takes over at
/// once if it comes through, or when the lease expires if not, so it is
/// kept short (within the 2 s some supervisors grant).
const HAND_OVER: Duration = Duration::from_millis(800);
/// How long `--deregister-on-exit` may take at exit: long enough for a slow
/// etcd (a leader election, a disk stall), since with `--ttl 0` records it
/// cannot remove stay; within the 10 s of `docker stop` and systemd's 90 s.
pub const DEREGISTER: Duration = Duration::from_secs(5);

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

/// The lease and lock a run starts with.
pub fn initial_tenure(config: &Config) -> (Lease, HostLock) {
    if takes_lease(config) {
        (Lease::Missing, HostLock::Free)
    } else {
        (Lease::NotWanted, HostLock::NotWanted)
    }
}

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
    /// An agent of another engine holds this host: two engines claim one
    /// host IP. A conflict, never a hand-over (taking the host would delete
    /// the records of the other engine's live containers): this run writes
    /// nothing and campaigns no more, for as long as it runs.
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
    /// When to look again whether that holder's process still runs: only
    /// while it runs on this machine, the one case a look can tell.
    pub check_at: Option<Instant>,
}

impl<S: Store> Agent<S> {
    /// Re-opens the keep-alive of a lease that may have survived a broken
    /// stream (its records stay as they are), or grants a new one (and every
    /// record moves onto it in place, once the lock is ours again).
    pub(super) async fn resume_or_grant_lease(&mut self) -> Result<(), StoreError> {
        let keep_alive_period = (self.lease_ttl / 3).max(Duration::from_millis(500));
        if let Lease::Broken(id) = self.lease {
            match self.store.keep_alive(id, keep_alive_period).await {
                Ok(kept) => {
                    self.lease = Lease::Held(kept);
                    debug!(lease = id, "lease keep-alive resumed");
                    return Ok(());
                }
                Err(StoreError::LeaseNotFound) => self.lease_lost("etcd does not know the lease"),
                Err(error) => return Err(error),
            }
        }
        let id = self.store.grant_lease(self.lease_ttl).await?;
        self.lease = Lease::Held(self.store.keep_alive(id, keep_alive_period).await?);
        info!(
            lease = id,
            ttl_secs = self.lease_ttl.as_secs(),
            "lease granted"
        );
        self.etcd_view = EtcdView::Stale;
        Ok(())
    }

    /// Before campaigning: who holds the host, and what that means for us
    /// (`claim`). A holder we wait for is said once; a previous run of ours
    /// is taken over at once; another engine's is a conflict.
    pub(super) async fn claim_host(
        &mut self,
        our_lease: LeaseId,
        engine: &EngineIdentity,
    ) -> Result<Claim, StoreError> {
        let mut taken_over = 0;
        let holder = loop {
            let holder = self
                .store
                .lock_holder()
                .await?
                .filter(|h| h.lease != our_lease);
            let run = holder
                .as_ref()
                .map_or(HolderRun::Unknown, |h| self.store.holder_run(h));
            // Behind a holder we took over, only a run that is gone too (a
            // standby of this machine that crashed with it) is taken over:
            // nobody then waits behind its key for its TTL.
            if taken_over > 0 && (run != HolderRun::Gone || taken_over == TAKE_OVER_ROUNDS) {
                break holder;
            }
            match claim(holder.clone(), engine, run, self.succession) {
                Claim::TakeOver(previous) => {
                    info!(
                        previous_hostname = previous.hostname,
                        previous_pid = previous.pid,
                        previous_lease = previous.lease,
                        gone = run == HolderRun::Gone,
                        lock = self.store.lock_name(),
                        "a previous run of this agent holds this host; taking over at once"
                    );
                    self.store.take_over(&previous).await?;
                    self.announced.holder = None;
                    if taken_over == 0 {
                        self.previous_lease = Some(previous.lease);
                    }
                    taken_over += 1;
                }
                Claim::Campaign => break holder,
                conflict @ Claim::Conflict(_) => return Ok(conflict),
            }
        };
        if let Some(holder) = &holder {
            if self.announced.holder.as_ref() != Some(holder) {
                warn!(
                    holder_hostname = holder.hostname,
                    holder_pid = holder.pid,
                    holder_lease = holder.lease,
                    lock = self.store.lock_name(),
                    "another agent holds this host; standing by until it goes"
                );
            }
        }
        self.announced.check_at = holder
            .as_ref()
            .filter(|h| self.store.holder_run(h) == HolderRun::AliveHere)
            .map(|_| Instant::now() + HOLDER_CHECK);
        self.announced.holder = holder;
        Ok(Claim::Campaign)
    }

    /// Standing by for a holder on this machine: once its process has ended
    /// (a crash, `kill -9`, an exit that left its key for its next run), its
    /// key is removed, so that our campaign holds at once instead of after
    /// its lease's TTL.
    pub(super) async fn check_holder(&mut self) {
        self.announced.check_at = None;
        let (HostLock::Waiting(_), Some(holder)) = (&self.lock, self.announced.holder.clone())
        else {
            return;
        };
        let retry = Some(Instant::now() + HOLDER_CHECK);
        match self.store.holder_run(&holder) {
            HolderRun::AliveHere => self.announced.check_at = retry,
            HolderRun::Gone => {
                info!(
                    holder_hostname = holder.hostname,
                    holder_pid = holder.pid,
                    holder_lease = holder.lease,
                    lock = self.store.lock_name(),
                    "the holder's process on this machine has ended; taking over at once"
                );
                match self.store.take_over(&holder).await {
                    Ok(()) => self.announced.holder = None,
                    Err(error) => {
                        debug!(error = %error, "could not take over yet");
                        self.announced.check_at = retry;
                    }
                }
            }
            HolderRun::Unknown => {}
        }
    }

    /// Another engine's agent holds the host: say so loudly, once, and
    /// never write (README: One agent per host).
    pub(super) fn conflict(&mut self, holder: Holder, engine: &EngineIdentity) {
        let holder_engine = holder
            .engine
            .as_ref()
            .map_or("unknown", EngineIdentity::as_str);
        error!(
            engine = %engine,
            holder_engine = %holder_engine,
            holder_hostname = holder.hostname,
            holder_pid = holder.pid,
            lock = self.store.lock_name(),
            "an agent following another engine holds this host: two engines claim one host IP; writing nothing (give each engine its own --host-ip, then restart this agent)"
        );
        self.metrics
            .set_host_conflict(engine.as_str(), holder_engine, &holder.hostname);
        self.lock = HostLock::Conflict;
    }

    /// At a resync: look at the holder again; a conflict that is still there
    /// is said again only if its holder changed.
    pub(super) fn conflict_ended(&mut self) {
        self.metrics.clear_host_conflict();
        self.lock = HostLock::Free;
    }

    /// The engine answered: which one it is, for our lock key.
    pub(super) fn engine_connected(&mut self, identity: EngineIdentity) {
        match self.engine.identity() {
            Some(known) if *known == identity => {}
            Some(known) => warn!(
                previous = %known,
                now = %identity,
                "the engine at --docker-host is another one than before"
            ),
            // A campaign held back for it can start now.
            None => self.retry.clear(),
        }
        self.engine = EngineSeen::Answered(identity);
    }

    /// The engine has not answered: if the host's holder is a previous run
    /// of ours on this machine that is gone and followed the same
    /// `--docker-host`, its engine is ours (the same agent, restarted while
    /// its engine is away), so that we take the host over and keep the
    /// records on its lease alive until the engine answers. Looked at
    /// afresh each time the lock is free, so that an assumption outlives
    /// neither the holder that justified it nor a lost campaign.
    pub(super) async fn assume_previous_engine(
        &mut self,
    ) -> Result<Option<EngineIdentity>, StoreError> {
        let holder = self.store.lock_holder().await?;
        let previous = holder.filter(|h| {
            !h.docker_host.is_empty()
                && h.docker_host == self.config.docker_host
                && self.store.holder_run(h) == HolderRun::Gone
        });
        self.engine = match previous {
            Some(Holder {
                engine: Some(engine),
                lease,
                ..
            }) => {
                info!(
                    engine = %engine,
                    previous_lease = lease,
                    "the engine does not answer yet; taking the host over from our previous run, which followed it"
                );
                EngineSeen::Assumed(engine)
            }
            _ => EngineSeen::NotYet,
        };
        Ok(self.engine.identity().cloned())
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
                self.lock = HostLock::Held(key);
                self.announced.holder = None;
                // Whatever the previous holder left is re-read and moved
                // onto our lease in place.
                self.etcd_view = EtcdView::Stale;
            }
            Ok(None) => self.lock = HostLock::Free,
            Err(error) if error.is_permission_denied() => self.lock_refused(&error),
            Err(error) => {
                self.lock = HostLock::Free;
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
            "etcd refuses this agent the host lock; writing without it (grant the role readwrite on the lock's prefix, see the README)"
        );
        self.lock = HostLock::Refused;
        self.etcd_view = EtcdView::Stale;
    }

    /// At exit: a holder hands the host over (resigns, so that a standby
    /// takes over at once and moves the records onto its lease without a
    /// delete; `resign_or_keep`), or with `--deregister-on-exit` removes its records; a
    /// standby withdraws its candidacy.
    pub(super) async fn hand_over(&mut self) {
        let lease = self.lease.last_known_id();
        match std::mem::replace(&mut self.lock, HostLock::Free) {
            HostLock::Held(_) | HostLock::Refused
                if self.config.deregister_on_exit && !self.wanted.is_listed() =>
            {
                // What runs was never seen: deleting could take live
                // containers' records (README: a run never deletes what it
                // cannot see).
                warn!(
                    records_left = self.etcd_view.len(),
                    "not deregistering: the engine was never listed; the records expire with the lease"
                );
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
            HostLock::Refused | HostLock::NotWanted => {}
            // The host was taken from us while our lease lives (a new run
            // took over): records may still ride on it until the new holder
            // has moved them onto its own, so it is left to expire; only our
            // candidacy goes, so that nobody waits behind it.
            HostLock::Free | HostLock::Waiting(_) if self.succession == Succession::StandsBy => {
                if let Some(lease) = lease {
                    match timeout(HAND_OVER, self.store.withdraw(lease)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            debug!(error = %error, "could not withdraw our candidacy")
                        }
                        Err(_) => debug!("withdrawing our candidacy timed out"),
                    }
                }
            }
            HostLock::Free | HostLock::Waiting(_) | HostLock::Conflict => {
                // This lease never held the lock, so it carries no record,
                // only our candidacy, if any.
                if let Some(lease) = lease {
                    match timeout(HAND_OVER, self.store.revoke_lease(lease)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            debug!(error = %error, "could not revoke the standby's lease")
                        }
                        Err(_) => debug!("revoking the standby's lease timed out"),
                    }
                }
            }
        }
    }

    /// A holder at exit: resigns if a standby waits, so that it takes over
    /// at once; else keeps its lock key on the lease, so that our next run
    /// on this machine sees it gone and takes over at once, keeping the
    /// records alive even if the engine does not answer it yet (README: One
    /// agent per host). Resigning for nobody would leave that run to find
    /// no holder and wait for the engine before it writes anything.
    async fn resign_or_keep(&mut self, key: LockKey) {
        let resign = async {
            if self.store.candidate_count().await? <= 1 {
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

    /// The lease is gone and the lock and records on it with it: a new lease
    /// must win the lock and carry every record again.
    pub(super) fn lease_lost(&mut self, reason: &str) {
        if matches!(self.lease, Lease::NotWanted) {
            return;
        }
        if let Some(lease) = self.lease.last_known_id() {
            warn!(
                lease,
                reason, "etcd lease lost; taking the host again on a new one"
            );
        }
        self.lease = Lease::Missing;
        // A conflict lasts for the run; it never campaigned on this lease.
        if !matches!(self.lock, HostLock::Conflict) {
            self.lock = HostLock::Free;
        }
        self.etcd_view = EtcdView::Stale;
    }

    /// No keep-alive answered for the lease's TTL: etcd may have let it
    /// expire, and another agent may hold the host now. Write nothing until
    /// the lock is ours again; the lease itself is resumed if it is still
    /// alive (etcd may only have been slow to answer), so that our records
    /// stay on it, and our own lock key, if it is still there, holds again.
    pub(super) fn lease_unanswered(&mut self) {
        if let Some(id) = self.lease.held_id() {
            warn!(
                lease = id,
                lock = self.store.lock_name(),
                "etcd answered no keep-alive for the lease's TTL; the host lock may be gone, writing nothing until it is ours again"
            );
            self.lease = Lease::Broken(id);
        }
        if !matches!(self.lock, HostLock::Conflict) {
            self.lock = HostLock::Free;
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
        self.lock = HostLock::Free;
        // Whoever holds it now, if it is a run of our engine, keeps it.
        self.succession = Succession::StandsBy;
        self.etcd_view = EtcdView::Stale;
        // Most likely the lease went with the key (revoked, expired) before
        // its keep-alive could tell: check it at once, resuming it if it is
        // alive, instead of campaigning on a dead lease.
        if let Some(id) = self.lease.held_id() {
            self.lease = Lease::Broken(id);
        }
    }

    /// Which lease a record must ride on to count as right: ours, or, when
    /// this run holds none (`--once`, `--dry-run`), any.
    pub(super) fn lease_policy(&self) -> Option<LeaseId> {
        match self.lease {
            Lease::NotWanted => None,
            _ => Some(self.records_lease()),
        }
    }

    /// The lease our records ride on: ours with `--ttl` > 0, else none (`0`).
    pub(super) fn records_lease(&self) -> LeaseId {
        if self.config.lease_ttl.is_some() {
            self.lease.held_id().unwrap_or(0)
        } else {
            0
        }
    }
}
