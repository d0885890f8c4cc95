//! Who holds the host, seen from a candidate (docs/host-lock.md: One agent per host):
//! the claim before a campaign (`claim::claim`, the pure rule), taking over
//! a previous run of ours, a standby watching the holder's process on this
//! machine, conflicts with another engine's agent, and which engine we
//! follow.

use tokio::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

use super::claim::{claim, Claim, EngineSeen};
use super::tenure::HostLock;
use super::Agent;
use crate::engine::EngineIdentity;
use crate::plan::LeaseId;
use crate::store::{Holder, HolderRun, Store, StoreError};

/// How often a standby looks whether the holder's process on this machine
/// still runs: a look at the process table, nothing asked of etcd.
const HOLDER_CHECK: Duration = Duration::from_secs(1);

/// How often an agent in conflict with another engine's looks at the
/// holder again: two reads, no write, so that it takes the host within this once the
/// other agent's key is gone (its lease expired, or it resigned).
const CONFLICT_CHECK: Duration = Duration::from_secs(10);

/// How many gone runs in line for the lock one claim takes over at most.
const TAKE_OVER_ROUNDS: u32 = 8;

/// Whom we told the operator about, so that a standby says it once per holder.
#[derive(Debug, Default)]
pub struct Announced {
    /// The holder we last reported standing by for.
    pub holder: Option<Holder>,
    /// When to look again whether that holder's process still runs: only
    /// while it runs on this machine, the one case a look can tell; or, in
    /// a conflict, whether the other engine's agent still holds.
    pub check_at: Option<Instant>,
    /// The other engine's agent we last reported a conflict with: said
    /// once, however often it is looked at again and however often it
    /// restarts.
    pub conflict: Option<Holder>,
}
impl<S: Store> Agent<S> {
    /// Before campaigning: who holds the host, and what that means for us
    /// (`claim`). A holder we wait for is said once; a previous run of ours
    /// is taken over at once; another engine's is a conflict.
    pub(super) async fn claim_host(
        &mut self,
        our_lease: LeaseId,
        engine: &EngineIdentity,
    ) -> Result<Claim, StoreError> {
        self.remove_gone_in_line(our_lease).await?;
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
            let decided = claim(
                holder.clone(),
                engine,
                &self.config.docker_host,
                run,
                self.succession,
            );
            // Behind a holder we took over, only a run that is gone too (a
            // standby of this machine that crashed with it) is taken over:
            // nobody then waits behind its key for its TTL. Another
            // engine's candidate there is a conflict all the same.
            let more = run == HolderRun::Gone && taken_over < TAKE_OVER_ROUNDS;
            if taken_over > 0 && !more && !matches!(decided, Claim::Conflict(_)) {
                break holder;
            }
            match decided {
                Claim::TakeOver(previous) => {
                    info!(
                        previous_hostname = previous.hostname,
                        previous_pid = previous.pid,
                        previous_lease = previous.lease,
                        gone = run == HolderRun::Gone,
                        lock = self.store.lock_name(),
                        "a previous run of this agent holds this host; taking over at once"
                    );
                    self.store
                        .take_over_for(&previous, our_lease, engine)
                        .await?;
                    self.announced.holder = None;
                    self.previous_leases.insert(previous.lease);
                    taken_over += 1;
                }
                Claim::Campaign => break holder,
                conflict @ Claim::Conflict(_) => {
                    if taken_over > 0 {
                        // Our candidate key went in with the take-over; an
                        // agent in conflict has no candidacy, so that
                        // nobody resigns the host to it.
                        self.store.withdraw(our_lease).await?;
                    }
                    return Ok(conflict);
                }
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

    /// Previous runs of ours (this machine, our `--docker-host`) that are
    /// gone but still wait in line behind the holder (a standby killed
    /// with its agent, a run crashed while another held): their keys are
    /// removed, so that when the holder hands over, it
    /// hands over to a live run instead of a key nobody will use until its
    /// lease expires. The holder itself is left to `claim`.
    async fn remove_gone_in_line(&mut self, our_lease: LeaseId) -> Result<(), StoreError> {
        let line = self.store.candidates().await?;
        let docker_host = &self.config.docker_host;
        let gone_runs: Vec<Holder> = line
            .into_iter()
            .skip(1)
            .filter(|candidate| {
                candidate.lease != our_lease
                    && !candidate.docker_host.is_empty()
                    && candidate.docker_host == *docker_host
                    && self.store.holder_run(candidate) == HolderRun::Gone
            })
            .collect();
        for gone in &gone_runs {
            info!(
                gone_hostname = gone.hostname,
                gone_pid = gone.pid,
                gone_lease = gone.lease,
                lock = self.store.lock_name(),
                "a run of this machine that is gone waits in line for this host; removing its candidacy"
            );
            // A key we may not remove only waits for its lease: no reason
            // to fail the claim (or to take a refusal for the lock's).
            match self.store.take_over(gone).await {
                Ok(()) => {
                    self.previous_leases.insert(gone.lease);
                }
                Err(error) => debug!(error = %error, "could not remove a gone run's candidacy"),
            }
        }
        Ok(())
    }

    /// Standing by for a holder on this machine: once its process has ended
    /// (a crash, `kill -9`, an exit that left its key for its next run), its
    /// key is removed, so that our campaign holds at once instead of after
    /// its lease's TTL.
    pub(super) async fn check_holder(&mut self) {
        self.announced.check_at = None;
        if matches!(self.tenure.lock(), Some(HostLock::Conflict)) {
            // Claimed again at the next turn's repair: a conflict again if
            // the other engine's agent still holds.
            self.tenure.set_lock(HostLock::Free);
            return;
        }
        let (Some(HostLock::Waiting(_)), Some(holder)) =
            (self.tenure.lock(), self.announced.holder.clone())
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
                if let Err(error) = self.store.take_over(&holder).await {
                    debug!(error = %error, "could not take over yet");
                    self.announced.check_at = retry;
                    return;
                }
                self.previous_leases.insert(holder.lease);
                // Whoever is next in line now (it may have resigned to
                // another standby): looked at the same way, unless it is us.
                let our_lease = self.tenure.held_id();
                match self.store.lock_holder().await {
                    Ok(next) => {
                        let next = next.filter(|h| Some(h.lease) != our_lease);
                        self.announced.check_at = next.as_ref().and(retry);
                        self.announced.holder = next;
                    }
                    Err(error) => {
                        debug!(error = %error, "could not look at the next holder yet");
                        self.announced.check_at = retry;
                    }
                }
            }
            HolderRun::Unknown => {}
        }
    }

    /// Another engine's agent holds the host: say so loudly, once, and
    /// never write (docs/host-lock.md: One agent per host).
    pub(super) fn conflict(&mut self, holder: Holder, engine: &EngineIdentity) {
        let holder_engine = holder
            .engine
            .as_ref()
            .map_or("unknown", EngineIdentity::as_str);
        self.tenure.set_lock(HostLock::Conflict);
        self.announced.check_at = Some(Instant::now() + CONFLICT_CHECK);
        // Said once per other agent (its engine and machine), not per run of
        // it: a restart of the other agent is the same conflict.
        let same = |said: &Holder| said.engine == holder.engine && said.hostname == holder.hostname;
        if self.announced.conflict.as_ref().is_some_and(same) {
            return;
        }
        // Another agent than the one reported: its series replaces the old.
        self.metrics.clear_host_conflict();
        self.metrics
            .set_host_conflict(engine.as_str(), holder_engine, &holder.hostname);
        error!(
            engine = %engine,
            holder_engine = %holder_engine,
            holder_hostname = holder.hostname,
            holder_pid = holder.pid,
            lock = self.store.lock_name(),
            "an agent following another engine holds this host: two engines claim one host IP; writing nothing (give each engine its own --host-ip)"
        );
        self.announced.conflict = Some(holder);
    }

    /// The holder is not another engine's agent (any more): a conflict
    /// we reported is over.
    pub(super) fn no_conflict(&mut self) {
        if self.announced.conflict.take().is_some() {
            self.metrics.clear_host_conflict();
            info!(
                lock = self.store.lock_name(),
                "the other engine's agent no longer holds this host; claiming it"
            );
        }
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
}
