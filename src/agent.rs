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

mod claim;
mod etcd_view;
mod hand_over;
mod holder;
mod sync;
mod tenure;
mod wanted;

use std::collections::BTreeSet;
use std::future::{pending, Future};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::time::{interval_at, sleep_until, Instant, Interval, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::docker::Docker;
use crate::engine::Engine;
use crate::etcd::Etcd;
use crate::metrics::{self, Metrics, Status};
use crate::plan::LeaseId;
use crate::store::{Change, LeaseEnd, LockKey, PrefixChanges, Store, StoreError};
use crate::supervise::{Health, RepairBudget, Retry};
use crate::watcher::{Observation, Watcher};
use claim::{EngineSeen, Succession};
use etcd_view::{EtcdView, PrefixWatch};
use holder::Announced;
use tenure::{HostLock, Lease, Tenure};
use wanted::Wanted;

/// Observations taken off the watcher in one go when they arrive in a burst.
const MAX_OBSERVATION_BATCH: usize = 1024;
/// After SIGTERM, how long the work in flight may take to finish; then the
/// agent hands the host over (`hand_over::HAND_OVER`, `hand_over::DEREGISTER`).
const FINISH_IN_FLIGHT: Duration = Duration::from_millis(1000);

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
        ttl_secs = tenure::records_lease_ttl(&config).map_or(0, |ttl| ttl.as_secs()),
        resync_secs = config.resync.map_or(0, |resync| resync.as_secs()),
        docker_host = config.docker_host,
        etcd_tls = config.etcd_security.ca_pem.is_some(),
        etcd_user = config.etcd_security.credentials.as_ref().map(|c| c.user.as_str()),
        once = config.once,
        dry_run = config.dry_run,
        "starting"
    );
    let metrics = Metrics::new();
    let (status, status_seen) = watch::channel(Status::default());
    if let Some(listener) = metrics_listener {
        let exporter = metrics::AgentExporter {
            metrics: Arc::clone(&metrics),
            status: status_seen,
        };
        metrics::spawn(listener, Arc::new(exporter))
            .context("--metrics-addr (env REGISTER_METRICS_ADDR)")?;
    }
    let docker = Docker::new(&config.docker_host).context("--docker-host (env DOCKER_HOST)")?;
    let etcd = Etcd::new(
        &config.etcd_endpoints,
        config.etcd_security.clone(),
        config.host.clone(),
        config.docker_host.clone(),
    );
    Ok(run_with(config, docker, etcd, metrics, status, None, shutdown).await)
}

/// Runs the agent on any engine and store (the seams `engine::Engine` and
/// `store::Store`) until `shutdown` completes, or for one reconcile with
/// `--once`; [`run`] hands it the Docker and etcd adapters. The agent
/// publishes its health on `status` after every turn; `jitter_seed` makes
/// the retry delays reproducible (`None`: random).
pub async fn run_with<E: Engine, S: Store>(
    config: Config,
    engine: E,
    store: S,
    metrics: Arc<Metrics>,
    status: watch::Sender<Status>,
    jitter_seed: Option<u64>,
    shutdown: impl Future<Output = ()>,
) -> Outcome {
    let watcher = Watcher::spawn(
        engine,
        config.selection.require_healthy,
        Arc::clone(&metrics),
        jitter_seed,
    );
    let mut agent = Agent::new(config, watcher, store, metrics, status, jitter_seed);
    if agent.config.once {
        return tokio::select! {
            biased;
            exact = agent.reconcile_once() => if exact { Outcome::Exact } else { Outcome::NotExact },
            () = shutdown => Outcome::Stopped,
        };
    }
    let (stop, stopped) = watch::channel(false);
    {
        let work = agent.run(stopped);
        tokio::pin!(work, shutdown);
        tokio::select! {
            biased;
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
    agent.hand_over().await;
    Outcome::Stopped
}

/// How the agent's full reconciles have gone: `/healthz` and `agent ready`
/// follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// None has succeeded yet.
    NotYet,
    /// The last one succeeded: our prefix is exact.
    Exact,
    /// One succeeded once, but the last one failed.
    Behind,
}

/// What woke the loop up.
enum Wake {
    Observed(Vec<Observation>),
    Resync,
    LeaseEnded(LeaseEnd),
    Campaigned(Result<Option<LockKey>, StoreError>),
    Watched(Result<Vec<Change>, StoreError>),
    RetryDue,
    /// Time to look whether the holder's process on this machine still runs.
    HolderCheck,
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
    /// What the engine says should be in etcd.
    wanted: Wanted,
    /// What we believe etcd holds under our prefix.
    etcd_view: EtcdView,
    /// Our lease and our hold on the host lock, or neither.
    tenure: Tenure,
    /// The holder a standby last reported, so that it says so once.
    announced: Announced,
    /// The engine we follow, once it has answered (or is assumed from our
    /// previous run's lock key): our lock key names it, and no campaign
    /// starts before it is known.
    engine: EngineSeen,
    /// The leases of the previous runs we took the host over from: until
    /// the engine has been listed, the records on them are kept alive on
    /// ours (`plan::as_they_are`), nothing deleted.
    previous_leases: BTreeSet<LeaseId>,
    /// The lease on which we held the host lock, if we ever did: records
    /// may ride on it, so it is never revoked as a mere candidacy at exit.
    held_on: Option<LeaseId>,
    /// Whether this run takes the host from a run of its engine it cannot
    /// see (`tenure::Succession`).
    succession: Succession,
    /// `None`: the watch on our prefix must be re-created.
    watch: Option<PrefixWatch<S::Watch>>,
    resync: Option<Interval>,
    /// When to repair again after a failure or a foreign change.
    retry: Retry,
    /// Keeps the repair of foreign changes from becoming a write storm.
    repairs: RepairBudget,
    docker_health: Health,
    etcd_health: Health,
    /// How the full reconciles have gone so far.
    progress: Progress,
    /// Where the loop publishes its health for `/healthz`.
    status: watch::Sender<Status>,
}

impl<S: Store> Agent<S> {
    fn new(
        config: Config,
        watcher: Watcher,
        store: S,
        metrics: Arc<Metrics>,
        status: watch::Sender<Status>,
        jitter_seed: Option<u64>,
    ) -> Self {
        let resync = config.resync.map(periodic);
        let tenure = Tenure::initial(&config);
        Self {
            lease_ttl: tenure::lease_ttl(&config),
            docker_health: Health::new("docker", Arc::clone(&metrics)),
            etcd_health: Health::new("etcd", Arc::clone(&metrics)),
            metrics,
            config,
            watcher,
            store,
            wanted: Wanted::NotListed,
            etcd_view: EtcdView::Stale,
            tenure,
            announced: Announced::default(),
            engine: EngineSeen::NotYet,
            previous_leases: BTreeSet::new(),
            held_on: None,
            succession: Succession::TakesOver,
            watch: None,
            resync,
            retry: Retry::new(jitter_seed),
            status,
            progress: Progress::NotYet,
            repairs: RepairBudget::default(),
        }
    }

    /// The loop; returns once `stopped` turns true, between two steps.
    async fn run(&mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            if self.needs_repair() && !self.retry.is_scheduled() {
                self.repair().await;
            }
            self.publish_status();
            match self.wake(&mut stopped).await {
                Wake::Shutdown => return,
                Wake::Observed(observations) => self.observe_engine(observations).await,
                Wake::Resync => {
                    debug!("periodic resync");
                    self.watcher.relist();
                    self.etcd_view = EtcdView::Stale;
                    // Maybe granted meanwhile; the other engine's agent may
                    // be gone for good; a campaign on a member that lost its
                    // quorum never ends by itself (one new candidate key per
                    // resync).
                    if matches!(
                        self.tenure.lock(),
                        Some(HostLock::Refused | HostLock::Conflict | HostLock::Waiting(_))
                    ) {
                        self.tenure.set_lock(HostLock::Free);
                    }
                }
                Wake::LeaseEnded(LeaseEnd::Expired) => {
                    self.lease_lost("etcd answered that the lease is gone")
                }
                Wake::LeaseEnded(LeaseEnd::Unanswered) => self.lease_unanswered(),
                Wake::LeaseEnded(LeaseEnd::Broken(error)) => {
                    if let Some(id) = self.tenure.held_id() {
                        self.tenure.set_lease(Lease::Broken(id));
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
                Wake::HolderCheck => self.check_holder().await,
            }
        }
    }

    /// Publishes the loop's health, for `/healthz`.
    fn publish_status(&self) {
        let status = Status {
            docker_connected: self.docker_health.is_up(),
            etcd_connected: self.etcd_health.is_up(),
            reconciled: self.progress == Progress::Exact,
            standby: matches!(self.tenure.lock(), Some(HostLock::Waiting(_)))
                && self.announced.holder.is_some(),
            conflict: matches!(self.tenure.lock(), Some(HostLock::Conflict)),
        };
        // Derived here, from the one state that knows, after every turn.
        self.metrics
            .set_host_lock_held(matches!(self.tenure.lock(), Some(HostLock::Held(_))));
        self.status.send_if_modified(|published| {
            let changed = *published != status;
            *published = status;
            changed
        });
    }

    /// Whether etcd needs work before the loop can wait: a lease, a
    /// campaign, or (while we may write) a reconcile.
    fn needs_repair(&self) -> bool {
        self.tenure.needs_work()
            || ((self.may_write() || self.may_keep())
                && (!self.etcd_view.is_current() || self.watch.is_none()))
    }

    /// Docker was listed, and we hold the host (or need not).
    fn may_write(&self) -> bool {
        self.wanted.is_listed() && self.tenure.permits_writes()
    }

    /// We hold the host but the engine has not been listed: what etcd holds
    /// is kept alive on our lease as it is, nothing deleted, until the
    /// engine answers.
    fn may_keep(&self) -> bool {
        !self.wanted.is_listed()
            && !self.previous_leases.is_empty()
            // With --ttl 0 the records carry no lease: nothing expires.
            && self.config.lease_ttl.is_some()
            && matches!(
                self.tenure,
                Tenure::Kept {
                    lease: Lease::Held(_),
                    lock: HostLock::Held(_)
                }
            )
    }

    /// Waits for the next thing to do; all of the agent's waiting is here.
    async fn wake(&mut self, stopped: &mut watch::Receiver<bool>) -> Wake {
        if *stopped.borrow() {
            return Wake::Shutdown;
        }
        let observed = next_observations(&mut self.watcher);
        let (lease, lock) = self.tenure.parts_mut();
        let lease_ended = async {
            match lease {
                Some(Lease::Held(kept)) => kept.ended().await,
                _ => pending().await,
            }
        };
        let campaigned = async {
            match lock {
                Some(HostLock::Waiting(campaign)) => campaign.await,
                _ => pending().await,
            }
        };
        let watched = async {
            match &mut self.watch {
                Some(watch) => watch.stream.next_changes().await,
                None => pending().await,
            }
        };
        let retry_at = self.retry.at();
        let holder_check_at = self.announced.check_at;
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
            () = sleep_until_or_never(holder_check_at) => Wake::HolderCheck,
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
