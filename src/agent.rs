//! The agent: one loop that owns all state and keeps etcd equal to Docker.
//!
//! Level-triggered like a controller: Docker events and timers only say
//! *when* to look; what to write always comes from comparing the desired
//! records (built from Docker) with the observed ones (read from etcd) in
//! [`plan`]. Anything that fails marks its side out of sync, and the loop
//! repairs it with a capped, jittered backoff, so a missed event, a failed
//! write or a lost lease is healed by the next full reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::future::{pending, Future};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::{interval_at, sleep_until, Instant, Interval, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::container::{Container, Withheld};
use crate::docker::{ContainerEvent, Docker, DockerError, EventKind};
use crate::etcd::{Change, Etcd, EtcdError, LeaseKeepAlive, PrefixWatch};
use crate::metrics::{self, Metrics};
use crate::plan::{self, LeaseId, Observed, Operation};
use crate::record::{self, container_id_of, Desired, Record};

/// Inspects in flight at once when listing all containers.
const INSPECT_CONCURRENCY: usize = 16;
/// Events taken off the stream in one go when they arrive in a burst.
const MAX_EVENT_BATCH: usize = 1024;
/// How far back to replay Docker events when subscribing, so that nothing
/// that happens between subscribing and listing is lost.
const EVENT_REPLAY: Duration = Duration::from_secs(2);
/// After SIGTERM, how long the work in flight may take to finish, and then
/// how long deregistering may take: together well within the 2 s an
/// orchestrator grants before it kills.
const FINISH_IN_FLIGHT: Duration = Duration::from_millis(1000);
const DEREGISTER: Duration = Duration::from_millis(800);

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
        ttl_secs = effective_lease_ttl(&config).map_or(0, |ttl| ttl.as_secs()),
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
    let deregister_on_exit = config.deregister_on_exit;
    let once = config.once;
    let mut agent = Agent::new(config, docker, etcd, metrics);
    if once {
        let outcome = tokio::select! {
            exact = agent.reconcile_once() => if exact { Outcome::Exact } else { Outcome::NotExact },
            () = shutdown => Outcome::Stopped,
        };
        return Ok(outcome);
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
    if deregister_on_exit {
        match tokio::time::timeout(DEREGISTER, agent.deregister()).await {
            Ok(Ok(())) => info!(
                prefix = agent.config.host.as_str(),
                "deregistered this host"
            ),
            Ok(Err(error)) => {
                warn!(error = %error, "could not deregister; records expire with the lease")
            }
            Err(_) => warn!("deregistering timed out; records expire with the lease"),
        }
    }
    Ok(Outcome::Stopped)
}

/// What woke the loop up.
enum Wake {
    Events(Vec<ContainerEvent>),
    EventsEnded(Option<DockerError>),
    Resync,
    KeepAliveDue,
    LeaseAnswered(Result<i64, EtcdError>),
    Watched(Result<Vec<Change>, EtcdError>),
    RetryDue,
    Shutdown,
}

struct Agent {
    config: Config,
    /// The lease TTL in force: none with `--ttl 0`, `--once` or `--dry-run`.
    lease_ttl: Option<Duration>,
    metrics: Arc<Metrics>,
    docker: Docker,
    etcd: Etcd,
    /// The record each qualifying container should have, by container id.
    desired: BTreeMap<String, Record>,
    /// Containers held back only by their health (`--require-healthy`).
    withheld: BTreeMap<String, Withheld>,
    /// Our host's records in etcd, as last read or written by us.
    observed: BTreeMap<String, Observed>,
    /// `None`: Docker must be re-subscribed and re-listed.
    events: Option<Box<dyn Stream<Item = Result<ContainerEvent, DockerError>> + Unpin + Send>>,
    /// `None` while a lease is configured: one must be resumed or granted.
    lease: Option<LeaseKeepAlive>,
    /// A lease whose keep-alive stream broke but which may still be alive.
    lease_to_resume: Option<LeaseId>,
    /// `None`: the watch on our prefix must be re-created.
    watch: Option<PrefixWatch>,
    /// Revisions of our own writes not yet seen in the watch.
    own_revisions: BTreeSet<i64>,
    /// `false`: `observed` may be wrong; re-read etcd and reconcile.
    etcd_in_sync: bool,
    resync: Option<Interval>,
    keep_alive: Option<Interval>,
    retry: Retry,
    docker_health: Health,
    etcd_health: Health,
    /// Docker has been listed at least once: `desired` means something.
    listed_once: bool,
    ready: bool,
}

impl Agent {
    fn new(config: Config, docker: Docker, etcd: Etcd, metrics: Arc<Metrics>) -> Self {
        let resync = config.resync.map(periodic);
        // A lease outlives no process that does not keep it alive, and a dry
        // run writes nothing, not even a lease.
        let lease_ttl = config.lease_ttl.filter(|_| !config.once && !config.dry_run);
        // Three keep-alives per TTL ride out one lost or late answer.
        let keep_alive = lease_ttl.map(|ttl| periodic((ttl / 3).max(Duration::from_millis(500))));
        Self {
            lease_ttl,
            docker_health: Health::new("docker", Arc::clone(&metrics)),
            etcd_health: Health::new("etcd", Arc::clone(&metrics)),
            metrics,
            config,
            docker,
            etcd,
            desired: BTreeMap::new(),
            withheld: BTreeMap::new(),
            observed: BTreeMap::new(),
            events: None,
            lease: None,
            lease_to_resume: None,
            watch: None,
            own_revisions: BTreeSet::new(),
            etcd_in_sync: false,
            resync,
            keep_alive,
            retry: Retry::new(),
            listed_once: false,
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
                Wake::Events(batch) => self.apply_events(batch).await,
                Wake::EventsEnded(error) => {
                    let error = error.map_or("the event stream ended".into(), |e| e.to_string());
                    self.docker_health.failed(&error);
                    self.events = None;
                }
                Wake::Resync => {
                    debug!("periodic resync");
                    self.events = None;
                    self.etcd_in_sync = false;
                }
                Wake::KeepAliveDue => {
                    if let Some(lease) = &mut self.lease {
                        if let Err(error) = lease.send().await {
                            self.keep_alive_broken(error);
                        }
                    }
                }
                Wake::LeaseAnswered(Ok(ttl)) if ttl > 0 => {}
                Wake::LeaseAnswered(Ok(_)) => {
                    self.lease_lost("etcd answered that the lease is gone")
                }
                Wake::LeaseAnswered(Err(error)) => self.keep_alive_broken(error),
                Wake::Watched(Ok(changes)) => self.notice_changes(&changes),
                Wake::Watched(Err(error)) => {
                    self.watch = None;
                    self.etcd_failed(error);
                }
                Wake::RetryDue => self.retry.clear(),
            }
        }
    }

    fn needs_repair(&self) -> bool {
        self.events.is_none() || !self.etcd_in_sync || self.watch.is_none() || self.lease_missing()
    }

    /// Waits for the next thing to do; all of the agent's waiting is here.
    async fn wake(&mut self, stopped: &mut watch::Receiver<bool>) -> Wake {
        if *stopped.borrow() {
            return Wake::Shutdown;
        }
        let events = async {
            match &mut self.events {
                Some(stream) => next_batch(stream).await,
                None => pending().await,
            }
        };
        let lease_answer = async {
            match &mut self.lease {
                Some(lease) => lease.next_ttl().await,
                None => pending().await,
            }
        };
        let watched = async {
            match &mut self.watch {
                Some(watch) => watch.next_changes().await,
                None => pending().await,
            }
        };
        let retry_at = self.retry.at;
        tokio::select! {
            _ = stopped.changed() => Wake::Shutdown,
            wake = events => wake,
            changes = watched => Wake::Watched(changes),
            answer = lease_answer => Wake::LeaseAnswered(answer),
            _ = tick(&mut self.keep_alive) => Wake::KeepAliveDue,
            _ = tick(&mut self.resync) => Wake::Resync,
            () = sleep_until_or_never(retry_at) => Wake::RetryDue,
        }
    }

    /// Brings whatever is out of sync back: Docker subscription and listing,
    /// the lease, then etcd. On failure, schedules the next attempt.
    async fn repair(&mut self) {
        let started = Instant::now();
        let mut healthy = true;
        if self.events.is_none() {
            match self.resubscribe_and_list().await {
                Ok(()) => self.docker_health.recovered(),
                Err(error) => {
                    self.docker_health.failed(&error);
                    healthy = false;
                }
            }
        }
        // Until Docker has been listed once we do not know what runs, and an
        // empty desired state would delete live records. After that, the last
        // known state is kept in etcd (lease alive) while Docker is away.
        let etcd_result = if self.listed_once {
            self.sync_etcd().await
        } else {
            self.prepare_etcd().await
        };
        match etcd_result {
            Ok(()) => self.etcd_health.recovered(),
            Err(error) => {
                self.etcd_failed(error);
                healthy = false;
            }
        }
        if !healthy {
            self.metrics.reconcile_failed();
            self.retry.schedule();
            return;
        }
        self.metrics.reconciled(started.elapsed());
        self.retry.reset();
        if !self.ready {
            self.ready = true;
            info!(records = self.desired.len(), "agent ready");
        }
    }

    /// Subscribes to events first, then lists, so that a container that
    /// starts or stops in between is seen by the event stream.
    async fn resubscribe_and_list(&mut self) -> Result<(), DockerError> {
        self.docker.handshake().await?;
        let events = self
            .docker
            .events(&replay_from(), self.config.selection.require_healthy)?;
        let ids = self.docker.running_container_ids().await?;
        let inspected = self.inspect_all(ids).await?;
        let mut desired = BTreeMap::new();
        let mut withheld = BTreeMap::new();
        for container in inspected.containers.values() {
            let wanted = self.desired_for(container);
            remember(&mut desired, &mut withheld, &container.id, wanted);
        }
        for id in &inspected.failed {
            if let Some(record) = self.desired.remove(id) {
                desired.insert(id.clone(), record);
            }
            if let Some(reason) = self.withheld.remove(id) {
                withheld.insert(id.clone(), reason);
            }
        }
        self.desired = desired;
        self.withheld = withheld;
        self.metrics.set_withheld(self.withheld.values());
        self.events = Some(Box::new(events));
        self.listed_once = true;
        self.etcd_in_sync = false;
        Ok(())
    }

    /// Before Docker was listed: get the lease ready (or, without lease, just
    /// check that etcd answers), so that etcd trouble is reported at once.
    async fn prepare_etcd(&mut self) -> Result<(), EtcdError> {
        if self.lease_ttl.is_some() {
            if self.lease.is_none() {
                self.resume_or_grant_lease().await?;
            }
        } else {
            self.etcd.observe().await?;
        }
        Ok(())
    }

    /// Grants a lease if one is needed, then makes our prefix equal to the
    /// desired records.
    async fn sync_etcd(&mut self) -> Result<(), EtcdError> {
        if self.lease_missing() {
            self.resume_or_grant_lease().await?;
        }
        if !self.etcd_in_sync || self.watch.is_none() {
            let snapshot = self.etcd.observe().await?;
            if self.watch.is_none() {
                self.watch = Some(self.etcd.watch(snapshot.revision + 1).await?);
                self.own_revisions.clear();
            }
            self.observed = snapshot.records;
            self.metrics.set_records(self.observed.len());
            let desired = self.desired_by_key();
            let operations = plan::plan(&desired, &self.observed, self.lease_policy());
            self.apply(&operations).await?;
            self.etcd_in_sync = true;
        }
        Ok(())
    }

    /// Re-opens the keep-alive of a lease that may have survived a broken
    /// stream (its records stay as they are), or grants a new one (and every
    /// record moves onto it in place).
    async fn resume_or_grant_lease(&mut self) -> Result<(), EtcdError> {
        let Some(ttl) = self.lease_ttl else {
            return Ok(());
        };
        if let Some(id) = self.lease_to_resume {
            match self.etcd.keep_alive(id).await {
                Ok(keep_alive) => {
                    self.lease = Some(keep_alive);
                    self.lease_to_resume = None;
                    debug!(lease = id, "lease keep-alive resumed");
                    return Ok(());
                }
                Err(EtcdError::LeaseNotFound) => self.lease_to_resume = None,
                Err(error) => return Err(error),
            }
        }
        let id = self.etcd.grant_lease(ttl).await?;
        self.lease = Some(self.etcd.keep_alive(id).await?);
        info!(lease = id, ttl_secs = ttl.as_secs(), "lease granted");
        self.etcd_in_sync = false;
        Ok(())
    }

    /// Watch events: our own writes are expected; anything else under our
    /// prefix (a foreign delete or overwrite, an expired lease) means etcd
    /// no longer holds what we believe, so reconcile.
    fn notice_changes(&mut self, changes: &[Change]) {
        let mut foreign = false;
        for change in changes {
            if !self.own_revisions.contains(&change.revision) {
                foreign = true;
                info!(
                    key = change.key,
                    revision = change.revision,
                    deleted = change.deleted,
                    "record changed by someone else; reconciling"
                );
            }
        }
        // The watch reports revisions in order: older ones of ours are past.
        if let Some(latest) = changes.iter().map(|c| c.revision).max() {
            self.own_revisions = self.own_revisions.split_off(&latest);
        }
        if foreign {
            self.etcd_in_sync = false;
        }
    }

    /// `--once`: one reconcile, then check that etcd holds exactly the
    /// desired records.
    async fn reconcile_once(&mut self) -> bool {
        self.repair().await;
        if !self.ready {
            // No retry follows, so say now what the retry loop would have.
            for health in [&self.docker_health, &self.etcd_health] {
                if let Some(error) = &health.last_error {
                    error!(dependency = health.dependency, error, "reconcile failed");
                }
            }
            return false;
        }
        let desired = self.desired_by_key();
        match self.etcd.observe().await {
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

    /// Removes this host's records (for `--deregister-on-exit`).
    async fn deregister(&mut self) -> Result<(), EtcdError> {
        let lease = self.lease.as_ref().map(LeaseKeepAlive::lease);
        self.etcd.deregister(lease.or(self.lease_to_resume)).await
    }

    /// Applies a burst of events: the last event of each container decides,
    /// started containers are inspected together, and the resulting changes
    /// go to etcd in one transaction.
    async fn apply_events(&mut self, batch: Vec<ContainerEvent>) {
        let mut last_kind: BTreeMap<String, EventKind> = BTreeMap::new();
        for event in batch {
            self.metrics.docker_event(event.action);
            last_kind.insert(event.container_id, event.kind);
        }
        let started: Vec<String> = last_kind
            .iter()
            .filter(|(_, kind)| **kind == EventKind::Started)
            .map(|(id, _)| id.clone())
            .collect();
        let inspected = match self.inspect_all(started).await {
            Ok(inspected) => inspected,
            Err(error) => {
                // Without the facts we cannot decide; a full re-list will.
                self.docker_health.failed(&error);
                self.events = None;
                return;
            }
        };
        // A container we could not inspect keeps what it had until the next
        // resync: its trouble must not block the others.
        last_kind.retain(|id, _| !inspected.failed.contains(id));
        for id in last_kind.keys() {
            let wanted = inspected
                .containers
                .get(id)
                .map_or(Desired::Nothing, |c| self.desired_for(c));
            remember(&mut self.desired, &mut self.withheld, id, wanted);
        }
        self.metrics.set_withheld(self.withheld.values());
        if !self.etcd_in_sync || self.lease_missing() {
            return; // the next repair reconciles everything
        }
        let touched: BTreeSet<&str> = last_kind.keys().map(String::as_str).collect();
        let desired: BTreeMap<String, String> = touched
            .iter()
            .filter_map(|id| self.desired.get(*id))
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let observed: BTreeMap<String, Observed> = self
            .observed
            .iter()
            .filter(|(key, _)| touched.contains(container_id_of(key)))
            .map(|(key, observed)| (key.clone(), observed.clone()))
            .collect();
        let operations = plan::plan(&desired, &observed, self.lease_policy());
        if let Err(error) = self.apply(&operations).await {
            self.etcd_failed(error);
        }
    }

    /// Inspects containers concurrently. A container that is already gone is
    /// absent from the result; one whose inspect fails on its own is listed
    /// as failed; an unreachable engine fails the whole call.
    async fn inspect_all(&self, ids: Vec<String>) -> Result<Inspected, DockerError> {
        let docker = &self.docker;
        let mut results = futures_util::stream::iter(ids)
            .map(|id| async move {
                let result = docker.inspect(&id).await;
                (id, result)
            })
            .buffer_unordered(INSPECT_CONCURRENCY);
        let mut inspected = Inspected::default();
        while let Some((id, result)) = results.next().await {
            match result {
                Ok(Some(container)) => {
                    inspected.containers.insert(id, container);
                }
                Ok(None) => {}
                Err(error) if error.is_request_specific() => {
                    warn!(container_id = id, error = %error, "cannot inspect container; keeping its record as it is");
                    inspected.failed.insert(id);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(inspected)
    }

    fn desired_for(&self, container: &Container) -> Desired {
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

    async fn apply(&mut self, operations: &[Operation]) -> Result<(), EtcdError> {
        if operations.is_empty() {
            return Ok(());
        }
        let lease = self.lease_id();
        if self.config.dry_run {
            for operation in operations {
                log_operation(operation, true);
            }
            // As if applied, so that each change is reported once.
            plan::record_applied(&mut self.observed, operations, lease);
            return Ok(());
        }
        let applied = self.etcd.apply(operations, lease).await?;
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
                "etcd refused this record; the container stays unregistered until it changes"
            );
        }
        Ok(())
    }

    /// Any etcd failure: our picture of etcd can no longer be trusted.
    fn etcd_failed(&mut self, error: EtcdError) {
        self.metrics.etcd_error();
        match error {
            EtcdError::LeaseNotFound => self.lease_lost("etcd does not know the lease"),
            error => self.etcd_health.failed(&error),
        }
        self.etcd_in_sync = false;
    }

    /// The keep-alive stream broke: the lease itself may well be alive.
    fn keep_alive_broken(&mut self, error: EtcdError) {
        if let Some(lease) = self.lease.take() {
            self.lease_to_resume = Some(lease.lease());
        }
        self.etcd_failed(error);
    }

    /// The lease is gone and its records with it: a new lease must carry
    /// every record again.
    fn lease_lost(&mut self, reason: &str) {
        if let Some(lease) = self
            .lease
            .take()
            .map(|l| l.lease())
            .or(self.lease_to_resume.take())
        {
            warn!(
                lease,
                reason, "etcd lease lost; re-registering every record on a new one"
            );
        }
        self.etcd_in_sync = false;
    }

    fn lease_missing(&self) -> bool {
        self.lease_ttl.is_some() && self.lease.is_none()
    }

    /// Which lease a record must ride on to count as right: ours, or, when
    /// this run holds none (`--once`, `--dry-run`), any.
    fn lease_policy(&self) -> Option<LeaseId> {
        if self.config.once || self.config.dry_run {
            None
        } else {
            Some(self.lease_id())
        }
    }

    fn lease_id(&self) -> LeaseId {
        self.lease.as_ref().map_or(0, LeaseKeepAlive::lease)
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

/// The outcome of inspecting a set of containers.
#[derive(Default)]
struct Inspected {
    containers: BTreeMap<String, Container>,
    failed: BTreeSet<String>,
}

/// The lease TTL in force. A lease outlives no process that does not keep
/// it alive (`--once`), and a dry run writes nothing, not even a lease.
fn effective_lease_ttl(config: &Config) -> Option<Duration> {
    config.lease_ttl.filter(|_| !config.once && !config.dry_run)
}

/// One info line per write or delete (SPEC §4); `dry_run` says it did not happen.
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

/// The next event and every further one that is already waiting.
async fn next_batch<S>(stream: &mut S) -> Wake
where
    S: Stream<Item = Result<ContainerEvent, DockerError>> + Unpin,
{
    let mut batch = Vec::new();
    let mut next = stream.next().await;
    loop {
        match next {
            Some(Ok(event)) => batch.push(event),
            Some(Err(error)) if batch.is_empty() => return Wake::EventsEnded(Some(error)),
            None if batch.is_empty() => return Wake::EventsEnded(None),
            // Apply what we have; the stream reports its end again next time.
            Some(Err(_)) | None => return Wake::Events(batch),
        }
        if batch.len() >= MAX_EVENT_BATCH {
            return Wake::Events(batch);
        }
        match stream.next().now_or_never() {
            Some(item) => next = item,
            None => return Wake::Events(batch),
        }
    }
}

/// Engine timestamp (whole seconds) to replay events from.
fn replay_from() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(EVENT_REPLAY).as_secs().to_string()
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

/// When to try a failed repair again: capped exponential backoff with jitter
/// (100 ms doubling to 2.5 s, plus up to as much again: never above 5 s).
struct Retry {
    delays: ExponentialBackoff,
    at: Option<Instant>,
}

impl Retry {
    fn new() -> Self {
        Self {
            delays: Self::builder().build(),
            at: None,
        }
    }

    fn builder() -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(2500))
            .with_jitter()
            .without_max_times()
    }

    fn schedule(&mut self) {
        let delay = self.delays.next().unwrap_or(Duration::from_secs(5));
        self.at = Some(Instant::now() + delay);
    }

    fn is_scheduled(&self) -> bool {
        self.at.is_some()
    }

    fn clear(&mut self) {
        self.at = None;
    }

    fn reset(&mut self) {
        self.delays = Self::builder().build();
        self.at = None;
    }
}

/// Whether a dependency is reachable, so that an outage is one warning when
/// it starts and one info line when it ends, not a line per retry. A single
/// failure that the first retry heals (a request that hit the one dead member
/// of a healthy cluster) is no outage: it is logged at debug only.
struct Health {
    dependency: &'static str,
    /// Consecutive failures; 0 while the dependency answers.
    failures: u32,
    last_error: Option<String>,
    down_since: Option<Instant>,
    metrics: Arc<Metrics>,
}

impl Health {
    /// Failures in a row that make an outage.
    const OUTAGE: u32 = 2;

    fn new(dependency: &'static str, metrics: Arc<Metrics>) -> Self {
        Self {
            dependency,
            failures: 0,
            last_error: None,
            down_since: None,
            metrics,
        }
    }

    fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error.to_string());
        let since = *self.down_since.get_or_insert_with(Instant::now);
        if self.failures == Self::OUTAGE {
            self.metrics.set_connected(self.dependency, false);
            warn!(
                dependency = self.dependency,
                error = %error,
                failing_secs = since.elapsed().as_secs_f64(),
                "dependency unavailable; retrying"
            );
        } else {
            debug!(dependency = self.dependency, error = %error, "request failed; retrying");
        }
    }

    fn recovered(&mut self) {
        self.metrics.set_connected(self.dependency, true);
        let failures = std::mem::take(&mut self.failures);
        self.last_error = None;
        if let Some(since) = self.down_since.take() {
            let down_secs = since.elapsed().as_secs_f64();
            if failures >= Self::OUTAGE {
                info!(dependency = self.dependency, down_secs, "dependency back");
            } else {
                debug!(
                    dependency = self.dependency,
                    down_secs, "recovered at the first retry"
                );
            }
        }
    }
}
