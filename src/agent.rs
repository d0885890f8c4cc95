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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::{interval_at, sleep_until, Instant, Interval, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::container::Container;
use crate::docker::{ContainerEvent, Docker, DockerError, EventKind};
use crate::etcd::{Etcd, EtcdError, LeaseKeepAlive};
use crate::plan::{self, LeaseId, Observed, Operation};
use crate::record::{self, container_id_of, Record};

/// Inspects in flight at once when listing all containers.
const INSPECT_CONCURRENCY: usize = 16;
/// Events taken off the stream in one go when they arrive in a burst.
const MAX_EVENT_BATCH: usize = 1024;
/// How far back to replay Docker events when subscribing, so that nothing
/// that happens between subscribing and listing is lost.
const EVENT_REPLAY: Duration = Duration::from_secs(2);

/// Runs the agent until `shutdown` completes. Only configuration problems
/// make it return early; everything else is retried.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    info!(
        endpoints = ?config.etcd_endpoints,
        host_ip = %config.host.host_ip(),
        prefix = config.host.as_str(),
        ttl_secs = config.lease_ttl.map_or(0, |ttl| ttl.as_secs()),
        resync_secs = config.resync.map_or(0, |resync| resync.as_secs()),
        docker_host = config.docker_host,
        "starting"
    );
    let docker = Docker::new(&config.docker_host).context("--docker-host (env DOCKER_HOST)")?;
    let etcd = Etcd::connect(&config.etcd_endpoints, config.host.clone())
        .await
        .context("--etcd-endpoints (env ETCD_ENDPOINT)")?;
    let mut agent = Agent::new(config, docker, etcd);
    tokio::select! {
        () = agent.run() => {}
        () = shutdown => info!("shutting down"),
    }
    Ok(())
}

/// What woke the loop up.
enum Wake {
    Events(Vec<ContainerEvent>),
    EventsEnded(Option<DockerError>),
    Resync,
    KeepAliveDue,
    LeaseAnswered(Result<i64, EtcdError>),
    RetryDue,
}

struct Agent {
    config: Config,
    docker: Docker,
    etcd: Etcd,
    /// The record each qualifying container should have, by container id.
    desired: BTreeMap<String, Record>,
    /// Our host's records in etcd, as last read or written by us.
    observed: BTreeMap<String, Observed>,
    /// `None`: Docker must be re-subscribed and re-listed.
    events: Option<Box<dyn Stream<Item = Result<ContainerEvent, DockerError>> + Unpin + Send>>,
    /// `None` while a lease is configured: one must be granted.
    lease: Option<LeaseKeepAlive>,
    /// `false`: `observed` may be wrong; re-read etcd and reconcile.
    etcd_in_sync: bool,
    resync: Option<Interval>,
    keep_alive: Option<Interval>,
    retry: Retry,
    docker_health: Health,
    etcd_health: Health,
    ready: bool,
}

impl Agent {
    fn new(config: Config, docker: Docker, etcd: Etcd) -> Self {
        let resync = config.resync.map(periodic);
        // Three keep-alives per TTL ride out one lost or late answer.
        let keep_alive = config
            .lease_ttl
            .map(|ttl| periodic((ttl / 3).max(Duration::from_millis(500))));
        Self {
            config,
            docker,
            etcd,
            desired: BTreeMap::new(),
            observed: BTreeMap::new(),
            events: None,
            lease: None,
            etcd_in_sync: false,
            resync,
            keep_alive,
            retry: Retry::new(),
            docker_health: Health::new("docker"),
            etcd_health: Health::new("etcd"),
            ready: false,
        }
    }

    async fn run(&mut self) {
        loop {
            if self.needs_repair() && !self.retry.is_scheduled() {
                self.repair().await;
            }
            match self.wake().await {
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
                            self.lease_failed(&error);
                        }
                    }
                }
                Wake::LeaseAnswered(Ok(ttl)) if ttl > 0 => {}
                Wake::LeaseAnswered(Ok(_)) => self.lease_failed(&"etcd says the lease is gone"),
                Wake::LeaseAnswered(Err(error)) => self.lease_failed(&error),
                Wake::RetryDue => self.retry.clear(),
            }
        }
    }

    fn needs_repair(&self) -> bool {
        self.events.is_none()
            || !self.etcd_in_sync
            || (self.config.lease_ttl.is_some() && self.lease.is_none())
    }

    /// Waits for the next thing to do; all of the agent's waiting is here.
    async fn wake(&mut self) -> Wake {
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
        let retry_at = self.retry.at;
        tokio::select! {
            wake = events => wake,
            answer = lease_answer => Wake::LeaseAnswered(answer),
            _ = tick(&mut self.keep_alive) => Wake::KeepAliveDue,
            _ = tick(&mut self.resync) => Wake::Resync,
            () = sleep_until_or_never(retry_at) => Wake::RetryDue,
        }
    }

    /// Brings whatever is out of sync back: Docker subscription and listing,
    /// the lease, then etcd. On failure, schedules the next attempt.
    async fn repair(&mut self) {
        if self.events.is_none() {
            match self.resubscribe_and_list().await {
                Ok(()) => self.docker_health.recovered(),
                Err(error) => {
                    self.docker_health.failed(&error);
                    self.retry.schedule();
                    return;
                }
            }
        }
        match self.sync_etcd().await {
            Ok(()) => self.etcd_health.recovered(),
            Err(error) => {
                self.etcd_health.failed(&error);
                self.retry.schedule();
                return;
            }
        }
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
        let events = self.docker.events(&replay_from());
        let ids = self.docker.running_container_ids().await?;
        let containers = self.inspect_all(ids).await?;
        self.desired = containers
            .into_values()
            .filter_map(|container| self.desired_record(&container).map(|r| (container.id, r)))
            .collect();
        self.events = Some(Box::new(events));
        self.etcd_in_sync = false;
        Ok(())
    }

    /// Grants a lease if one is needed, then makes our prefix equal to the
    /// desired records.
    async fn sync_etcd(&mut self) -> Result<(), EtcdError> {
        if let (Some(ttl), None) = (self.config.lease_ttl, &self.lease) {
            let id = self.etcd.grant_lease(ttl).await?;
            self.lease = Some(self.etcd.keep_alive(id).await?);
            info!(lease = id, ttl_secs = ttl.as_secs(), "lease granted");
            self.etcd_in_sync = false;
        }
        if !self.etcd_in_sync {
            self.observed = self.etcd.observe().await?;
            let desired: BTreeMap<String, String> = self
                .desired
                .values()
                .map(|r| (r.key.clone(), r.value.clone()))
                .collect();
            let operations = plan::plan(&desired, &self.observed, self.lease_id());
            self.apply(&operations).await?;
            self.etcd_in_sync = true;
        }
        Ok(())
    }

    /// Applies a burst of events: the last event of each container decides,
    /// started containers are inspected together, and the resulting changes
    /// go to etcd in one transaction.
    async fn apply_events(&mut self, batch: Vec<ContainerEvent>) {
        let mut last_kind: BTreeMap<String, EventKind> = BTreeMap::new();
        for event in batch {
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
        for id in last_kind.keys() {
            let record = inspected.get(id).and_then(|c| self.desired_record(c));
            match record {
                Some(record) => self.desired.insert(id.clone(), record),
                None => self.desired.remove(id),
            };
        }
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
        let operations = plan::plan(&desired, &observed, self.lease_id());
        if let Err(error) = self.apply(&operations).await {
            self.etcd_health.failed(&error);
            self.etcd_in_sync = false;
        }
    }

    /// Inspects containers concurrently; a container that is already gone
    /// is simply absent from the result.
    async fn inspect_all(
        &self,
        ids: Vec<String>,
    ) -> Result<BTreeMap<String, Container>, DockerError> {
        let docker = &self.docker;
        let mut results = futures_util::stream::iter(ids)
            .map(|id| async move { docker.inspect(&id).await })
            .buffer_unordered(INSPECT_CONCURRENCY);
        let mut containers = BTreeMap::new();
        while let Some(result) = results.next().await {
            if let Some(container) = result? {
                containers.insert(container.id.clone(), container);
            }
        }
        Ok(containers)
    }

    fn desired_record(&self, container: &Container) -> Option<Record> {
        if !container.qualifies(&self.config.required_labels) {
            return None;
        }
        record::desired_record(container, &self.config.host)
    }

    async fn apply(&mut self, operations: &[Operation]) -> Result<(), EtcdError> {
        if operations.is_empty() {
            return Ok(());
        }
        let lease = self.lease_id();
        self.etcd.apply(operations, lease).await?;
        plan::record_applied(&mut self.observed, operations, lease);
        for operation in operations {
            log_applied(operation);
        }
        Ok(())
    }

    fn lease_failed(&mut self, error: &dyn std::fmt::Display) {
        warn!(error = %error, "lost the etcd lease; a new one will carry every record");
        self.lease = None;
        self.etcd_in_sync = false;
    }

    fn lease_missing(&self) -> bool {
        self.config.lease_ttl.is_some() && self.lease.is_none()
    }

    fn lease_id(&self) -> LeaseId {
        self.lease.as_ref().map_or(0, LeaseKeepAlive::lease)
    }
}

fn log_applied(operation: &Operation) {
    let key = operation.key();
    let container_id = container_id_of(key);
    let image = key.rsplit('/').nth(1).unwrap_or_default();
    match operation {
        Operation::Put { .. } => info!(container_id, image, key, "registered"),
        Operation::Delete { .. } => info!(container_id, image, key, "unregistered"),
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
/// it starts and one info line when it ends, not a line per retry.
struct Health {
    dependency: &'static str,
    down_since: Option<Instant>,
}

impl Health {
    fn new(dependency: &'static str) -> Self {
        Self {
            dependency,
            down_since: None,
        }
    }

    fn failed(&mut self, error: &dyn std::fmt::Display) {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            warn!(dependency = self.dependency, error = %error, "dependency unavailable; retrying");
        } else {
            debug!(dependency = self.dependency, error = %error, "still unavailable");
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.down_since.take() {
            info!(
                dependency = self.dependency,
                down_secs = since.elapsed().as_secs_f64(),
                "dependency back"
            );
        }
    }
}
