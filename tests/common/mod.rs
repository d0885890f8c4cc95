//! Shared harness of the integration tests: the development rig (`rig`, a
//! crate of this workspace that the benchmark shares: etcd processes and
//! helpers, the agent process, Docker containers, HTTP) re-exported, and
//! what only the tests need:
//!
//! - the agent binary cargo built for these tests (`AGENT_BIN`,
//!   `Agent::spawn`, `list`);
//! - `TestEnv`: a unique id, host IP and label, a private etcd and a guard
//!   over the test's containers. Its containers carry the label
//!   `docker-etcd-register.test=<id>` and its agent requires that label, so
//!   tests running in parallel on one Docker engine never see each other's
//!   containers;
//! - `expected_records`, which computes from Docker itself the exact records
//!   an agent must hold, in the agent's own record format;
//! - for fault injection, a `DockerRelay` (a unix-socket relay in front of
//!   the Docker socket that can be cut, restored or made to hold one
//!   request) and a frozen etcd (`relay_stall::FrozenEtcd`).
// Each test uses a part of the harness.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use rig::etcd::faults as etcd_faults;
pub use rig::*;

mod engines;
mod env;
pub mod lb;
pub mod markdown;
pub mod partition;
pub mod podman;
pub mod proxies;
mod records;
mod relay;
pub mod relay_stall;
pub mod rootless;

pub(crate) use engines::on_each_engine;
pub use env::TestEnv;
pub use records::{expected_records, expected_records_on, expected_value, record_key};
pub use relay::DockerRelay;

pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_docker-etcd-register");

/// `Agent::spawn`: the agent binary cargo built for these tests.
pub trait SpawnAgent {
    /// Spawns the agent with exactly these arguments and environment
    /// additions, its output echoed with its pid.
    fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Agent;
}

impl SpawnAgent for Agent {
    fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Agent {
        Agent::spawn_binary(Path::new(AGENT_BIN), args, envs, AgentOutput::Echo)
            .unwrap_or_else(|e| panic!("spawn {AGENT_BIN}: {e}"))
    }
}

/// The binary's `list` with `args`, talking to `endpoint` only (none of
/// the agent's variables of this environment leak in).
pub fn list_command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(AGENT_BIN);
    for key in AGENT_ENV {
        cmd.env_remove(key);
    }
    cmd.arg("list")
        .args(["--etcd-endpoints", endpoint])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs `list` and asserts that it succeeded.
pub fn list(endpoint: &str, args: &[&str]) -> Output {
    rig::process::output_ok(
        &mut list_command(endpoint, args),
        &format!("list {args:?}"),
        "cargo builds the binary",
    )
}

/// Runs the project's own set-up script `scripts/<name>` (which starts
/// whatever is not running: dockerd, Podman's services) and asserts that it
/// succeeded.
pub fn run_setup_script(name: &str) {
    let mut script = Command::new("bash");
    script
        .arg(format!("scripts/{name}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    rig::process::output_ok(&mut script, &format!("scripts/{name}"), "bash is missing");
}

/// A service a test stops (dockerd, Podman's API service), started again
/// with the project's own set-up script: by [`Restarter::restart`], and on
/// drop if it does not answer, so that a failing test leaves it running for
/// the tests after it.
pub struct Restarter {
    /// `setup.sh` or `setup-podman.sh`.
    pub script: &'static str,
    /// Whether the service answers.
    pub answers: fn() -> bool,
}

impl Restarter {
    pub fn restart(&self) {
        run_setup_script(self.script);
        assert!((self.answers)(), "not back after scripts/{}", self.script);
    }
}

impl Drop for Restarter {
    fn drop(&mut self) {
        if !(self.answers)() {
            self.restart();
        }
    }
}

/// Sends SIGTERM to `pids` and waits up to `timeout` for all of them to
/// exit; how long they took, or a panic naming `what`.
pub fn terminate(pids: &[u32], what: &str, timeout: Duration) -> Duration {
    assert!(!pids.is_empty(), "no {what} process found");
    for pid in pids {
        let status = Command::new("kill")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {pid} failed");
    }
    let killed = Instant::now();
    let gone = wait_until(timeout, || {
        pids.iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    assert!(
        gone,
        "{what} {pids:?} still running {:?} after SIGTERM",
        killed.elapsed()
    );
    killed.elapsed()
}

/// The process ids of the running dockerd processes.
pub fn dockerd_pids() -> Vec<u32> {
    let out = Command::new("pidof")
        .arg("dockerd")
        .output()
        .expect("run pidof");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}

/// A loopback address on a port of the tests' own, for `--metrics-addr`.
pub fn metrics_addr() -> String {
    format!("127.0.0.1:{}", test_port())
}
