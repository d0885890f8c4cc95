//! One run of the benchmark, from an empty etcd to a clean engine:
//! pre-started containers, the floor, start-up, a burst of starts and
//! removals, idle time, then the agent's memory and CPU.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use docker_etcd_register::record::HostPrefix;
use rig::docker::{parallel, Containers};
use rig::Etcd;
use tokio::runtime::Runtime;

use crate::agent::AgentProcess;
use crate::clock::Seen;
use crate::docker::{self, Engine, EngineEvent, EngineTimes, EventReader};
use crate::etcd::{self, KeySeen, WatchLog};
use crate::figures::{burst_figures, keys_per_revision, latency_figures};
use crate::procfs;
use crate::reference::{self, Reference, ReferenceStats};
use crate::report::{millis, Sample};

/// Label key of the benchmark's containers; the value is unique to a run.
pub const LABEL_KEY: &str = "docker-etcd-register.bench";
/// Sequential requests of each floor measurement.
const FLOOR_REQUESTS: usize = 200;
/// The agent replays the engine's last 2 s of events at start: the
/// pre-started containers are older than that when it starts.
const SETTLE: Duration = Duration::from_secs(3);
/// Quiet time between two phases.
const PAUSE: Duration = Duration::from_secs(1);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Settings {
    /// dockerd or Podman: whose CLI starts the containers, whose socket the
    /// agent and the benchmark follow.
    pub engine: rig::docker::Engine,
    pub containers: usize,
    /// Concurrent `docker run` / `docker rm -f` commands.
    pub workers: usize,
    pub burst: usize,
    pub idle: Duration,
    /// How long after the last command a container may still be registered
    /// or removed before it counts as lost.
    pub lost_after: Duration,
    pub agent: PathBuf,
    pub log_dir: PathBuf,
    /// Start of every run's label value (`{id}-{run}`), so that a wrapper
    /// can find what a killed benchmark left behind.
    pub id: String,
}

pub fn progress(message: &str) {
    eprintln!("bench: {message}");
}

/// Runs the benchmark once; everything it started is gone when it returns.
pub fn run_once(index: usize, settings: &Settings, rt: &Runtime) -> Result<Sample> {
    let mut run = Run::start(index, settings, rt)?;
    let (existing, reference) = run.prestart()?;
    run.measure_floor(&existing[0])?;
    let (agent, watch) = run.start_agent(&existing)?;
    let burst = run.burst(&agent, &watch)?;
    run.idle(&agent)?;
    drop(agent);
    run.remove_prestarted(&existing, reference)?;
    run.latencies(&existing, &burst, &watch);
    run.progress("cleaning up");
    Ok(run.sample)
}

/// What one run holds; dropping it removes the run's containers, stops its
/// event reader and its etcd.
struct Run<'a> {
    /// The run's containers (its label), removed first on drop.
    containers: Containers,
    index: usize,
    settings: &'a Settings,
    rt: &'a Runtime,
    label: String,
    host_ip: String,
    events: EventReader,
    /// Sees the reference registrar's keys.
    reference_watch: WatchLog,
    etcd: Etcd,
    sample: Sample,
}

impl<'a> Run<'a> {
    fn start(index: usize, settings: &'a Settings, rt: &'a Runtime) -> Result<Run<'a>> {
        let label = format!("{LABEL_KEY}={}-{index}", settings.id);
        let etcd = Etcd::try_start()?;
        let reference_watch =
            rt.block_on(etcd::watch_prefix(&etcd.endpoint(), reference::PREFIX))?;
        Ok(Run {
            containers: Containers::with_label_on(settings.engine, label.clone()),
            index,
            settings,
            rt,
            host_ip: format!("127.{}.{}.1", 1 + std::process::id() % 250, index % 256),
            events: EventReader::start(rt.handle(), settings.engine, &label, unix_secs())?,
            label,
            reference_watch,
            etcd,
            sample: Sample::default(),
        })
    }

    fn progress(&self, message: &str) {
        progress(&format!("run {}: {message}", self.index));
    }

    /// Starts the containers that exist before the agent, with the reference
    /// registrar following them.
    fn prestart(&mut self) -> Result<(Vec<String>, ReferenceStats)> {
        let count = self.settings.containers;
        self.progress(&format!(
            "pre-starting {count} containers (reference registrar running)"
        ));
        let reference = Reference::start(&self.events, self.rt, &self.etcd.endpoint())?;
        let existing = start_containers(&self.containers, count, self.settings.workers)?;
        wait_for(self.settings.lost_after, || {
            settled(Phase::Start, &existing, &self.events, &self.reference_watch)
        });
        Ok((existing, reference.stop()?))
    }

    /// Raw Docker inspect and etcd put latency, before the agent runs.
    fn measure_floor(&mut self, id: &str) -> Result<()> {
        let started = Instant::now();
        let inspects = millis(
            &Engine::connect(self.rt.handle(), self.settings.engine)
                .time_inspects(id, FLOOR_REQUESTS)?,
        );
        let puts = self
            .rt
            .block_on(etcd::time_puts(&self.etcd.endpoint(), FLOOR_REQUESTS))?;
        self.sample.set_distribution("docker_inspect", &inspects);
        self.sample.set_distribution("etcd_put", &millis(&puts));
        thread::sleep(SETTLE.saturating_sub(started.elapsed()));
        Ok(())
    }

    /// Spawns the agent and measures its start-up over `existing`.
    fn start_agent(&mut self, existing: &[String]) -> Result<(AgentProcess, WatchLog)> {
        let prefix = HostPrefix::new("/registered", self.host_ip.parse()?)
            .as_str()
            .to_owned();
        let endpoint = self.etcd.endpoint();
        let watch = self.rt.block_on(etcd::watch_prefix(&endpoint, &prefix))?;
        let log = self
            .settings
            .log_dir
            .join(format!("agent-run{}.log", self.index));
        let args = [
            "--host-ip",
            &self.host_ip,
            "--etcd-endpoints",
            &endpoint,
            "--require-label",
            &self.label,
        ];
        let agent = AgentProcess::spawn(&self.settings.agent, self.settings.engine, &log, &args)?;
        measure_startup(&mut self.sample, &agent, &watch, existing)?;
        thread::sleep(PAUSE);
        Ok((agent, watch))
    }

    /// Starts, then removes, the burst's containers; their ids.
    fn burst(&mut self, agent: &AgentProcess, watch: &WatchLog) -> Result<Vec<String>> {
        let s = self.settings;
        self.progress(&format!("burst of {} starts", s.burst));
        let burst = start_containers(&self.containers, s.burst, s.workers)?;
        wait_for(s.lost_after, || {
            settled(Phase::Start, &burst, &self.events, watch)
        });
        thread::sleep(PAUSE);
        self.progress(&format!("removing the {} burst containers", s.burst));
        remove_containers(s.engine, &burst, s.workers)?;
        wait_for(s.lost_after, || {
            settled(Phase::Die, &burst, &self.events, watch)
        });
        agent.ensure_running()?;
        Ok(burst)
    }

    /// CPU while nothing happens, then the agent's totals.
    fn idle(&mut self, agent: &AgentProcess) -> Result<()> {
        self.progress(&format!("idle for {:?}", self.settings.idle));
        thread::sleep(PAUSE);
        let before = agent.cpu_seconds()?;
        thread::sleep(self.settings.idle);
        self.sample.set("idle_cpu_s", agent.cpu_seconds()? - before);
        self.sample.set("cpu_s", agent.cpu_seconds()?);
        self.sample
            .set("peak_rss_mib", procfs::peak_rss_mib(agent.pid())?);
        self.sample.set("agent_warnings", agent.warnings() as f64);
        agent.ensure_running()
    }

    /// Removes the pre-started containers, with the reference registrar
    /// following them (the agent is gone by now).
    fn remove_prestarted(&mut self, existing: &[String], at_start: ReferenceStats) -> Result<()> {
        self.progress("removing the pre-started containers (reference registrar running)");
        let reference = Reference::start(&self.events, self.rt, &self.etcd.endpoint())?;
        remove_containers(self.settings.engine, existing, self.settings.workers)?;
        wait_for(self.settings.lost_after, || {
            settled(Phase::Die, existing, &self.events, &self.reference_watch)
        });
        let failed = at_start.failed + reference.stop()?.failed;
        if failed > 0 {
            self.progress(&format!("the reference registrar failed {failed} times"));
        }
        self.sample
            .set_distribution("ref_inspect", &millis(&at_start.inspects));
        self.sample
            .set_distribution("ref_put", &millis(&at_start.puts));
        Ok(())
    }

    /// Event → watch figures of the agent (burst) and of the reference
    /// registrar (pre-started containers).
    fn latencies(&mut self, existing: &[String], burst: &[String], watch: &WatchLog) {
        let (events, sample) = (&self.events, &mut self.sample);
        pair_figures(sample, "start", Phase::Start, burst, events, watch);
        pair_figures(sample, "die", Phase::Die, burst, events, watch);
        let reference = &self.reference_watch;
        pair_figures(
            sample,
            "ref_start",
            Phase::Start,
            existing,
            events,
            reference,
        );
        pair_figures(sample, "ref_die", Phase::Die, existing, events, reference);
        burst_figures(sample, burst, events, watch);
    }
}

/// Starts (the key appears) or removals (the key goes).
#[derive(Clone, Copy)]
enum Phase {
    Start,
    Die,
}

impl Phase {
    fn event(self, times: &EngineTimes) -> Option<EngineEvent> {
        match self {
            Phase::Start => times.start,
            Phase::Die => times.die,
        }
    }

    fn seen(self, key: &KeySeen) -> Option<Seen> {
        match self {
            Phase::Start => key.put,
            Phase::Die => key.deleted,
        }
    }
}

/// Every container of `ids` has its engine event, and its key is there
/// (`Start`) or gone (`Die`; or never was).
fn settled(phase: Phase, ids: &[String], events: &EventReader, watch: &WatchLog) -> bool {
    let done = |k: &KeySeen| match phase {
        Phase::Start => k.put.is_some(),
        Phase::Die => k.put.is_none() || k.deleted.is_some(),
    };
    watch.count(ids, done) == ids.len()
        && ids
            .iter()
            .all(|id| phase.event(&events.times(id)).is_some())
}

// ----------------------------------------------------------------- phases

/// Spawn → the watch has seen the keys of all `existing` containers.
fn measure_startup(
    sample: &mut Sample,
    agent: &AgentProcess,
    watch: &WatchLog,
    existing: &[String],
) -> Result<()> {
    let all_seen = wait_for(STARTUP_TIMEOUT, || {
        watch.count(existing, |k| k.put.is_some()) == existing.len() || !agent.is_running()
    });
    agent.ensure_running()?;
    if !all_seen {
        bail!(
            "start-up: only {} of {} containers registered after {STARTUP_TIMEOUT:?}",
            watch.count(existing, |k| k.put.is_some()),
            existing.len()
        );
    }
    let puts: Vec<_> = existing.iter().filter_map(|id| watch.get(id).put).collect();
    let last = puts.iter().map(|p| p.at).max().context("no container")?;
    sample.set(
        "startup_s",
        last.duration_since(agent.spawned).as_secs_f64(),
    );
    sample.set(
        "startup_keys_per_write",
        keys_per_revision(puts.iter().map(|p| p.revision)),
    );
    Ok(())
}

/// Engine event → watch latencies of one phase over `ids`, under `name`.
fn pair_figures(
    sample: &mut Sample,
    name: &str,
    phase: Phase,
    ids: &[String],
    events: &EventReader,
    watch: &WatchLog,
) {
    let pairs = ids
        .iter()
        .filter_map(|id| Some((phase.event(&events.times(id))?, phase.seen(&watch.get(id))?)));
    latency_figures(sample, name, pairs.collect());
}

// ---------------------------------------------------------------- helpers

/// `count` labelled containers started `workers`-way; their ids.
fn start_containers(containers: &Containers, count: usize, workers: usize) -> Result<Vec<String>> {
    parallel(count, workers, |_| docker::run_container(containers))
}

/// `docker rm -f`, `workers`-way.
fn remove_containers(engine: rig::docker::Engine, ids: &[String], workers: usize) -> Result<()> {
    Ok(rig::docker::remove_on(engine, ids, workers)?)
}

/// Polls `cond` every 5 ms until it holds (true) or `timeout` has passed.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
