//! Runs one schedule: the real agent loop (`agent::run_with`) on the
//! simulated engine and store, on a current-thread runtime with tokio's
//! paused clock, so that a run is deterministic and an hour of simulated
//! time takes milliseconds. Records what the world looked like (the truth,
//! the fault windows, the agents' lifetimes) for the properties
//! (`properties.rs`).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Once;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{JoinHandle, LocalSet};
use tokio::time::{sleep, timeout, Instant};

use super::cluster::{Cluster, Effect};
use super::engine::{SimEngine, ENGINE_ID, OTHER_ENGINE_ID};
use super::schedule::{Schedule, AGENT_SLOTS, CONTAINERS};
use super::store::SimStore;
use crate::agent::{run_with, Outcome};
use crate::config::{Config, EtcdSecurity, LogFormat};
use crate::container::Selection;
use crate::metrics::{Metrics, Status};
use crate::record::{self, Desired, HostPrefix};

/// The agents' `--docker-host`, which their candidate keys name.
pub const DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The agents' `--resync`.
pub const RESYNC: Duration = Duration::from_secs(300);
/// The agents' `--ttl`.
pub const TTL: Duration = Duration::from_secs(15);
/// How long after the faults stop the prefix must equal the truth.
pub const CONVERGENCE: Duration = Duration::from_secs(30 + 15);
mod act;

const HOST_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

/// What a run left behind.
pub struct Run {
    /// Every store request and change, with its simulated time.
    pub trace: Vec<String>,
    pub history: History,
    pub effects: Vec<Effect>,
    /// Writes an agent asked for outside its prefix (refused).
    pub outside_prefix_attempts: Vec<(usize, String)>,
    /// The host prefix at the end, and the truth then.
    pub final_prefix: BTreeMap<String, Vec<u8>>,
    pub final_truth: BTreeMap<String, Vec<u8>>,
    /// The keys of running containers whose record etcd refuses as too
    /// large.
    pub final_too_large: BTreeSet<String>,
    /// Tasks that panicked.
    pub panics: u32,
    pub prefix: HostPrefix,
    /// Whether the slots ran on one machine (`Schedule::one_machine`).
    pub one_machine: bool,
    /// Whether the last slot followed another engine (`Schedule::other_engine`).
    pub other_engine: bool,
}

/// What happened when, besides the store's own log.
#[derive(Debug, Default)]
pub struct History {
    /// The records the containers call for, after each container change.
    pub truth: Vec<(Duration, BTreeMap<String, Vec<u8>>)>,
    /// Windows of engine faults.
    pub engine_faults: Vec<(Duration, Duration)>,
    /// Windows of store faults: the agent slot, or `None` for all.
    pub store_faults: Vec<(Option<usize>, Duration, Duration)>,
    /// Per agent process: its slot, and when it started and ended.
    pub lifetimes: BTreeMap<usize, (usize, Duration, Option<Duration>)>,
    /// The processes that were stopped (SIGTERM), not killed.
    pub stopped: BTreeSet<usize>,
    /// Windows in which a container's inspect timed out (engine answering).
    pub inspect_timeouts: Vec<(String, Duration, Duration)>,
    /// When something happened that explains writes: container changes,
    /// foreign writes, faults, agents starting or stopping.
    pub stimuli: Vec<Duration>,
}

thread_local! {
    /// Panics on this thread: every task of a run is polled on it.
    static PANICS: Cell<u32> = const { Cell::new(0) };
}

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|panics| panics.set(panics.get() + 1));
            previous(info);
        }));
    });
}

/// Runs `schedule` to its end, then heals every fault and lets the agents
/// converge for [`CONVERGENCE`].
pub fn run(schedule: &Schedule) -> Run {
    count_panics();
    let before = PANICS.with(Cell::get);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let local = LocalSet::new();
    let mut run = runtime.block_on(local.run_until(simulate(schedule.clone())));
    drop(local);
    drop(runtime);
    run.panics += PANICS.with(Cell::get) - before;
    run
}

/// One running agent process.
struct Process {
    id: usize,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Outcome>,
}

struct World {
    schedule: Schedule,
    engine: SimEngine,
    cluster: Cluster,
    prefix: HostPrefix,
    selection: Selection,
    agents: Vec<Option<Process>>,
    processes: usize,
    /// Processes that were stopped or killed, to collect their panics.
    ended: Vec<JoinHandle<Outcome>>,
    next_fault: u64,
    junk: u32,
    start: Instant,
    history: History,
}

async fn simulate(schedule: Schedule) -> Run {
    let engine = SimEngine::new(CONTAINERS, &schedule.running);
    let cluster = Cluster::new();
    let selection = Selection {
        required_labels: Vec::new(),
        require_healthy: schedule.require_healthy,
        ..Selection::default()
    };
    let mut world = World {
        engine,
        cluster,
        prefix: HostPrefix::new("/registered", HOST_IP),
        selection,
        agents: (0..AGENT_SLOTS).map(|_| None).collect(),
        processes: 0,
        ended: Vec::new(),
        next_fault: 0,
        junk: 0,
        start: Instant::now(),
        history: History::default(),
        schedule,
    };
    world.record_truth();
    world.start_agent(0);
    for step in world.schedule.steps.clone() {
        sleep(step.after).await;
        world.act(step.action);
    }
    world.heal_all();
    // Convergence is the engine's agents' to reach: an agent of the other
    // engine only says it is in conflict.
    let following = (0..AGENT_SLOTS)
        .any(|slot| world.agents[slot].is_some() && world.engine_of(slot) == ENGINE_ID);
    if !following {
        world.start_agent(0);
    }
    sleep(CONVERGENCE).await;
    let final_prefix = world.prefix_now();
    let final_truth = world.truth();
    let final_too_large = world.too_large();
    let mut panics = 0;
    for slot in 0..AGENT_SLOTS {
        world.stop_agent(slot);
    }
    for task in std::mem::take(&mut world.ended) {
        match timeout(Duration::from_secs(10), task).await {
            Ok(Err(error)) if error.is_panic() => panics += 1,
            _ => {}
        }
    }
    let state = world.cluster.lock();
    Run {
        trace: state.trace.clone(),
        effects: state.effects.clone(),
        outside_prefix_attempts: state.outside_prefix_attempts.clone(),
        final_prefix,
        final_truth,
        final_too_large,
        panics,
        prefix: world.prefix.clone(),
        one_machine: world.schedule.one_machine,
        other_engine: world.schedule.other_engine,
        history: std::mem::take(&mut world.history),
    }
}

impl World {
    fn now(&self) -> Duration {
        Instant::now().duration_since(self.start)
    }

    fn config(&self) -> Config {
        Config {
            host: self.prefix.clone(),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            lease_ttl: self.schedule.records_on_lease.then_some(TTL),
            resync: Some(RESYNC),
            docker_host: DOCKER_HOST.into(),
            selection: self.selection.clone(),
            deregister_on_exit: false,
            etcd_security: EtcdSecurity::default(),
            metrics_addr: None,
            log_format: LogFormat::Text,
            once: false,
            dry_run: false,
        }
    }

    /// The records the containers call for now (but those etcd refuses as
    /// too large: they stay unregistered by design).
    fn truth(&self) -> BTreeMap<String, Vec<u8>> {
        let draining = self.engine.draining();
        self.engine
            .containers()
            .iter()
            .filter(|c| !draining.contains(&c.id))
            .filter_map(
                |c| match record::desired(c, &self.selection, &self.prefix) {
                    Desired::Registered(r) => Some(r),
                    _ => None,
                },
            )
            .filter(|r| r.key.len() + r.value.len() <= super::cluster::MAX_REQUEST_BYTES)
            .map(|r| (r.key, r.value.into_bytes()))
            .collect()
    }

    fn too_large(&self) -> BTreeSet<String> {
        self.engine
            .containers()
            .iter()
            .filter_map(
                |c| match record::desired(c, &self.selection, &self.prefix) {
                    Desired::Registered(r) => Some(r),
                    _ => None,
                },
            )
            .filter(|r| r.key.len() + r.value.len() > super::cluster::MAX_REQUEST_BYTES)
            .map(|r| r.key)
            .collect()
    }

    fn record_truth(&mut self) {
        let truth = self.truth();
        let now = self.now();
        self.history.truth.push((now, truth));
    }

    fn prefix_now(&self) -> BTreeMap<String, Vec<u8>> {
        let state = self.cluster.lock();
        let prefix = self.prefix.as_str();
        state
            .kv
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, kv)| (key.clone(), kv.value.clone()))
            .collect()
    }

    fn start_agent(&mut self, slot: usize) {
        if self.agents[slot].is_some() {
            return;
        }
        let id = self.processes;
        self.processes += 1;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let store = SimStore::new(
            self.cluster.clone(),
            slot,
            id,
            self.machine(slot),
            self.prefix.clone(),
        );
        let seed = self.schedule.jitter_seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let agent = run_with(
            self.config(),
            self.engine.handle(self.engine_of(slot)),
            store,
            Metrics::new(),
            tokio::sync::watch::channel(Status::default()).0,
            Some(seed),
            async move {
                let _ = stopped.await;
            },
        );
        let cluster = self.cluster.clone();
        cluster.lock().running.insert(id);
        // A process runs until its agent returns (a stop) or it is killed.
        let task = tokio::task::spawn_local(async move {
            let outcome = agent.await;
            cluster.lock().running.remove(&id);
            outcome
        });
        self.cluster
            .trace(format!("Agent({id}) started in slot {slot}"));
        let now = self.now();
        self.history.lifetimes.insert(id, (slot, now, None));
        self.history.stimuli.push(now);
        self.agents[slot] = Some(Process { id, shutdown, task });
    }

    fn end_of_life(&mut self, id: usize) {
        let now = self.now();
        if let Some(life) = self.history.lifetimes.get_mut(&id) {
            life.2 = Some(now);
        }
        self.history.stimuli.push(now);
    }

    fn stop_agent(&mut self, slot: usize) {
        if let Some(process) = self.agents[slot].take() {
            let _ = process.shutdown.send(());
            self.history.stopped.insert(process.id);
            self.cluster.trace(format!("Agent({}) stopped", process.id));
            self.end_of_life(process.id);
            self.ended.push(process.task);
        }
    }

    fn kill_agent(&mut self, slot: usize) {
        if let Some(process) = self.agents[slot].take() {
            process.task.abort();
            self.cluster.lock().running.remove(&process.id);
            self.cluster.trace(format!("Agent({}) killed", process.id));
            self.end_of_life(process.id);
            self.ended.push(process.task);
        }
    }

    /// The engine agent slot `slot` follows: the one engine, but for the
    /// last slot in a schedule that gives it another (`other_engine`).
    pub(super) fn engine_of(&self, slot: usize) -> &'static str {
        engine_of(self.schedule.other_engine, slot)
    }

    /// The machine agent slot `slot` runs on: one for all slots (a
    /// standby beside the holder), or one each.
    pub(super) fn machine(&self, slot: usize) -> String {
        if self.schedule.one_machine {
            "sim-host".to_owned()
        } else {
            format!("sim-host-{slot}")
        }
    }

    fn fault_id(&mut self) -> u64 {
        self.next_fault += 1;
        self.next_fault
    }
}

/// The engine ID agent slot `slot` follows (see `Schedule::other_engine`).
pub fn engine_of(other_engine: bool, slot: usize) -> &'static str {
    if other_engine && slot == AGENT_SLOTS - 1 {
        OTHER_ENGINE_ID
    } else {
        ENGINE_ID
    }
}
