//! Docker as an operator uses it: the `docker` CLI (so that what the agent
//! sees was made the ordinary way), what `docker inspect` says of a
//! container, and (`containers`) labelled containers removed on drop.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::Command;

use crate::{runtime, wait_until, SLOW};

mod containers;

pub use containers::{parallel, remove, Containers, TagGuard, LABEL_KEY};

pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The one image the tests and the benchmark run.
pub const IMAGE: &str = "busybox:latest";
/// Longest a `docker` command may take: a command that takes longer means
/// the engine is stuck, and a stuck command must fail, not hang.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the engine may stop answering, and what to do about it.
pub const HUNG: &str = "dockerd may be deadlocked (Docker 20.10's networking can deadlock when \
    containers come and go quickly, moby/moby#42545): look for `semacquire` in the goroutine \
    dump `kill -USR1 $(pidof dockerd)` writes to /var/run/docker/, and restart dockerd";

/// Why a `docker` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("run the docker CLI: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("docker {subcommand} did not finish within {CLI_TIMEOUT:?}; {HUNG}")]
    Timeout { subcommand: String },
    #[error("docker {subcommand} failed ({status}): {stderr}")]
    Failed {
        subcommand: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("docker run printed {0:?}, not a container id")]
    NotAnId(String),
}

/// Runs the `docker` CLI and returns its trimmed stdout; fails if it fails
/// or takes longer than two minutes (the command is killed then).
pub fn try_docker(args: &[&str]) -> Result<String, DockerError> {
    let subcommand = args.first().copied().unwrap_or_default().to_string();
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = runtime()
        .block_on(async { tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await })
        .map_err(|_| DockerError::Timeout {
            subcommand: subcommand.clone(),
        })?
        .map_err(DockerError::Spawn)?;
    if !out.status.success() {
        return Err(DockerError::Failed {
            subcommand,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs the `docker` CLI and returns its trimmed stdout, panicking on failure.
pub fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

/// Panics unless the Docker engine answers: these tests must not skip.
pub fn require_docker() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        if let Err(e) = try_docker(&["info", "--format", "{{.ServerVersion}}"]) {
            panic!("Docker is not available (run `bash scripts/setup.sh`): {e}");
        }
        docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
    });
}

/// The full id `sha256:<64 hex>` of an image.
pub fn image_id(image: &str) -> String {
    docker(&["image", "inspect", "--format", "{{.Id}}", image])
}

/// Whether the container is running, per `docker inspect`.
pub fn is_running(id: &str) -> bool {
    docker(&["inspect", "--format", "{{.State.Running}}", id]) == "true"
}

/// Waits until the container is no longer running.
pub fn wait_not_running(id: &str) {
    let ok = wait_until(SLOW, || {
        docker(&["inspect", "--format", "{{.State.Running}}", id]) == "false"
    });
    assert!(ok, "container {id} is still running");
}

/// One published binding of a container as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// As Docker reports it: `0.0.0.0`, `::` or an address of the host.
    pub host_ip: String,
    pub host_port: String,
    /// `80/tcp`
    pub port: String,
}

/// The published bindings of a container from `docker inspect`.
pub fn bindings(id: &str) -> Vec<Binding> {
    let json = docker(&["inspect", "--format", "{{json .NetworkSettings.Ports}}", id]);
    let ports: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut out = Vec::new();
    if let Some(map) = ports.as_object() {
        for (port, list) in map {
            for b in list.as_array().into_iter().flatten() {
                out.push(Binding {
                    host_ip: b["HostIp"].as_str().unwrap_or_default().to_string(),
                    host_port: b["HostPort"].as_str().unwrap_or_default().to_string(),
                    port: port.clone(),
                });
            }
        }
    }
    out
}

/// The host port Docker published for `port` (`80/tcp`) on `host_ip`.
pub fn host_port(id: &str, port: &str, host_ip: &str) -> String {
    let all = bindings(id);
    all.iter()
        .find(|b| b.port == port && b.host_ip == host_ip)
        .unwrap_or_else(|| panic!("{id} has no binding {host_ip} -> {port}: {all:?}"))
        .host_port
        .clone()
}
