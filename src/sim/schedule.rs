//! Schedules: timed steps of workload (container changes), faults (of the
//! engine, of the store, of the agents themselves) and foreign writes, as
//! proptest strategies, so that a failing schedule shrinks to a small one.

use std::time::Duration;

use proptest::prelude::*;

/// How many catalog containers a run has (see `engine::KINDS`).
pub const CONTAINERS: usize = 7;
/// Agent processes that may run for the one host: a holder and two
/// standbys, so that a hand-over leaves someone in line.
pub const AGENT_SLOTS: usize = 3;

/// What happens to one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    Start,
    Die,
    /// A die and a start at the same instant: the record key stays, the
    /// host port changes.
    Restart,
    Remove,
    Pause,
    Unpause,
    NetworkDisconnect,
    NetworkConnect,
    HealthFlip,
    /// `docker stop`, first half: the `kill` event with the stop signal
    /// (SIGTERM); the container runs on, draining, until a later `Die` (or
    /// the end of the schedule) ends it.
    Stop,
    /// `docker kill -s INT` of a container its restart policy starts again:
    /// `kill`, `die` and a new start at the same instant.
    KillRestart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineFault {
    /// Refuses every request; the event streams break.
    Down,
    /// Answers nothing (requests time out after 10 s); events wait.
    Hang,
    /// One container's inspect takes `delay` (≥ 10 s: times out).
    SlowInspect { container: usize, delay: Duration },
    /// Every event stream breaks (instant).
    DropSubscriptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// Agent `agent`'s connections are refused.
    Refused { agent: usize },
    /// Agent `agent`'s requests are lost (time out after 5 s).
    Blackhole { agent: usize },
    /// Agent `agent`'s requests take `delay`; beyond the client's 5 s
    /// timeout they are applied but fail.
    Slow { agent: usize, delay: Duration },
    /// The space quota is exceeded: puts and lease grants are refused.
    NoSpace,
    /// An operator revokes the leases of agent `agent` (instant).
    RevokeLease { agent: usize },
    /// The leases of agent `agent` expire now, as after a long partition
    /// the agent did not notice (instant).
    ExpireLease { agent: usize },
    /// The history is compacted up to now (instant).
    Compact,
    /// etcd cancels every watch (instant).
    CancelWatches,
}

/// A write by someone else under (or just beside) the host prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// Overwrites container `container`'s record key with a bogus value.
    Overwrite { container: usize },
    /// Deletes container `container`'s record key.
    Delete { container: usize },
    /// Writes a key no container backs.
    Junk,
    /// Writes a key of another host whose address has ours as a prefix.
    Neighbour,
    /// Writes so many large keys under our prefix that reading it takes
    /// several pages, some refused as too large and asked for again.
    Flood,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Container {
        index: usize,
        op: ContainerOp,
    },
    Engine {
        fault: EngineFault,
        lasting: Duration,
    },
    Store {
        fault: StoreFault,
        lasting: Duration,
    },
    Foreign(Foreign),
    /// Starts agent process `slot` if it is not running.
    StartAgent(usize),
    /// SIGTERM: it hands the host over and exits.
    StopAgent(usize),
    /// SIGKILL: it vanishes; its lease expires.
    KillAgent(usize),
    /// SIGKILL, and its supervisor starts it again at once on the same
    /// machine (a crash-restart).
    CrashRestart(usize),
}

/// A step `millis` after the previous one, for scripted schedules.
pub fn at(millis: u64, action: Action) -> Step {
    Step {
        after: Duration::from_millis(millis),
        action,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Simulated time since the previous step.
    pub after: Duration,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Which catalog containers run at the start.
    pub running: Vec<bool>,
    /// `--require-healthy`.
    pub require_healthy: bool,
    /// `--ttl 15` (records on the lease); `false`: `--ttl 0` (records on no
    /// lease, the lock on a lease of its own).
    pub records_on_lease: bool,
    /// Whether the agent slots run on one machine (each sees whether the
    /// others' processes run) or each on its own (none can tell).
    pub one_machine: bool,
    /// Whether the last agent slot's runs follow another engine that says
    /// it has the same containers (a cloned machine's, with its own engine
    /// ID) under the same host IP: a conflict, never a hand-over.
    pub other_engine: bool,
    /// Seeds the agents' retry jitter.
    pub jitter_seed: u64,
    pub steps: Vec<Step>,
}

fn millis(range: std::ops::Range<u64>) -> impl Strategy<Value = Duration> {
    range.prop_map(Duration::from_millis)
}

/// Short faults mostly, some longer than the lease TTL.
fn lasting() -> impl Strategy<Value = Duration> {
    prop_oneof![4 => millis(100..6_000), 1 => millis(6_000..40_000)]
}

fn container_op() -> impl Strategy<Value = ContainerOp> {
    use ContainerOp::*;
    prop_oneof![
        3 => Just(Start),
        2 => Just(Die),
        2 => Just(Restart),
        1 => Just(Remove),
        1 => Just(Pause),
        1 => Just(Unpause),
        1 => Just(NetworkDisconnect),
        1 => Just(NetworkConnect),
        2 => Just(HealthFlip),
        1 => Just(Stop),
        1 => Just(KillRestart),
    ]
}

fn engine_fault() -> impl Strategy<Value = EngineFault> {
    prop_oneof![
        Just(EngineFault::Down),
        Just(EngineFault::Hang),
        (0..CONTAINERS, millis(100..15_000))
            .prop_map(|(container, delay)| EngineFault::SlowInspect { container, delay }),
        Just(EngineFault::DropSubscriptions),
    ]
}

fn store_fault() -> impl Strategy<Value = StoreFault> {
    let agent = 0..AGENT_SLOTS;
    prop_oneof![
        2 => agent.clone().prop_map(|agent| StoreFault::Refused { agent }),
        1 => agent.clone().prop_map(|agent| StoreFault::Blackhole { agent }),
        1 => (agent.clone(), prop_oneof![3 => millis(50..4_000), 1 => millis(4_000..9_000)])
            .prop_map(|(agent, delay)| StoreFault::Slow { agent, delay }),
        1 => Just(StoreFault::NoSpace),
        1 => agent.clone().prop_map(|agent| StoreFault::RevokeLease { agent }),
        1 => agent.prop_map(|agent| StoreFault::ExpireLease { agent }),
        1 => Just(StoreFault::Compact),
        1 => Just(StoreFault::CancelWatches),
    ]
}

fn foreign() -> impl Strategy<Value = Foreign> {
    prop_oneof![
        (0..CONTAINERS).prop_map(|container| Foreign::Overwrite { container }),
        (0..CONTAINERS).prop_map(|container| Foreign::Delete { container }),
        Just(Foreign::Junk),
        Just(Foreign::Neighbour),
        Just(Foreign::Flood),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (0..CONTAINERS, container_op()).prop_map(|(index, op)| Action::Container { index, op }),
        2 => (engine_fault(), lasting()).prop_map(|(fault, lasting)| Action::Engine { fault, lasting }),
        3 => (store_fault(), lasting()).prop_map(|(fault, lasting)| Action::Store { fault, lasting }),
        2 => foreign().prop_map(Action::Foreign),
        1 => (0..AGENT_SLOTS).prop_map(Action::StartAgent),
        1 => (0..AGENT_SLOTS).prop_map(Action::StopAgent),
        1 => (0..AGENT_SLOTS).prop_map(Action::KillAgent),
        1 => (0..AGENT_SLOTS).prop_map(Action::CrashRestart),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let after =
        prop_oneof![3 => millis(0..200), 3 => millis(200..3_000), 1 => millis(3_000..20_000)];
    (after, action()).prop_map(|(after, action)| Step { after, action })
}

prop_compose! {
    /// Schedules of up to `max_steps` steps.
    pub fn schedule(max_steps: usize)(
        running in proptest::collection::vec(any::<bool>(), CONTAINERS),
        require_healthy in any::<bool>(),
        records_on_lease in prop_oneof![3 => Just(true), 1 => Just(false)],
        one_machine in any::<bool>(),
        other_engine in prop_oneof![4 => Just(false), 1 => Just(true)],
        jitter_seed in any::<u64>(),
        steps in proptest::collection::vec(step(), 0..=max_steps),
    ) -> Schedule {
        Schedule {
            running,
            require_healthy,
            records_on_lease,
            one_machine,
            other_engine,
            jitter_seed,
            steps,
        }
    }
}
