//! Rootful Podman beside dockerd (`scripts/setup-podman.sh`): its
//! Docker-compatible socket, the `podman` CLI, and a test's Podman containers
//! and pods under the test's label, removed on drop. Every helper fails
//! loudly when Podman is missing: a Podman test never passes by skipping.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

/// Podman's Docker-compatible API, as `scripts/setup-podman.sh` starts it.
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";
/// The agent's `--docker-host` for it.
pub const PODMAN_HOST: &str = "unix:///run/podman/podman.sock";
/// The image `scripts/setup-podman.sh` builds FROM scratch.
pub const PODMAN_IMAGE: &str = "localhost/busybox:latest";

/// Panics unless `podman` runs and its API socket answers `_ping`.
pub fn require_podman() {
    let version = Command::new("podman").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|out| out.status.success()),
        "podman is missing ({version:?}): run scripts/setup-podman.sh as root"
    );
    let answer = ping();
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "Podman's API on {PODMAN_SOCKET} does not answer _ping ({answer:?}): \
         run scripts/setup-podman.sh as root"
    );
}

/// The raw answer of `GET /_ping` on the socket, or the error as text.
fn ping() -> String {
    let exchange = || -> std::io::Result<String> {
        let mut stream = UnixStream::connect(PODMAN_SOCKET)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    exchange().unwrap_or_else(|e| e.to_string())
}

/// `podman ARGS...`; its trimmed stdout, or a panic naming its stderr.
pub fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run podman {args:?}: {e}"));
    assert!(
        out.status.success(),
        "podman {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host port Podman bound for `port` (`80/tcp`) of `id` on `host_ip`
/// (`""` for a wildcard binding, which Podman reports with an empty HostIp).
pub fn podman_host_port(id: &str, port: &str, host_ip: &str) -> String {
    let format = format!(
        "{{{{range (index .NetworkSettings.Ports \"{port}\")}}}}{{{{.HostIP}}}}={{{{.HostPort}}}} {{{{end}}}}"
    );
    let bindings = podman(&["inspect", "--format", &format, id]);
    bindings
        .split_whitespace()
        .find_map(|binding| {
            let (ip, public) = binding.split_once('=')?;
            (ip == host_ip).then(|| public.to_string())
        })
        .unwrap_or_else(|| panic!("{id} binds no {port} on {host_ip:?}: {bindings}"))
}

/// The Podman containers and pods of one test, told apart by its label
/// (the one of its `TestEnv`); all of them are removed on drop.
pub struct PodmanContainers {
    /// `KEY=VALUE`, given to every container and pod this starts.
    label: String,
}

impl PodmanContainers {
    pub fn new(label: &str) -> PodmanContainers {
        require_podman();
        PodmanContainers {
            label: label.to_string(),
        }
    }

    /// `podman run -d --label <label> ARGS...`; the full container id.
    pub fn run(&self, args: &[&str]) -> String {
        let mut full = vec!["run", "-d", "--label", &self.label];
        full.extend_from_slice(args);
        podman(&full).lines().last().unwrap_or_default().to_string()
    }

    /// `podman pod create --label <label> ARGS...`; the pod's id.
    pub fn create_pod(&self, args: &[&str]) -> String {
        let mut full = vec!["pod", "create", "--label", &self.label];
        full.extend_from_slice(args);
        podman(&full)
    }

    fn cleanup(&self) {
        let filter = format!("label={}", self.label);
        for kind in [["pod", "ps"], ["container", "ps"]] {
            let mut list: Vec<&str> = kind.to_vec();
            list.extend(["-q", "--no-trunc", "--filter", &filter]);
            if kind[0] == "container" {
                list.push("-a");
            }
            let Ok(out) = Command::new("podman").args(&list).output() else {
                continue;
            };
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let removed = Command::new("podman")
                    .args([kind[0], "rm", "-f", "-t", "0", id])
                    .output();
                if !removed.as_ref().is_ok_and(|out| out.status.success()) {
                    eprintln!("cleanup of Podman {} {id}: {removed:?}", kind[0]);
                }
            }
        }
    }
}

impl Drop for PodmanContainers {
    fn drop(&mut self) {
        self.cleanup();
    }
}
