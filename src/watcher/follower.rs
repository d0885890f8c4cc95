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
use tokio::time::Instant;
use tracing::debug;

use super::drain::Drains;
use super::inspect::{inspect, list, Inspected, Listed, INSPECT_CONCURRENCY};
use super::Observation;
use crate::container::Container;
use crate::engine::{ContainerEvent, Engine, EngineError, EventKind, EventStream};
use crate::metrics::Metrics;
use crate::supervise::{doubling, sleep_until_some, Retry};

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

/// Everything the follower keeps of one container, in one place, so that
/// it is dropped in one place (`forget_if_idle`) once nothing is left.
#[derive(Debug, Default)]
struct Tracked {
    /// An event not looked at yet (the last one decides).
    pending: Option<EventKind>,
    /// Bumped by each event of the container: only an inspect started
    /// after the latest event answers for it. A newer event never waits
    /// for an older inspect (an engine sends a network `connect` just
    /// before each `start`); the older answer is discarded when it comes.
    generation: u64,
    /// Its inspects in flight.
    in_flight: u32,
    /// Its inspect failed: when to try again, and the delays after
    /// further failures.
    retry: Option<(Instant, ExponentialBackoff)>,
}

impl Tracked {
    fn is_idle(&self) -> bool {
        self.pending.is_none() && self.in_flight == 0 && self.retry.is_none()
    }
}

/// Where the follower is with the engine; the event subscription lives in
/// the phases that have one.
enum Phase {
    /// Not connected: connect when the reconnect retry is due.
    Disconnected,
    /// Subscribed; waiting for the engine to accept it before listing.
    Subscribing { events: EventStream },
    /// Listing every running container; events wait as pending.
    Listing {
        events: EventStream,
        listing: Listing,
    },
    /// Following events.
    Following { events: EventStream },
}

impl Phase {
    /// The subscription, leaving `Disconnected` behind.
    fn take_events(&mut self) -> Option<EventStream> {
        match std::mem::replace(self, Phase::Disconnected) {
            Phase::Disconnected => None,
            Phase::Subscribing { events }
            | Phase::Listing { events, .. }
            | Phase::Following { events } => Some(events),
        }
    }
}

/// What the engine said next: the listing's answer, or an event.
enum FromEngine {
    Listed(Result<Listed, EngineError>),
    Event(Option<Result<ContainerEvent, EngineError>>),
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
    /// The containers with an event not looked at yet, an inspect in
    /// flight or a failed inspect to try again.
    tracked: BTreeMap<String, Tracked>,
    inspections: FuturesUnordered<Inspection>,
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
            tracked: BTreeMap::new(),
            inspections: FuturesUnordered::new(),
            drains: Drains::default(),
        }
    }

    pub(super) async fn run(mut self, mut relist_requests: mpsc::UnboundedReceiver<()>) {
        loop {
            self.start_inspections();
            let next_retry = self
                .tracked
                .values()
                .filter_map(|tracked| tracked.retry.as_ref().map(|(at, _)| *at))
                .min();
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
                Ok(()) = self.accepted.changed(), if matches!(self.phase, Phase::Subscribing { .. }) => {
                    self.list();
                }
                Some((id, generation, kind, inspected)) = self.inspections.next(), if !self.inspections.is_empty() => {
                    self.on_inspected(id, generation, kind, inspected);
                }
                said = next_from_engine(&mut self.phase) => match said {
                    FromEngine::Listed(listed) => self.on_listed(listed),
                    FromEngine::Event(event) => self.on_event(event),
                },
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
            Ok(events) => self.phase = Phase::Subscribing { events },
            Err(error) => self.disconnected(error),
        }
    }

    fn disconnected(&mut self, error: EngineError) {
        self.phase = Phase::Disconnected;
        self.inspections = FuturesUnordered::new();
        self.tracked.clear();
        self.reconnect.schedule();
        self.send(Observation::EngineDown(error));
    }

    fn relist(&mut self) {
        if matches!(self.phase, Phase::Following { .. }) {
            self.list();
        }
    }

    fn list(&mut self) {
        let listing = list(self.engine.clone()).boxed();
        if let Some(events) = self.phase.take_events() {
            self.phase = Phase::Listing { events, listing };
        }
    }

    fn on_listed(&mut self, listed: Result<Listed, EngineError>) {
        match listed {
            Ok(Listed {
                containers,
                unknown,
            }) => {
                self.reconnect.reset();
                if let Some(events) = self.phase.take_events() {
                    self.phase = Phase::Following { events };
                }
                for id in &unknown {
                    self.schedule_retry(id.clone());
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
        self.metrics.docker_event(event.action.as_str());
        debug!(
            container_id = event.container_id,
            action = event.action.as_str(),
            "docker event"
        );
        let kind = event.kind();
        if matches!(kind, EventKind::Stopped | EventKind::Started) {
            self.drains.end(&event.container_id);
        }
        let tracked = self.tracked.entry(event.container_id).or_default();
        tracked.generation += 1;
        tracked.retry = None;
        // A signal's inspect decides on a drain: another event that only
        // asks to look again (health, network) must not take its place.
        tracked.pending = match (tracked.pending, kind) {
            (Some(signalled @ EventKind::Signalled(_)), EventKind::Changed) => Some(signalled),
            (_, kind) => Some(kind),
        };
    }

    fn on_inspected(&mut self, id: String, generation: u64, kind: EventKind, inspected: Inspected) {
        let Some(tracked) = self.tracked.get_mut(&id) else {
            return; // from before a reconnect
        };
        tracked.in_flight -= 1;
        if tracked.generation != generation {
            self.forget_if_idle(&id);
            return; // a newer event came; its own inspect answers
        }
        if matches!(self.phase, Phase::Listing { .. }) {
            // The listing may have seen an older state: look again after it.
            tracked.pending.get_or_insert(kind);
            return;
        }
        match inspected {
            Inspected::Facts(container) => {
                tracked.retry = None;
                self.forget_if_idle(&id);
                if self.starts_draining(kind, container.as_ref()) {
                    self.send(Observation::Draining { id });
                } else {
                    let container = container.filter(|_| !self.drains.is_draining(&id));
                    self.send(Observation::Changed { id, container });
                }
            }
            Inspected::Failed(error) => {
                self.schedule_retry(id.clone());
                self.send(Observation::InspectFailed { id, error });
            }
            Inspected::EngineDown(error) => self.disconnected(error),
        }
    }

    /// Looks at pending containers while following: a stop is reported at
    /// once, anything else is inspected, at most [`INSPECT_CONCURRENCY`] at a
    /// time.
    fn start_inspections(&mut self) {
        if !matches!(self.phase, Phase::Following { .. }) {
            return;
        }
        let pending: Vec<(String, EventKind)> = self
            .tracked
            .iter()
            .filter_map(|(id, tracked)| Some((id.clone(), tracked.pending?)))
            .collect();
        for (id, kind) in pending {
            if kind != EventKind::Stopped && self.inspections.len() >= INSPECT_CONCURRENCY {
                continue;
            }
            let Some(tracked) = self.tracked.get_mut(&id) else {
                continue;
            };
            tracked.pending = None;
            if kind == EventKind::Stopped {
                self.forget_if_idle(&id);
                self.send(Observation::Changed {
                    id,
                    container: None,
                });
                continue;
            }
            tracked.in_flight += 1;
            let generation = tracked.generation;
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
            self.tracked.entry(id).or_default().pending = Some(EventKind::Changed);
        }
    }

    /// The one place a container stops being tracked: nothing pending, no
    /// inspect in flight, no retry due.
    fn forget_if_idle(&mut self, id: &str) {
        if self.tracked.get(id).is_some_and(Tracked::is_idle) {
            self.tracked.remove(id);
        }
    }

    fn schedule_retry(&mut self, id: String) {
        let now = Instant::now();
        let tracked = self.tracked.entry(id).or_default();
        let (at, delays) = tracked
            .retry
            .get_or_insert_with(|| (now, doubling(INSPECT_RETRY_FIRST, INSPECT_RETRY_MAX)));
        *at = now + delays.next().unwrap_or(INSPECT_RETRY_MAX);
    }

    fn retry_due(&mut self) {
        let now = Instant::now();
        for tracked in self.tracked.values_mut() {
            let Some((at, _)) = &mut tracked.retry else {
                continue;
            };
            if *at > now {
                continue;
            }
            tracked.pending.get_or_insert(EventKind::Changed);
            // Keep its delays; push it out of the way until its inspect
            // answers (and schedules the next attempt, or ends it).
            *at = now + INSPECT_RETRY_MAX;
        }
    }
}

/// The next thing the engine says: while listing, the listing's answer
/// first; an event in any phase with a subscription.
async fn next_from_engine(phase: &mut Phase) -> FromEngine {
    match phase {
        Phase::Disconnected => pending().await,
        Phase::Listing { events, listing } => {
            tokio::select! {
                biased;
                listed = listing => FromEngine::Listed(listed),
                event = events.next() => FromEngine::Event(event),
            }
        }
        Phase::Subscribing { events } | Phase::Following { events } => {
            FromEngine::Event(events.next().await)
        }
    }
}
