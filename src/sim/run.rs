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

use super::cluster::{Actor, Cluster, Effect, Reach, Write};
use super::engine::{container_id, SimEngine};
use super::schedule::{
    Action, ContainerOp, EngineFault, Foreign, Schedule, StoreFault, AGENT_SLOTS, CONTAINERS,
};
use super::store::SimStore;
use crate::agent::{run_with, Outcome};
use crate::config::{Config, EtcdSecurity, LogFormat};
use crate::container::Selection;
use crate::metrics::Metrics;
use crate::record::{self, Desired, HostPrefix};

/// The agents' `--ttl`.
pub const TTL: Duration = Duration::from_secs(15);
/// How long after the faults stop the prefix must equal the truth.
pub const CONVERGENCE: Duration = Duration::from_secs(30 + 15);
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
    /// When each lease ended, and whose it was.
    pub lease_ends: Vec<(Duration, Option<usize>)>,
    /// Tasks that panicked.
    pub panics: u32,
    pub prefix: HostPrefix,
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
    if world.agents.iter().all(Option::is_none) {
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
        lease_ends: state.lease_ends.clone(),
        final_prefix,
        final_truth,
        final_too_large,
        panics,
        prefix: world.prefix.clone(),
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
            resync: Some(Duration::from_secs(300)),
            docker_host: "unix:///var/run/docker.sock".into(),
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
        self.engine
            .containers()
            .iter()
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
        let store = SimStore::new(self.cluster.clone(), slot, id, self.prefix.clone());
        let seed = self.schedule.jitter_seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let task = tokio::task::spawn_local(run_with(
            self.config(),
            self.engine.handle(),
            store,
            Metrics::new(),
            Some(seed),
            async move {
                let _ = stopped.await;
            },
        ));
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
            self.cluster.trace(format!("Agent({}) killed", process.id));
            self.end_of_life(process.id);
            self.ended.push(process.task);
        }
    }

    fn fault_id(&mut self) -> u64 {
        self.next_fault += 1;
        self.next_fault
    }

    fn act(&mut self, action: Action) {
        let now = self.now();
        self.history.stimuli.push(now);
        match action {
            Action::Container { index, op } => {
                if op == ContainerOp::Restart {
                    self.engine.operate(index, ContainerOp::Restart);
                    // The record was due to go in between: the truth
                    // passes through its absence.
                    let mut between = self.truth();
                    between.remove(&self.record_key(index));
                    self.history.truth.push((now, between));
                } else {
                    self.engine.operate(index, op);
                }
                self.record_truth();
            }
            Action::Engine { fault, lasting } => {
                let id = self.fault_id();
                self.engine.fault(id, fault);
                let lasting = match fault {
                    EngineFault::DropSubscriptions => Duration::ZERO,
                    _ => lasting,
                };
                self.history.engine_faults.push((now, now + lasting));
                let engine = self.engine.clone();
                tokio::task::spawn_local(async move {
                    sleep(lasting).await;
                    engine.heal(id);
                });
            }
            Action::Store { fault, lasting } => self.store_fault(fault, lasting),
            Action::Foreign(foreign) => self.foreign(foreign),
            Action::StartAgent(slot) => self.start_agent(slot),
            Action::StopAgent(slot) => self.stop_agent(slot),
            Action::KillAgent(slot) => self.kill_agent(slot),
        }
    }

    fn store_fault(&mut self, fault: StoreFault, lasting: Duration) {
        let now = self.now();
        let id = self.fault_id();
        let (slot, reach) = match fault {
            StoreFault::Refused { agent } => (Some(agent), Reach::Refused),
            StoreFault::Blackhole { agent } => (Some(agent), Reach::Blackhole),
            StoreFault::Slow { agent, delay } => (Some(agent), Reach::Slow(delay)),
            StoreFault::NoSpace => {
                self.cluster.set_nospace(id, true);
                self.history.store_faults.push((None, now, now + lasting));
                self.heal_later(id, lasting);
                return;
            }
            StoreFault::RevokeLease { agent } | StoreFault::ExpireLease { agent } => {
                let processes: Vec<usize> = self.agents[agent].iter().map(|p| p.id).collect();
                for process in processes {
                    for lease in self.cluster.leases_of(process) {
                        self.cluster.end_lease(lease, Actor::Foreign);
                    }
                }
                return;
            }
            StoreFault::Compact => return self.cluster.compact(),
            StoreFault::CancelWatches => return self.cluster.cancel_watches(),
        };
        self.cluster.add_reach(slot.unwrap_or(0), id, reach);
        self.history.store_faults.push((slot, now, now + lasting));
        self.heal_later(id, lasting);
    }

    fn heal_later(&self, id: u64, lasting: Duration) {
        let cluster = self.cluster.clone();
        tokio::task::spawn_local(async move {
            sleep(lasting).await;
            cluster.heal(id);
        });
    }

    /// Container `index`'s record key, whether or not it has a record.
    fn record_key(&self, index: usize) -> String {
        let id = container_id(index);
        let kind = super::engine::KINDS[index % super::engine::KINDS.len()];
        let image = format!("sim/{kind:?}:1").to_ascii_lowercase();
        let image_id = format!("sha256:{:064x}", kind as u64 + 1);
        let segment = crate::image::key_segment(&image, &image_id);
        format!("{}{segment}/{id}", self.prefix.as_str())
    }

    fn foreign(&mut self, foreign: Foreign) {
        let write = match foreign {
            Foreign::Overwrite { container } => {
                Write::Put(self.record_key(container), b"[]".to_vec())
            }
            Foreign::Delete { container } => Write::Delete(self.record_key(container)),
            Foreign::Junk => {
                self.junk += 1;
                let key = format!("{}junk::1/{:064x}", self.prefix.as_str(), self.junk);
                Write::Put(key, b"[]".to_vec())
            }
            Foreign::Neighbour => Write::Put(
                "/registered/10.0.0.50/other::1/abc".to_owned(),
                b"[]".to_vec(),
            ),
        };
        let _ = self.cluster.txn(Actor::Foreign, &[write], 0);
    }

    fn heal_all(&mut self) {
        self.engine.heal_all();
        self.cluster.heal_all();
        let now = self.now();
        for window in &mut self.history.engine_faults {
            window.1 = window.1.min(now);
        }
        for window in &mut self.history.store_faults {
            window.2 = window.2.min(now);
        }
        self.cluster.trace("faults healed".into());
    }
}
