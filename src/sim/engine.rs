//! The simulated container engine: a handful of containers whose state the
//! schedule changes, an event log with the engine's 256-event replay window,
//! subscriptions that are accepted when their stream is first polled, and
//! faults (down, hung, slow inspects, dropped subscriptions).
//!
//! Faithful where the agent's correctness depends on it (docker.rs shows the
//! real semantics): a container's events come in the engine's order (a
//! network `connect` before each `start`, a `disconnect` after each `die`),
//! an inspect answers with the state at the time it answers (newer than the
//! event being handled), a hung engine answers nothing until healed and its
//! requests time out after 10 s, as the Docker adapter's do.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{timeout, Instant};

use crate::container::{Container, Health};
use crate::engine::{ContainerEvent, EngineError, EventAction, EventStream};

mod facts;
mod seam;
use facts::facts;

/// The engine keeps this many events for replay (dockerd's `eventsLimit`).
const REPLAY_LOG: usize = 256;
/// The Docker adapter's request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What kind of container a catalog slot holds: each kind exercises one rule
/// of the selection or one limit of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One published port.
    Web,
    /// Two published ports.
    Pair,
    /// Publishes nothing: never registered.
    Silent,
    /// Carries the ignore label: never registered.
    Ignored,
    /// Has a HEALTHCHECK: withheld with `--require-healthy` until healthy.
    Checked,
    /// So many ports that its record exceeds the store's request size.
    Wide,
}

/// The catalog: container `i` is of kind `KINDS[i % KINDS.len()]`.
pub const KINDS: [Kind; 7] = [
    Kind::Web,
    Kind::Pair,
    Kind::Checked,
    Kind::Silent,
    Kind::Web,
    Kind::Ignored,
    Kind::Wide,
];

/// One simulated container.
#[derive(Debug, Clone)]
struct SimContainer {
    kind: Kind,
    running: bool,
    paused: bool,
    /// Attached to its network: only then are its ports published.
    networked: bool,
    removed: bool,
    /// Sent its stop signal and not dead yet: it drains (no record).
    stopping: bool,
    health: Health,
    /// The host port Docker chose at the last start or network connect.
    host_port: u32,
}

/// A subscriber's end of the event stream.
struct Subscriber {
    /// Whether it asked for health_status events.
    health: bool,
    sender: mpsc::UnboundedSender<Result<ContainerEvent, EngineError>>,
}

/// The engine's state, shared by every handle.
struct EngineState {
    containers: BTreeMap<String, SimContainer>,
    /// The last [`REPLAY_LOG`] events, with when they happened.
    log: VecDeque<(Instant, ContainerEvent)>,
    subscribers: Vec<Subscriber>,
    /// Active "unreachable" faults: the engine refuses everything.
    down: BTreeSet<u64>,
    /// Active "hung" faults: the engine answers nothing.
    hung: BTreeSet<u64>,
    /// Per container, active slow-inspect faults and their delay.
    slow_inspects: BTreeMap<String, BTreeMap<u64, Duration>>,
    /// The next host port Docker hands out.
    next_host_port: u32,
}

/// A handle on the simulated engine, as one agent process holds it: each
/// handle counts its own accepted subscriptions, like one Docker client.
#[derive(Clone)]
pub struct SimEngine {
    state: Arc<Mutex<EngineState>>,
    /// Bumped whenever this handle's fault state may have changed.
    /// A `Notify`, not a `watch`: tokio's watch wakes its receivers in an
    /// order it draws at random, and a run must replay from its seed.
    faults: Arc<Notify>,
    accepted: Arc<watch::Sender<u64>>,
    /// The engine's ID as `/info` would say it: a handle may present the
    /// same containers as another engine (a cloned machine's), so that
    /// two engines claim one host IP.
    id: &'static str,
}

/// The ID of the simulated engine, and of the other engine a schedule may
/// give one agent slot (`Schedule::other_engine`).
pub const ENGINE_ID: &str = "engine";
pub const OTHER_ENGINE_ID: &str = "clone";

/// The container id of catalog slot `index`: 64 hex digits.
pub fn container_id(index: usize) -> String {
    format!("{:064x}", 0xc0ffee_u64.wrapping_mul(index as u64 + 1))
}

impl SimEngine {
    /// An engine with `count` catalog containers, those in `running` started.
    pub fn new(count: usize, running: &[bool]) -> Self {
        let mut containers = BTreeMap::new();
        for index in 0..count {
            let kind = KINDS[index % KINDS.len()];
            let up = running.get(index).copied().unwrap_or(false);
            let container = SimContainer {
                kind,
                running: up,
                paused: false,
                networked: true,
                removed: false,
                stopping: false,
                health: initial_health(kind),
                host_port: 32768 + index as u32,
            };
            containers.insert(container_id(index), container);
        }
        let state = EngineState {
            containers,
            log: VecDeque::new(),
            subscribers: Vec::new(),
            down: BTreeSet::new(),
            hung: BTreeSet::new(),
            slow_inspects: BTreeMap::new(),
            next_host_port: 40000,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            faults: Arc::new(Notify::new()),
            accepted: Arc::new(watch::channel(0).0),
            id: ENGINE_ID,
        }
    }

    /// Another process's handle on the same engine, which says its ID is
    /// `id`.
    pub fn handle(&self, id: &'static str) -> Self {
        Self {
            state: Arc::clone(&self.state),
            faults: Arc::clone(&self.faults),
            accepted: Arc::new(watch::channel(0).0),
            id,
        }
    }

    pub fn id(&self) -> &'static str {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, EngineState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The facts an inspect reports for every container that exists now.
    pub fn containers(&self) -> Vec<Container> {
        let state = self.lock();
        state
            .containers
            .iter()
            .filter(|(_, c)| !c.removed)
            .map(|(id, c)| facts(id, c))
            .collect()
    }

    /// The containers sent their stop signal that still run: draining, so
    /// the truth holds no record of them.
    pub fn draining(&self) -> BTreeSet<String> {
        let state = self.lock();
        state
            .containers
            .iter()
            .filter(|(_, c)| c.stopping && c.running && !c.removed)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every stop in progress completes: the containers die.
    pub fn finish_stops(&self) {
        let stopping: Vec<usize> = {
            let state = self.lock();
            (0..state.containers.len())
                .filter(|index| {
                    state
                        .containers
                        .get(&container_id(*index))
                        .is_some_and(|c| c.stopping && c.running)
                })
                .collect()
        };
        for index in stopping {
            self.operate(index, super::schedule::ContainerOp::Die);
        }
    }

    /// Applies one workload operation to container `index`, emitting the
    /// engine's events in its order. Operations that make no sense in the
    /// container's state (pausing a stopped one) change nothing.
    pub fn operate(&self, index: usize, op: super::schedule::ContainerOp) {
        use super::schedule::ContainerOp as Op;
        let id = container_id(index);
        let mut state = self.lock();
        let Some(c) = state.containers.get(&id).cloned() else {
            return;
        };
        let mut events: Vec<EventAction> = Vec::new();
        let mut next = c.clone();
        let start = |next: &mut SimContainer, events: &mut Vec<_>, port: &mut u32| {
            next.running = true;
            next.paused = false;
            next.removed = false;
            next.stopping = false;
            next.networked = true;
            next.health = initial_health(next.kind);
            next.host_port = *port;
            *port += 1;
            events.push(EventAction::Connect);
            events.push(EventAction::Start);
        };
        let mut port = state.next_host_port;
        match op {
            Op::Start if !c.running => start(&mut next, &mut events, &mut port),
            Op::Die if c.running => {
                next.running = false;
                next.paused = false;
                next.stopping = false;
                events.push(EventAction::Die);
                events.push(EventAction::Disconnect);
            }
            Op::Restart if c.running => {
                events.push(EventAction::Die);
                events.push(EventAction::Disconnect);
                start(&mut next, &mut events, &mut port);
            }
            Op::Remove if !c.running && !c.removed => {
                next.removed = true;
                events.push(EventAction::Destroy);
            }
            Op::Pause if c.running && !c.paused => {
                next.paused = true;
                events.push(EventAction::Pause);
            }
            Op::Unpause if c.paused => {
                next.paused = false;
                events.push(EventAction::Unpause);
            }
            Op::NetworkDisconnect if c.running && c.networked => {
                next.networked = false;
                events.push(EventAction::Disconnect);
            }
            Op::NetworkConnect if c.running && !c.networked => {
                next.networked = true;
                next.host_port = port;
                port += 1;
                events.push(EventAction::Connect);
            }
            Op::Stop if c.running && !c.stopping => {
                next.stopping = true;
                events.push(EventAction::Kill(15));
            }
            Op::KillRestart if c.running => {
                events.push(EventAction::Kill(2));
                events.push(EventAction::Die);
                events.push(EventAction::Disconnect);
                start(&mut next, &mut events, &mut port);
            }
            Op::HealthFlip if c.running && c.kind == Kind::Checked => {
                next.health = match c.health {
                    Health::Healthy => Health::Unhealthy,
                    _ => Health::Healthy,
                };
                events.push(EventAction::HealthStatus);
            }
            _ => {}
        }
        state.next_host_port = port;
        state.containers.insert(id.clone(), next);
        for action in events {
            emit(&mut state, &id, action);
        }
    }

    /// Starts a fault; `heal` ends it (faults of one kind may overlap).
    pub fn fault(&self, id: u64, fault: super::schedule::EngineFault) {
        use super::schedule::EngineFault as F;
        let mut state = self.lock();
        match fault {
            F::Down => {
                state.down.insert(id);
                drop_subscriptions(&mut state);
            }
            F::Hang => {
                state.hung.insert(id);
            }
            F::SlowInspect { container, delay } => {
                state
                    .slow_inspects
                    .entry(container_id(container))
                    .or_default()
                    .insert(id, delay);
            }
            F::DropSubscriptions => drop_subscriptions(&mut state),
        }
        drop(state);
        self.faults.notify_waiters();
    }

    pub fn heal(&self, id: u64) {
        let mut state = self.lock();
        state.down.remove(&id);
        state.hung.remove(&id);
        for delays in state.slow_inspects.values_mut() {
            delays.remove(&id);
        }
        drop(state);
        self.faults.notify_waiters();
    }

    pub fn heal_all(&self) {
        let mut state = self.lock();
        state.down.clear();
        state.hung.clear();
        state.slow_inspects.clear();
        drop(state);
        self.faults.notify_waiters();
    }

    /// Waits until the engine is not hung; `Err` when it is down.
    async fn answering(&self) -> Result<(), EngineError> {
        loop {
            let changed = self.faults.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.lock();
                if !state.down.is_empty() {
                    return Err(EngineError::Unreachable("connection refused".into()));
                }
                if state.hung.is_empty() {
                    return Ok(());
                }
            }
            changed.await;
        }
    }

    /// A request: answered once the engine answers, or timed out.
    async fn request(&self) -> Result<(), EngineError> {
        match timeout(REQUEST_TIMEOUT, self.answering()).await {
            Ok(answer) => answer,
            Err(_) => Err(EngineError::TimedOut("request timed out".into())),
        }
    }

    /// Registers a subscriber: replays what is still in the log and within
    /// `replay`, and reports the subscription accepted.
    fn subscribe(&self, replay: Duration, health: bool) -> EventStream {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut state = self.lock();
        let now = Instant::now();
        for (at, event) in &state.log {
            let recent = now.duration_since(*at) <= replay;
            if recent && (health || event.action != EventAction::HealthStatus) {
                let _ = sender.send(Ok(event.clone()));
            }
        }
        state.subscribers.push(Subscriber { health, sender });
        drop(state);
        self.accepted.send_modify(|n| *n += 1);
        let engine = self.clone();
        futures_util::stream::unfold(receiver, move |mut receiver| {
            let engine = engine.clone();
            async move {
                let item = receiver.recv().await?;
                // A hung engine delivers nothing until it is healed.
                let _ = engine.answering().await;
                Some((item, receiver))
            }
        })
        .boxed()
    }
}

fn initial_health(kind: Kind) -> Health {
    match kind {
        Kind::Checked => Health::Starting,
        _ => Health::NoCheck,
    }
}

fn emit(state: &mut EngineState, id: &str, action: EventAction) {
    let event = ContainerEvent {
        container_id: id.to_owned(),
        action,
    };
    if state.log.len() == REPLAY_LOG {
        state.log.pop_front();
    }
    state.log.push_back((Instant::now(), event.clone()));
    state.subscribers.retain(|subscriber| {
        if !subscriber.health && action == EventAction::HealthStatus {
            return true;
        }
        subscriber.sender.send(Ok(event.clone())).is_ok()
    });
}

fn drop_subscriptions(state: &mut EngineState) {
    for subscriber in state.subscribers.drain(..) {
        let _ = subscriber
            .sender
            .send(Err(EngineError::Unreachable("connection reset".into())));
    }
}
