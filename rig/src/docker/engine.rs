//! The container engines the agent follows: Docker, and Podman serving the
//! Docker API (`podman system service`). Each is driven through its own CLI,
//! the way its operators drive it, and reached by the agent over its own
//! socket; the record's image is what that engine reports for the one image
//! the tests run.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::{deadlock, DockerError, CLI_TIMEOUT, DOCKER_SOCKET, IMAGE};
use crate::{runtime, wait_until, SLOW};

/// Where `podman system service` serves the Docker API (docs/production.md: With Podman).
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";
/// The image the tests run, as Podman names it: imported into Podman's own
/// storage (no registry), where an image without a registry is `localhost/`.
pub const PODMAN_IMAGE: &str = "localhost/busybox:latest";

/// A container engine: which CLI makes the containers, which socket the
/// agent follows, what the records of the test image look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    /// `docker` or `podman`: the tests' names and messages.
    pub fn name(self) -> &'static str {
        self.cli()
    }

    /// The CLI operators of this engine use.
    pub fn cli(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }

    /// The engine's Docker API socket.
    pub fn socket(self) -> &'static str {
        match self {
            Engine::Docker => DOCKER_SOCKET,
            Engine::Podman => PODMAN_SOCKET,
        }
    }

    /// The agent's `--docker-host` / `DOCKER_HOST` for this engine.
    pub fn docker_host(self) -> String {
        format!("unix://{}", self.socket())
    }

    /// The test image as `run` is given it on this engine.
    pub fn image(self) -> &'static str {
        match self {
            Engine::Docker => IMAGE,
            Engine::Podman => PODMAN_IMAGE,
        }
    }

    /// The `{image}` key segment (and the value's `image` field) of a
    /// container started from [`Engine::image`]: Docker keeps what was typed,
    /// Podman reports the image's full name, `localhost/…` (docs/records.md: What is
    /// written).
    pub fn record_image(self) -> &'static str {
        match self {
            Engine::Docker => IMAGE,
            Engine::Podman => "localhost::busybox:latest",
        }
    }

    /// The arguments of a `rm -f` that does not wait: Podman's `rm -f`
    /// stops the container first with the 10 s grace of `stop`, which a
    /// `sleep` as PID 1 (ignoring SIGTERM) always uses up; Docker kills.
    pub fn rm_f_args(self) -> &'static [&'static str] {
        match self {
            Engine::Docker => &["rm", "-f"],
            Engine::Podman => &["rm", "-f", "-t", "0"],
        }
    }

    /// Runs this engine's CLI and returns its trimmed stdout; fails if it
    /// fails or takes longer than two minutes (the command is killed then).
    /// A Docker command that hangs because dockerd deadlocked is run again
    /// once dockerd is restarted, at most twice (`deadlock`).
    pub fn try_cli(self, args: &[&str]) -> Result<String, DockerError> {
        runtime().block_on(self.run_cli(args))
    }

    async fn run_cli(self, args: &[&str]) -> Result<String, DockerError> {
        let subcommand = args.first().copied().unwrap_or_default().to_string();
        let cli = self.cli();
        let watched = self == Engine::Docker;
        let mut restarts = 0;
        loop {
            let dockerd = if watched {
                deadlock::current().await
            } else {
                Vec::new()
            };
            let may_run_again = watched && restarts < 2 && deadlock::may_run_again(&subcommand);
            let out = match self.run_once(args, &dockerd, watched).await {
                Attempt::Finished(out) => out,
                Attempt::Hung if may_run_again => {
                    restarts += 1;
                    continue;
                }
                // dockerd is restarted, so that the tests after this one
                // run; this command must not run twice.
                Attempt::Hung => return Err(DockerError::Timeout { cli, subcommand }),
                Attempt::TimedOut => return Err(DockerError::Timeout { cli, subcommand }),
                Attempt::Spawn(source) => return Err(DockerError::Spawn { cli, source }),
            };
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // dockerd went away under it: restarted for a deadlock while
            // this command was in flight.
            if may_run_again && deadlock::restarted_since(&dockerd).await {
                restarts += 1;
                continue;
            }
            if restarts > 0 && deadlock::done_before_the_restart(&subcommand, &stderr) {
                return Ok(String::new());
            }
            // dockerd is already removing it (a removal that another request
            // started; seen once with a container of 500 published ports):
            // done once it is gone.
            if subcommand == "rm"
                && stderr.contains("is already in progress")
                && self.wait_gone(&args[1..]).await
            {
                return Ok(String::new());
            }
            return Err(DockerError::Failed {
                cli,
                subcommand,
                status: out.status,
                stderr,
            });
        }
    }

    /// Waits up to the CLI timeout for the containers among `args` (those
    /// that are not flags) to be gone; whether they are.
    async fn wait_gone(self, args: &[&str]) -> bool {
        let ids: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| !a.starts_with('-') && a.parse::<u32>().is_err())
            .collect();
        let started = Instant::now();
        while started.elapsed() < CLI_TIMEOUT {
            let mut inspect = Command::new(self.cli());
            inspect
                .args(["inspect", "--format", "{{.Id}}"])
                .args(&ids)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            match inspect.output().await {
                Ok(out) if !out.status.success() && ids.len() == 1 => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    if stderr.contains("No such") || stderr.contains("no such") {
                        return true;
                    }
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// One run of the CLI; `watched`: while it lasts, dockerd's deadlock is
    /// looked for, and if found dockerd is restarted and the command
    /// reported hung.
    async fn run_once(self, args: &[&str], dockerd: &[u32], watched: bool) -> Attempt {
        let mut cmd = Command::new(self.cli());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = cmd.output();
        tokio::pin!(output);
        let started = Instant::now();
        loop {
            let left = CLI_TIMEOUT.saturating_sub(started.elapsed());
            let wait = if watched {
                deadlock::WATCH_AFTER.min(left)
            } else {
                left
            };
            match tokio::time::timeout(wait, &mut output).await {
                Ok(Ok(out)) => return Attempt::Finished(out),
                Ok(Err(source)) => return Attempt::Spawn(source),
                Err(_) if started.elapsed() >= CLI_TIMEOUT => return Attempt::TimedOut,
                // Dropping `output` kills the hung command.
                Err(_) if deadlock::recover(args.join(" ").as_str(), dockerd).await => {
                    return Attempt::Hung
                }
                Err(_) => {}
            }
        }
    }

    /// Runs this engine's CLI and returns its trimmed stdout, panicking on
    /// failure.
    pub fn cli_out(self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.cli()))
    }

    /// Panics unless the engine answers on its API socket and has the test
    /// image: these tests must not skip.
    pub fn require(self) {
        match self {
            Engine::Docker => super::require_docker(),
            Engine::Podman => require_podman(),
        }
    }

    /// The full id `sha256:<64 hex>` of an image.
    pub fn image_id(self, image: &str) -> String {
        let id = self.cli_out(&["image", "inspect", "--format", "{{.Id}}", image]);
        // Podman prints the bare hex; the agent sees `sha256:` over the API.
        if id.starts_with("sha256:") {
            id
        } else {
            format!("sha256:{id}")
        }
    }

    /// Whether the container is running, per `inspect`.
    pub fn is_running(self, id: &str) -> bool {
        self.cli_out(&["inspect", "--format", "{{.State.Running}}", id]) == "true"
    }

    /// Waits until the container is no longer running.
    pub fn wait_not_running(self, id: &str) {
        let ok = wait_until(SLOW, || !self.is_running(id));
        assert!(ok, "container {id} is still running");
    }
}

/// Podman's CLI and its API service, and the test image in its storage.
fn require_podman() {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        let hint = "run `bash scripts/setup-podman.sh`";
        let podman = Engine::Podman;
        if let Err(e) = podman.try_cli(&["version", "--format", "{{.Client.Version}}"]) {
            panic!("Podman is not available ({hint}): {e}");
        }
        let url = podman.docker_host();
        if let Err(e) = podman.try_cli(&["--remote", "--url", &url, "version"]) {
            panic!("Podman's API service does not answer on {url} ({hint}): {e}");
        }
        if let Err(e) = podman.try_cli(&["image", "exists", PODMAN_IMAGE]) {
            panic!("Podman has no {PODMAN_IMAGE} ({hint}): {e}");
        }
    });
}

/// How one run of a CLI command ended.
enum Attempt {
    Finished(std::process::Output),
    /// dockerd was deadlocked and has been restarted: run it again.
    Hung,
    TimedOut,
    Spawn(std::io::Error),
}
