//! The agent under test (`rig::Agent`, its stderr in the run's log file),
//! seen through `/proc` as well: CPU time and memory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rig::docker::Engine;
use rig::{Agent, AgentOutput};

use crate::procfs;

/// The agent under test, its stderr in a log file; killed on drop.
pub struct AgentProcess {
    /// Behind a mutex: the phases look at it through shared references.
    agent: Mutex<Agent>,
    pid: u32,
    /// When it was spawned: the start of the start-up time.
    pub spawned: Instant,
    /// Its stderr, kept after the run (`target/bench/agent-run<i>.log`).
    log: PathBuf,
    /// The unit of `/proc/<pid>/stat`'s CPU times.
    ticks_per_sec: f64,
}

impl AgentProcess {
    pub fn spawn(binary: &Path, engine: Engine, log: &Path, args: &[&str]) -> Result<AgentProcess> {
        let ticks_per_sec = procfs::clock_ticks();
        let docker_host = engine.docker_host();
        let mut args = args.to_vec();
        args.extend(["--docker-host", &docker_host]);
        let output = AgentOutput::LogFile(log.to_path_buf());
        let spawned = Instant::now();
        let agent = Agent::spawn_binary(binary, &args, &[], output)
            .with_context(|| format!("spawn {} (cargo build --release)", binary.display()))?;
        Ok(AgentProcess {
            pid: agent.pid(),
            agent: Mutex::new(agent),
            spawned,
            log: log.to_path_buf(),
            ticks_per_sec,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_running(&self) -> bool {
        self.agent.lock().unwrap().is_running()
    }

    /// An error with the end of the agent's log if it has exited.
    pub fn ensure_running(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let lines = self.agent.lock().unwrap().lines();
        let tail = &lines[lines.len().saturating_sub(20)..];
        bail!(
            "the agent exited; last lines of {}:\n{}",
            self.log.display(),
            tail.join("\n")
        )
    }

    /// Lines of its log at level WARN or ERROR so far.
    pub fn warnings(&self) -> usize {
        self.agent.lock().unwrap().warnings().len()
    }

    pub fn cpu_seconds(&self) -> Result<f64> {
        procfs::cpu_seconds(self.pid, self.ticks_per_sec)
    }
}
