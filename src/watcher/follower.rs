//! The watcher's task: the subscription, the listing and the inspects, in
//! the engine's order per container (see the watcher's module comment).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::ExponentialBackoff;
use futures_util::future::{pending, BoxFuture};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tracing::debug;

use super::drain::Drains;
use super::inspect::{inspect, list, Inspected, Listed, INSPECT_CONCURRENCY};
use super::Observation;
use crate::container::Container;
use crate::engine::{ContainerEvent, Engine, EngineError, EventKind, EventStream};
use crate::metrics::Metrics;
use crate::supervise::{doubling, Retry};

/// How far back a subscription replays the engine's event log: it covers the
/// instant between the engine answering the subscription and registering it.
const EVENT_REPLAY: Duration = Duration::from_secs(2);
/// Delays between attempts to inspect a container whose inspect failed.
const INSPECT_RETRY_FIRST: Duration = Duration::from_secs(1);
const INSPECT_RETRY_MAX: Duration = Duration::from_secs(30);

type Listing = BoxFuture<'static, Result<Listed, EngineError>>;
/// One inspect in flight: the container, the generation it answers for, the
/// event that asked for it, and what it found.
type Inspection = BoxFuture<'static, (String, u64, EventKind, Inspected)>;

/// Which of a container's inspects answer for it.
#[derive(Debug, Default)]
struct Generation {
    /// Bumped by each event of the container: only an inspect started
    /// after the latest event answers for it.
    latest: u64,
    /// Its inspects in flight.
    in_flight: u32,
}

enum Phase {
    /// Not connected: connect when the reconnect retry is due.
    Disconnected,
    /// Subscribed; waiting for the engine to accept it before listing.
    Subscribing,
    /// Listing every running container; events wait in `pending`.
    Listing(Listing),
    /// Following events.
    Following,
}

pub(super) struct Follower<E> {
    engine: E,
    /// Whether health_status events matter (`--require-healthy`).
    health: bool,
    /// Counts events by action.
    metrics: Arc<Metrics>,
    observations: mpsc::UnboundedSender<Observation>,
    phase: Phase,
    /// When to try connecting again.
    reconnect: Retry,
    /// Changes whenever the engine accepts a subscription.
    accepted: watch::Receiver<u64>,
    /// The event subscription; `None` while disconnected.
    events: Option<EventStream>,
    /// Containers to look at, with their last event (the last one decides).
    pending: BTreeMap<String, EventKind>,
    inspections: FuturesUnordered<Inspection>,
    /// Per container with an event not yet answered or an inspect in flight:
    /// which inspect answers for it. A newer event never waits for an older
    /// inspect (an engine sends a network `connect` just before each
    /// `start`); the older answer is discarded when it comes.
    generations: BTreeMap<String, Generation>,
    /// Inspects in flight, of all containers.
    in_flight: usize,
    /// Containers whose inspect failed: when to try again, and the delays
    /// after further failures.
    retries: BTreeMap<String, (Instant, ExponentialBackoff)>,
    /// Containers asked to stop that have not stopped yet: no record.
    drains: Drains,
}

impl<E: Engine> Follower<E> {
    pub(super) fn new(
        engine: E,
        health: bool,
        metrics: Arc<Metrics>,
        observations: mpsc::UnboundedSender<Observation>,
        reconnect: Retry,
    ) -> Self {
        Self {
            accepted: engine.subscriptions_accepted(),
            engine,
            health,
            metrics,
            observations,
            phase: Phase::Disconnected,
            reconnect,
            events: None,
            pending: BTreeMap::new(),
            inspections: FuturesUnordered::new(),
            generations: BTreeMap::new(),
            in_flight: 0,
            retries: BTreeMap::new(),
            drains: Drains::default(),
        }
    }

    pub(super) async fn run(mut self, mut relist_requests: mpsc::UnboundedReceiver<()>) {
        loop {
            self.start_inspections();
            let next_retry = self.retries.values().map(|(at, _)| *at).min();
            let drain_ends = self.drains.next_deadline();
            let reconnect_at = matches!(self.phase, Phase::Disconnected)
                .then(|| self.reconnect.at().unwrap_or_else(Instant::now));
            // In a fixed order, so that a run is reproducible: the rare
            // wake-ups first, inspects before more events.
            tokio::select! {
                biased;
                request = relist_requests.recv() => match request {
                    Some(()) => self.relist(),
                    None => return,
                },
                Ok(()) = self.accepted.changed(), if matches!(self.phase, Phase::Subscribing) => {
                    self.list();
                }
                listed = poll_listing(&mut self.phase) => self.on_listed(listed),
                Some((id, generation, kind, inspected)) = self.inspections.next(), if !self.inspections.is_empty() => {
                    self.on_inspected(id, generation, kind, inspected);
                }
                event = next_event(&mut self.events) => self.on_event(event),
                () = sleep_until_some(reconnect_at) => self.connect().await,
                () = sleep_until_some(next_retry) => self.retry_due(),
                () = sleep_until_some(drain_ends) => self.drains_ran_out(),
            }
        }
    }

    fn send(&self, observation: Observation) {
        let _ = self.observations.send(observation);
    }

    /// Connects, then subscribes; the listing follows the engine's answer.
    async fn connect(&mut self) {
        match self.engine.connect().await {
            Ok(identity) => self.send(Observation::Connected(identity)),
            Err(error) => return self.disconnected(error),
        }
        self.accepted.borrow_and_update();
        match self.engine.events(EVENT_REPLAY, self.health) {
            Ok(events) => {
                self.events = Some(events);
                self.phase = Phase::Subscribing;
            }
            Err(error) => self.disconnected(error),
        }
    }

    fn disconnected(&mut self, error: EngineError) {
        self.events = None;
        self.phase = Phase::Disconnected;
        self.inspections = FuturesUnordered::new();
        self.generations.clear();
        self.in_flight = 0;
        self.pending.clear();
        self.retries.clear();
        self.reconnect.schedule();
        self.send(Observation::EngineDown(error));
    }

    fn relist(&mut self) {
        if matches!(self.phase, Phase::Following) {
            self.list();
        }
    }

    fn list(&mut self) {
        let engine = self.engine.clone();
        self.phase = Phase::Listing(list(engine).boxed());
    }

    fn on_listed(&mut self, listed: Result<Listed, EngineError>) {
        match listed {
            Ok(Listed {
                containers,
                unknown,
            }) => {
                self.reconnect.reset();
                self.phase = Phase::Following;
                for id in &unknown {
                    self.schedule_retry(id);
                }
                // A draining container is as good as stopped.
                let containers = containers
                    .into_iter()
                    .filter(|c| !self.drains.is_draining(&c.id))
                    .collect();
                self.send(Observation::Listed {
                    containers,
                    unknown,
                });
            }
            Err(error) => self.disconnected(error),
        }
    }

    fn on_event(&mut self, event: Option<Result<ContainerEvent, EngineError>>) {
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(error)) => return self.disconnected(error),
            None => return self.disconnected(EngineError::StreamEnded),
        };
        self.metrics.docker_event(event.action);
        debug!(
            container_id = event.container_id,
            action = event.action,
            "docker event"
        );
        self.generations
            .entry(event.container_id.clone())
            .or_default()
            .latest += 1;
        self.retries.remove(&event.container_id);
        if event.kind == EventKind::Stopped || event.action == "start" {
            self.drains.end(&event.container_id);
        }
        // A signal's inspect decides on a drain: another event that only
        // asks to look again (health, network) must not take its place.
        let kind = match (self.pending.get(&event.container_id), event.kind) {
            (Some(&signalled @ EventKind::Signalled(_)), EventKind::Started)
                if event.action != "start" =>
            {
                signalled
            }
            (_, kind) => kind,
        };
        self.pending.insert(event.container_id, kind);
    }

    fn on_inspected(&mut self, id: String, generation: u64, kind: EventKind, inspected: Inspected) {
        self.in_flight -= 1;
        let Some(known) = self.generations.get_mut(&id) else {
            return; // from before a reconnect
        };
        known.in_flight -= 1;
        let current = known.latest == generation;
        if known.in_flight == 0 && !self.pending.contains_key(&id) {
            self.generations.remove(&id);
        }
        if !current {
            return; // a newer event came; its own inspect answers
        }
        if matches!(self.phase, Phase::Listing(_)) {
            // The listing may have seen an older state: look again after it.
            self.pending.entry(id).or_insert(kind);
            return;
        }
        match inspected {
            Inspected::Facts(container) => {
                self.retries.remove(&id);
                if self.starts_draining(kind, container.as_ref()) {
                    self.send(Observation::Draining { id });
                } else {
                    let container = container.filter(|_| !self.drains.is_draining(&id));
                    self.send(Observation::Changed { id, container });
                }
            }
            Inspected::Failed(error) => {
                self.schedule_retry(&id);
                self.send(Observation::InspectFailed { id, error });
            }
            Inspected::EngineDown(error) => self.disconnected(error),
        }
    }

    /// Looks at pending containers while following: a stop is reported at
    /// once, anything else is inspected, at most [`INSPECT_CONCURRENCY`] at a
    /// time.
    fn start_inspections(&mut self) {
        if !matches!(self.phase, Phase::Following) {
            return;
        }
        let ids: Vec<String> = self.pending.keys().cloned().collect();
        for id in ids {
            let kind = self.pending[&id];
            if kind == EventKind::Stopped {
                self.pending.remove(&id);
                self.forget_unless_in_flight(&id);
                self.send(Observation::Changed {
                    id,
                    container: None,
                });
                continue;
            }
            if self.in_flight >= INSPECT_CONCURRENCY {
                continue;
            }
            self.pending.remove(&id);
            let known = self.generations.entry(id.clone()).or_default();
            known.in_flight += 1;
            let generation = known.latest;
            self.in_flight += 1;
            let engine = self.engine.clone();
            self.inspections.push(
                async move {
                    let inspected = inspect(&engine, &id).await;
                    (id, generation, kind, inspected)
                }
                .boxed(),
            );
        }
    }

    /// Whether the inspect after a signal shows a container that starts
    /// draining now. One that drains is reported without its facts (no
    /// record) until it stops or its drain runs out.
    fn starts_draining(&mut self, kind: EventKind, container: Option<&Container>) -> bool {
        match (kind, container) {
            (EventKind::Signalled(signal), Some(container)) => {
                self.drains.signalled(container, signal, Instant::now())
            }
            _ => false,
        }
    }

    /// Containers still running after their stop timeout: they survived
    /// their stop signal; look at them again, which registers them.
    fn drains_ran_out(&mut self) {
        for id in self.drains.take_expired(Instant::now()) {
            debug!(
                container_id = id,
                "container survived its stop signal; looking at it again"
            );
            self.pending.insert(id, EventKind::Started);
        }
    }

    fn forget_unless_in_flight(&mut self, id: &str) {
        if self.generations.get(id).is_some_and(|g| g.in_flight == 0) {
            self.generations.remove(id);
        }
    }

    fn schedule_retry(&mut self, id: &str) {
        let (at, delays) = self.retries.entry(id.to_owned()).or_insert_with(|| {
            (
                Instant::now(),
                doubling(INSPECT_RETRY_FIRST, INSPECT_RETRY_MAX),
            )
        });
        *at = Instant::now() + delays.next().unwrap_or(INSPECT_RETRY_MAX);
    }

    fn retry_due(&mut self) {
        let now = Instant::now();
        for (id, (at, _)) in &self.retries {
            if *at <= now && !self.pending.contains_key(id) {
                self.pending.insert(id.clone(), EventKind::Started);
            }
        }
        // Keep their delays; push the due ones out of the way until their
        // inspect answers (and schedules the next attempt, or ends them).
        for (at, _) in self.retries.values_mut() {
            if *at <= now {
                *at = now + INSPECT_RETRY_MAX;
            }
        }
    }
}

async fn next_event(
    events: &mut Option<EventStream>,
) -> Option<Result<ContainerEvent, EngineError>> {
    match events {
        Some(events) => events.next().await,
        None => pending().await,
    }
}

async fn poll_listing(phase: &mut Phase) -> Result<Listed, EngineError> {
    match phase {
        Phase::Listing(listing) => listing.await,
        _ => pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => pending().await,
    }
}
