//! The agent: one loop that owns all state and keeps etcd equal to Docker.
//!
//! Level-triggered like a controller: observations of the engine (from the
//! [`Watcher`] task) and timers only say *when* to look; what to write always
//! comes from comparing the desired records with the observed ones (read from
//! etcd) in [`plan`]. Anything that fails marks its side out of sync, and the
//! loop repairs it with a capped, jittered backoff, so a missed event, a
//! failed write or a lost lease is healed by the next full reconcile.
//!
//! The loop never waits for the Docker engine: the watcher does. It writes
//! only while it holds its host's lock ([`tenure`]).

mod tenure;

use std::collections::{BTreeMap, BTreeSet};
use std::future::{pending, Future};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::time::{interval_at, sleep_until, Instant, Interval, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::container::Withheld;
use crate::docker::Docker;
use crate::engine::Engine;
use crate::etcd::Etcd;
use crate::metrics::{self, Metrics};
use crate::plan::{self, LeaseId, Observed, Operation};
use crate::record::{self, container_id_of, Desired, Record};
use crate::store::{Change, LeaseEnd, LockKey, PrefixChanges, Store, StoreError};
use crate::supervise::{Health, RepairBudget, Retry};
use crate::watcher::{Observation, Watcher};
use tenure::{Announced, HostLock, Lease, LOCK_ONLY_TTL};

/// Observations taken off the watcher in one go when they arrive in a burst.
const MAX_OBSERVATION_BATCH: usize = 1024;
/// After SIGTERM, how long the work in flight may take to finish, and then
/// how long handing over (resigning the lock, or deregistering) may take:
/// together well within the 2 s an orchestrator grants before it kills.
const FINISH_IN_FLIGHT: Duration = Duration::from_millis(1000);
const HAND_OVER: Duration = Duration::from_millis(800);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by a signal.
    Stopped,
    /// `--once`: our prefix is exact.
    Exact,
    /// `--once`: our prefix is not exact (or Docker or etcd failed).
    NotExact,
}

/// Runs the agent until `shutdown` completes (or, with `--once`, for one
/// reconcile). Only configuration problems make it return an error;
/// everything else is retried. `metrics_listener` serves `--metrics-addr`.
pub async fn run(
    config: Config,
    metrics_listener: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    info!(
        endpoints = ?config.etcd_endpoints,
        host_ip = %config.host.host_ip(),
        prefix = config.host.as_str(),
        ttl_secs = records_lease_ttl(&config).map_or(0, |ttl| ttl.as_secs()),
        resync_secs = config.resync.map_or(0, |resync| resync.as_secs()),
        docker_host = config.docker_host,
        etcd_tls = config.etcd_security.ca_pem.is_some(),
        etcd_user = config.etcd_security.credentials.as_ref().map(|c| c.user.as_str()),
        once = config.once,
        dry_run = config.dry_run,
        "starting"
    );
    let metrics = Metrics::new();
    if let Some(listener) = metrics_listener {
        listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map(|listener| tokio::spawn(metrics::serve(listener, Arc::clone(&metrics))))
            .context("--metrics-addr (env REGISTER_METRICS_ADDR)")?;
    }
    let docker = Docker::new(&config.docker_host).context("--docker-host (env DOCKER_HOST)")?;
    let etcd = Etcd::new(
        &config.etcd_endpoints,
        config.etcd_security.clone(),
        config.host.clone(),
    );
    Ok(run_with(config, docker, etcd, metrics, None, shutdown).await)
}

/// Runs the agent on any engine and store (the seams `engine::Engine` and
/// `store::Store`) until `shutdown` completes, or for one reconcile with
/// `--once`; [`run`] hands it the Docker and etcd adapters. `jitter_seed`
/// makes the retry delays reproducible (`None`: random).
pub async fn run_with<E: Engine, S: Store>(
    config: Config,
    engine: E,
    store: S,
    metrics: Arc<Metrics>,
    jitter_seed: Option<u64>,
    shutdown: impl Future<Output = ()>,
) -> Outcome {
    let watcher = Watcher::spawn(
        engine,
        config.selection.require_healthy,
        Arc::clone(&metrics),
        jitter_seed,
    );
    let mut agent = Agent::new(config, watcher, store, metrics, jitter_seed);
    if agent.config.once {
        return tokio::select! {
            exact = agent.reconcile_once() => if exact { Outcome::Exact } else { Outcome::NotExact },
            () = shutdown => Outcome::Stopped,
        };
    }
    let (stop, stopped) = watch::channel(false);
    {
        let work = agent.run(stopped);
        tokio::pin!(work, shutdown);
        tokio::select! {
            () = &mut work => {}
            () = &mut shutdown => {
                info!("shutting down");
                let _ = stop.send(true);
                if tokio::time::timeout(FINISH_IN_FLIGHT, &mut work).await.is_err() {
                    warn!("work in flight abandoned at shutdown");
                }
            }
        }
    }
    if tokio::time::timeout(HAND_OVER, agent.hand_over())
        .await
        .is_err()
    {
        warn!("handing over timed out; the records and the lock expire with the lease");
    }
    Outcome::Stopped
}

/// What woke the loop up.
enum Wake {
    Observed(Vec<Observation>),
    Resync,
    LeaseEnded(LeaseEnd),
    Campaigned(Result<Option<LockKey>, StoreError>),
    Watched(Result<Vec<Change>, StoreError>),
    RetryDue,
    Shutdown,
}

struct Agent<S: Store> {
    config: Config,
    /// The TTL of the lease we hold: the records' (`--ttl`), or, with
    /// `--ttl 0`, that of a lease carrying the lock alone.
    lease_ttl: Duration,
    metrics: Arc<Metrics>,
    /// Follows the engine; the only source of what runs.
    watcher: Watcher,
    /// etcd, confined to our host's prefix.
    store: S,
    /// The record each qualifying container should have, by container id.
    desired: BTreeMap<String, Record>,
    /// Containers held back only by their health (`--require-healthy`).
    withheld: BTreeMap<String, Withheld>,
    /// Our host's records in etcd, as last read or written by us.
    observed: BTreeMap<String, Observed>,
    /// Docker has been listed at least once: `desired` means something.
    listed_once: bool,
    lease: Lease,
    lock: HostLock,
    /// The holder a standby last reported, so that it says so once.
    announced: Announced,
    /// `None`: the watch on our prefix must be re-created.
    watch: Option<S::Watch>,
    /// Revisions of our own writes not yet seen in the watch.
    own_revisions: BTreeSet<i64>,
    /// The revision of our last full read of the prefix: a change the watch
    /// reports at or before it was already in that read.
    read_revision: i64,
    /// `false`: `observed` may be wrong; re-read etcd and reconcile.
    etcd_in_sync: bool,
    resync: Option<Interval>,
    /// When to repair again after a failure or a foreign change.
    retry: Retry,
    /// Keeps the repair of foreign changes from becoming a write storm.
    repairs: RepairBudget,
    docker_health: Health,
    etcd_health: Health,
    /// The first full reconcile is done (`agent ready` was logged).
    ready: bool,
}

impl<S: Store> Agent<S> {
    fn new(
        config: Config,
        watcher: Watcher,
        store: S,
        metrics: Arc<Metrics>,
        jitter_seed: Option<u64>,
    ) -> Self {
        let resync = config.resync.map(periodic);
        let writes_nothing_lasting = config.once || config.dry_run;
        let (lease, lock) = if writes_nothing_lasting {
            (Lease::NotWanted, HostLock::NotWanted)
        } else {
            (Lease::Missing, HostLock::Free)
        };
        Self {
            lease_ttl: config.lease_ttl.unwrap_or(LOCK_ONLY_TTL),
            docker_health: Health::new("docker", Arc::clone(&metrics)),
            etcd_health: Health::new("etcd", Arc::clone(&metrics)),
            metrics,
            config,
            watcher,
            store,
            desired: BTreeMap::new(),
            withheld: BTreeMap::new(),
            observed: BTreeMap::new(),
            listed_once: false,
            lease,
            lock,
            announced: Announced::default(),
            watch: None,
            own_revisions: BTreeSet::new(),
            read_revision: 0,
            etcd_in_sync: false,
            resync,
            retry: Retry::new(jitter_seed),
            repairs: RepairBudget::default(),
            ready: false,
        }
    }

    /// The loop; returns once `stopped` turns true, between two steps.
    async fn run(&mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            if self.needs_repair() && !self.retry.is_scheduled() {
                self.repair().await;
            }
            match self.wake(&mut stopped).await {
                Wake::Shutdown => return,
                Wake::Observed(observations) => self.observe_engine(observations).await,
                Wake::Resync => {
                    debug!("periodic resync");
                    self.watcher.relist();
                    self.etcd_in_sync = false;
                    if matches!(self.lock, HostLock::Refused) {
                        self.lock = HostLock::Free; // maybe granted meanwhile
                    }
                }
                Wake::LeaseEnded(LeaseEnd::Expired) => {
                    self.lease_lost("etcd answered that the lease is gone")
                }
                Wake::LeaseEnded(LeaseEnd::Broken(error)) => {
                    if let Some(id) = self.lease.held_id() {
                        self.lease = Lease::Broken(id);
                    }
                    self.etcd_failed(error);
                }
                Wake::Campaigned(result) => self.campaigned(result),
                Wake::Watched(Ok(changes)) => self.notice_changes(&changes),
                Wake::Watched(Err(error)) => {
                    self.watch = None;
                    self.etcd_failed(error);
                }
                Wake::RetryDue => self.retry.clear(),
            }
        }
    }

    /// Whether etcd needs work before the loop can wait: a lease, a
    /// campaign, or (while we may write) a reconcile.
    fn needs_repair(&self) -> bool {
        self.lease.needs_work()
            || matches!(self.lock, HostLock::Free)
            || (self.may_write() && (!self.etcd_in_sync || self.watch.is_none()))
    }

    /// Docker was listed, and we hold the host (or need not).
    fn may_write(&self) -> bool {
        self.listed_once
            && self.lock.permits_writes()
            && matches!(self.lease, Lease::Held(_) | Lease::NotWanted)
    }

    /// Waits for the next thing to do; all of the agent's waiting is here.
    async fn wake(&mut self, stopped: &mut watch::Receiver<bool>) -> Wake {
        if *stopped.borrow() {
            return Wake::Shutdown;
        }
        let observed = next_observations(&mut self.watcher);
        let lease_ended = async {
            match &mut self.lease {
                Lease::Held(kept) => kept.ended().await,
                _ => pending().await,
            }
        };
        let campaigned = async {
            match &mut self.lock {
                HostLock::Waiting(campaign) => campaign.await,
                _ => pending().await,
            }
        };
        let watched = async {
            match &mut self.watch {
                Some(watch) => watch.next_changes().await,
                None => pending().await,
            }
        };
        let retry_at = self.retry.at();
        // In a fixed order, so that a run is reproducible (the simulator
        // replays it from a seed): the rare wake-ups first, so that a flood
        // of observations never holds them back.
        tokio::select! {
            biased;
            _ = stopped.changed() => Wake::Shutdown,
            end = lease_ended => Wake::LeaseEnded(end),
            result = campaigned => Wake::Campaigned(result),
            changes = watched => Wake::Watched(changes),
            observations = observed => Wake::Observed(observations),
            _ = tick(&mut self.resync) => Wake::Resync,
            () = sleep_until_or_never(retry_at) => Wake::RetryDue,
        }
    }

    /// Brings etcd back in line: the lease, the lock, then our prefix. On
    /// failure, schedules the next attempt.
    async fn repair(&mut self) {
        let started = Instant::now();
        match self.repair_etcd().await {
            Ok(()) => self.etcd_health.recovered(),
            Err(error) => {
                self.etcd_failed(error);
                self.metrics.reconcile_failed();
                self.retry.schedule();
                return;
            }
        }
        self.retry.reset();
        if self.may_write() && self.etcd_in_sync {
            self.metrics.reconciled(started.elapsed());
            if !self.ready {
                self.ready = true;
                info!(records = self.desired.len(), "agent ready");
            }
        }
    }

    async fn repair_etcd(&mut self) -> Result<(), StoreError> {
        if self.lease.needs_work() {
            self.resume_or_grant_lease().await?;
        }
        if let (HostLock::Free, Some(lease)) = (&self.lock, self.lease.held_id()) {
            match self.announce_holder(lease).await {
                Ok(()) => self.lock = HostLock::Waiting(self.store.campaign(lease).await?),
                Err(error) if error.is_permission_denied() => self.lock_refused(&error),
                Err(error) => return Err(error),
            }
        }
        if self.may_write() && (!self.etcd_in_sync || self.watch.is_none()) {
            self.sync_etcd().await?;
        }
        Ok(())
    }

    /// Makes our prefix equal to the desired records, from a fresh read.
    async fn sync_etcd(&mut self) -> Result<(), StoreError> {
        let snapshot = self.store.observe().await?;
        if self.watch.is_none() {
            self.watch = Some(self.store.watch(snapshot.revision + 1).await?);
            self.own_revisions.clear();
        }
        self.observed = snapshot.records;
        self.read_revision = snapshot.revision;
        self.metrics.set_records(self.observed.len());
        let desired = self.desired_by_key();
        let operations = plan::plan(&desired, &self.observed, self.lease_policy());
        self.apply(&operations).await?;
        self.etcd_in_sync = true;
        Ok(())
    }

    /// Re-opens the keep-alive of a lease that may have survived a broken
    /// stream (its records stay as they are), or grants a new one (and every
    /// record moves onto it in place, once the lock is ours again).
    async fn resume_or_grant_lease(&mut self) -> Result<(), StoreError> {
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
        self.etcd_in_sync = false;
        Ok(())
    }

    /// Before campaigning: if another agent holds the host, say so once.
    async fn announce_holder(&mut self, our_lease: LeaseId) -> Result<(), StoreError> {
        let holder = self
            .store
            .lock_holder()
            .await?
            .filter(|h| h.lease != our_lease);
        let standby = holder.is_some();
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
        self.announced.holder = holder;
        self.metrics.set_host_lock(false, standby);
        Ok(())
    }

    /// A campaign ended: the lock is ours, or we campaign again.
    fn campaigned(&mut self, result: Result<Option<LockKey>, StoreError>) {
        match result {
            Ok(Some(key)) => {
                info!(
                    lease = key.lease,
                    lock = self.store.lock_name(),
                    "holding this host"
                );
                self.lock = HostLock::Held(key);
                self.announced.holder = None;
                self.metrics.set_host_lock(true, false);
                // Whatever the previous holder left is re-read and moved
                // onto our lease in place.
                self.etcd_in_sync = false;
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
    fn lock_refused(&mut self, error: &StoreError) {
        warn!(
            lock = self.store.lock_name(),
            error = %error,
            "etcd refuses this agent the host lock; writing without it (grant the role readwrite on the lock's prefix, see the README)"
        );
        self.lock = HostLock::Refused;
        self.metrics.set_host_lock(false, false);
        self.etcd_in_sync = false;
    }

    /// Applies what the watcher saw: a listing replaces the desired records
    /// (but for containers it could not inspect), a change replaces one
    /// container's; the changes go to etcd in one transaction.
    async fn observe_engine(&mut self, observations: Vec<Observation>) {
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut relisted = false;
        for observation in observations {
            match observation {
                Observation::Listed {
                    containers,
                    unknown,
                } => {
                    let mut desired = BTreeMap::new();
                    let mut withheld = BTreeMap::new();
                    for container in &containers {
                        let wanted = self.desired_for(container);
                        remember(&mut desired, &mut withheld, &container.id, wanted);
                    }
                    for id in &unknown {
                        if let Some(record) = self.desired.remove(id) {
                            desired.insert(id.clone(), record);
                        }
                        if let Some(reason) = self.withheld.remove(id) {
                            withheld.insert(id.clone(), reason);
                        }
                    }
                    self.desired = desired;
                    self.withheld = withheld;
                    self.listed_once = true;
                    relisted = true;
                    self.docker_health.recovered();
                }
                Observation::Changed { id, container } => {
                    let wanted = container.map_or(Desired::Nothing, |c| self.desired_for(&c));
                    remember(&mut self.desired, &mut self.withheld, &id, wanted);
                    touched.insert(id);
                }
                Observation::InspectFailed { id, error } => {
                    warn!(container_id = id, error = %error, "cannot inspect container; keeping its record as it is and trying again");
                }
                Observation::EngineDown(error) => self.docker_health.failed(&error),
            }
        }
        self.metrics.set_withheld(self.withheld.values());
        if !self.may_write() || !self.etcd_in_sync {
            return; // the next repair reconciles everything
        }
        let (desired, observed) = if relisted {
            (self.desired_by_key(), self.observed.clone())
        } else {
            self.desired_and_observed_of(&touched)
        };
        let operations = plan::plan(&desired, &observed, self.lease_policy());
        if let Err(error) = self.apply(&operations).await {
            self.etcd_failed(error);
        }
    }

    /// The desired and observed records of just these containers.
    fn desired_and_observed_of(
        &self,
        ids: &BTreeSet<String>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, Observed>) {
        let desired = ids
            .iter()
            .filter_map(|id| self.desired.get(id))
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let observed = self
            .observed
            .iter()
            .filter(|(key, _)| ids.contains(container_id_of(key)))
            .map(|(key, observed)| (key.clone(), observed.clone()))
            .collect();
        (desired, observed)
    }

    /// Watch events: our own writes are expected; anything else under our
    /// prefix (a foreign delete or overwrite, an expired lease) means etcd
    /// no longer holds what we believe, so reconcile, at once unless someone
    /// keeps changing it.
    fn notice_changes(&mut self, changes: &[Change]) {
        // A change the last read already saw (the watch lags behind it, say
        // after a burst delivered in fragments) needs no repair.
        let foreign: Vec<&Change> = changes
            .iter()
            .filter(|change| change.revision > self.read_revision)
            .filter(|change| !self.own_revisions.contains(&change.revision))
            .collect();
        // The watch reports revisions in order: older ones of ours are past.
        if let Some(latest) = changes.iter().map(|c| c.revision).max() {
            self.own_revisions = self.own_revisions.split_off(&latest);
        }
        let Some(last) = foreign.last() else {
            return;
        };
        for change in &foreign {
            debug!(
                key = change.key,
                revision = change.revision,
                deleted = change.deleted,
                "foreign change"
            );
        }
        let already_due = !self.etcd_in_sync || self.retry.is_scheduled();
        self.etcd_in_sync = false;
        if already_due {
            return; // a repair is already on its way; it covers this too
        }
        let delay = self.repairs.next_repair(Instant::now());
        if delay.is_zero() {
            info!(
                key = last.key,
                revision = last.revision,
                deleted = last.deleted,
                "record changed by someone else; reconciling"
            );
        } else {
            warn!(
                key = last.key,
                delay_ms = delay.as_millis() as u64,
                "a record here keeps being changed by someone else; repairing with backoff"
            );
            self.retry.defer_until(Instant::now() + delay);
        }
    }

    /// `--once`: one listing, one reconcile, then check that etcd holds
    /// exactly the desired records. Changes nothing while another agent
    /// holds the host.
    async fn reconcile_once(&mut self) -> bool {
        loop {
            match self.watcher.next().await {
                Observation::EngineDown(error) => {
                    error!(dependency = "docker", error = %error, "reconcile failed");
                    return false;
                }
                observation @ Observation::Listed { .. } => {
                    self.observe_engine(vec![observation]).await;
                    break;
                }
                _ => {}
            }
        }
        // A dry run changes nothing, so it may check beside a daemon agent.
        let holder = if self.config.dry_run {
            Ok(None)
        } else {
            self.store.lock_holder().await
        };
        match holder {
            Ok(Some(holder)) => {
                error!(
                    holder_hostname = holder.hostname,
                    holder_pid = holder.pid,
                    holder_lease = holder.lease,
                    "another agent holds this host; --once changes nothing"
                );
                return false;
            }
            Ok(None) => {}
            Err(error) => {
                error!(dependency = "etcd", error = %error, "reconcile failed");
                return false;
            }
        }
        if let Err(error) = self.sync_etcd().await {
            error!(dependency = "etcd", error = %error, "reconcile failed");
            return false;
        }
        let desired = self.desired_by_key();
        match self.store.observe().await {
            Ok(snapshot) => {
                let remaining = plan::plan(&desired, &snapshot.records, None);
                for operation in &remaining {
                    warn!(key = operation.key(), "not exact");
                }
                remaining.is_empty()
            }
            Err(error) => {
                warn!(error = %error, "cannot verify the reconcile");
                false
            }
        }
    }

    fn desired_by_key(&self) -> BTreeMap<String, String> {
        self.desired
            .values()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect()
    }

    /// At exit: a holder hands the host over (resigns, so that a standby
    /// takes over at once and moves the records onto its lease without a
    /// delete), or with `--deregister-on-exit` removes its records; a
    /// standby withdraws its candidacy.
    async fn hand_over(&mut self) {
        let lease = self.lease.last_known_id();
        match std::mem::replace(&mut self.lock, HostLock::Free) {
            HostLock::Held(_) | HostLock::Refused if self.config.deregister_on_exit => {
                match self.store.deregister(lease).await {
                    Ok(()) => info!(prefix = self.config.host.as_str(), "deregistered this host"),
                    Err(error) => {
                        warn!(error = %error, "could not deregister; records expire with the lease")
                    }
                }
            }
            HostLock::Held(key) => {
                if let Err(error) = self.store.resign(key).await {
                    warn!(error = %error, "could not hand over; a standby takes over when the lease expires");
                }
            }
            // Records ride on the lease; they stay until it expires.
            HostLock::Refused | HostLock::NotWanted => {}
            HostLock::Free | HostLock::Waiting(_) => {
                // This lease never held the lock, so it carries no record,
                // only our candidacy.
                if let Some(lease) = lease {
                    if let Err(error) = self.store.revoke_lease(lease).await {
                        debug!(error = %error, "could not revoke the standby's lease");
                    }
                }
            }
        }
    }

    fn desired_for(&self, container: &crate::container::Container) -> Desired {
        let desired = record::desired(container, &self.config.selection, &self.config.host);
        if let Desired::Withheld(reason) = desired {
            debug!(
                container_id = container.id,
                reason = reason.as_str(),
                "withheld until healthy"
            );
        }
        desired
    }

    async fn apply(&mut self, operations: &[Operation]) -> Result<(), StoreError> {
        if operations.is_empty() {
            return Ok(());
        }
        let lease = self.records_lease();
        if self.config.dry_run {
            for operation in operations {
                log_operation(operation, true);
            }
            // As if applied, so that each change is reported once.
            plan::record_applied(&mut self.observed, operations, lease);
            return Ok(());
        }
        let applied = self.store.apply(operations, lease).await?;
        plan::record_applied(&mut self.observed, &applied.done, lease);
        self.own_revisions.extend(applied.revisions);
        for operation in &applied.done {
            log_operation(operation, false);
            self.metrics.etcd_operation(match operation {
                Operation::Put { .. } => "put",
                Operation::Delete { .. } => "delete",
            });
        }
        self.metrics.set_records(self.observed.len());
        for (operation, reason) in &applied.rejected {
            self.metrics.etcd_error();
            let key = operation.key();
            error!(
                container_id = container_id_of(key),
                key,
                bytes = operation.payload_bytes(),
                error = %reason,
                "etcd refused this record as too large; the container stays unregistered until it changes"
            );
        }
        Ok(())
    }

    /// Any etcd failure: our picture of etcd can no longer be trusted.
    fn etcd_failed(&mut self, error: StoreError) {
        self.metrics.etcd_error();
        match error {
            StoreError::LeaseNotFound => self.lease_lost("etcd does not know the lease"),
            error => self.etcd_health.failed(&error),
        }
        self.etcd_in_sync = false;
    }

    /// The lease is gone and the lock and records on it with it: a new lease
    /// must win the lock and carry every record again.
    fn lease_lost(&mut self, reason: &str) {
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
        self.lock = HostLock::Free;
        self.metrics.set_host_lock(false, false);
        self.etcd_in_sync = false;
    }

    /// Which lease a record must ride on to count as right: ours, or, when
    /// this run holds none (`--once`, `--dry-run`), any.
    fn lease_policy(&self) -> Option<LeaseId> {
        match self.lease {
            Lease::NotWanted => None,
            _ => Some(self.records_lease()),
        }
    }

    /// The lease our records ride on: ours with `--ttl` > 0, else none (`0`).
    fn records_lease(&self) -> LeaseId {
        if self.config.lease_ttl.is_some() {
            self.lease.held_id().unwrap_or(0)
        } else {
            0
        }
    }
}

/// Files what is wanted for container `id`: its record, or why it is
/// withheld; whatever was filed for it before goes.
fn remember(
    desired: &mut BTreeMap<String, Record>,
    withheld: &mut BTreeMap<String, Withheld>,
    id: &str,
    wanted: Desired,
) {
    desired.remove(id);
    withheld.remove(id);
    match wanted {
        Desired::Registered(record) => {
            desired.insert(id.to_owned(), record);
        }
        Desired::Withheld(reason) => {
            withheld.insert(id.to_owned(), reason);
        }
        Desired::Nothing => {}
    }
}

/// The TTL of the lease the records ride on, as the start-up line reports
/// it: none with `--ttl 0`, and none for `--once` (a lease outlives no
/// process that does not keep it alive) or `--dry-run` (it writes nothing).
fn records_lease_ttl(config: &Config) -> Option<Duration> {
    config.lease_ttl.filter(|_| !config.once && !config.dry_run)
}

/// One info line per write or delete (README: "How it behaves"); `dry_run`
/// says it did not happen.
fn log_operation(operation: &Operation, dry_run: bool) {
    let key = operation.key();
    let container_id = container_id_of(key);
    let image = key.rsplit('/').nth(1).unwrap_or_default();
    match (operation, dry_run) {
        (Operation::Put { .. }, false) => info!(container_id, image, key, "registered"),
        (Operation::Delete { .. }, false) => info!(container_id, image, key, "unregistered"),
        (Operation::Put { .. }, true) => {
            info!(container_id, image, key, "would register (dry run)")
        }
        (Operation::Delete { .. }, true) => {
            info!(container_id, image, key, "would unregister (dry run)")
        }
    }
}

/// The next observation and every further one that is already waiting.
async fn next_observations(watcher: &mut Watcher) -> Vec<Observation> {
    let mut batch = vec![watcher.next().await];
    while batch.len() < MAX_OBSERVATION_BATCH {
        match watcher.try_next() {
            Some(observation) => batch.push(observation),
            None => break,
        }
    }
    batch
}

fn periodic(period: Duration) -> Interval {
    let mut interval = interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => pending().await,
    }
}

async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => pending().await,
    }
}
