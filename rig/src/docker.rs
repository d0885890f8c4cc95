//! The container engine as an operator uses it: its CLI (so that what the
//! agent sees was made the ordinary way), what its `inspect` says of a
//! container (`ports`), and (`containers`) labelled containers removed on
//! drop. `engine` tells Docker from Podman; the free functions here are
//! Docker's, the default of every test.

use std::sync::OnceLock;
use std::time::Duration;

mod containers;
mod deadlock;
mod engine;
mod ports;

pub use containers::{
    parallel, remove, remove_on, run_web_backend, Containers, TagGuard, LABEL_KEY,
};
pub use engine::{Engine, PODMAN_IMAGE, PODMAN_SOCKET};
pub use ports::{bindings, host_port, Binding};

pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The one image the tests and the benchmark run.
pub const IMAGE: &str = "busybox:latest";
/// Longest a `docker` command may take: a command that takes longer means
/// the engine is stuck, and a stuck command must fail, not hang.
pub(crate) const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the engine may stop answering, and what to do about it.
pub const HUNG: &str = "dockerd may be deadlocked (Docker 20.10's networking can deadlock when \
    containers come and go quickly, moby/moby#42545): look for `semacquire` in the goroutine \
    dump `kill -USR1 $(pidof dockerd)` writes to /var/run/docker/, and restart dockerd \
    (the rig restarts it itself when it finds the deadlock's goroutine in such a dump)";

/// Why an engine's CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("run the {cli} CLI: {source}")]
    Spawn {
        cli: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{cli} {subcommand} did not finish within {CLI_TIMEOUT:?}; {HUNG}")]
    Timeout {
        cli: &'static str,
        subcommand: String,
    },
    #[error("{cli} {subcommand} failed ({status}): {stderr}")]
    Failed {
        cli: &'static str,
        subcommand: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("run printed {0:?}, not a container id")]
    NotAnId(String),
}

/// Runs the `docker` CLI and returns its trimmed stdout; fails if it fails
/// or takes longer than two minutes (the command is killed then).
pub fn try_docker(args: &[&str]) -> Result<String, DockerError> {
    Engine::Docker.try_cli(args)
}

/// Runs the `docker` CLI and returns its trimmed stdout, panicking on failure.
pub fn docker(args: &[&str]) -> String {
    Engine::Docker.cli_out(args)
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

/// The full id `sha256:<64 hex>` of an image, per Docker.
pub fn image_id(image: &str) -> String {
    Engine::Docker.image_id(image)
}

/// Whether the container is running, per `docker inspect`.
pub fn is_running(id: &str) -> bool {
    Engine::Docker.is_running(id)
}

/// Waits until the container is no longer running.
pub fn wait_not_running(id: &str) {
    Engine::Docker.wait_not_running(id)
}
