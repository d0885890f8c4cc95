//! Rootful Podman beside dockerd (`scripts/setup-podman.sh`): its
//! Docker-compatible socket, the `podman` CLI, and a test's Podman containers
//! and pods under the test's label, removed on drop. Every helper fails
//! loudly when Podman is missing: a Podman test never passes by skipping.

use std::process::Command;

use rig::docker::Engine;

/// The agent's `--docker-host` for Podman's Docker-compatible API.
pub fn podman_host() -> String {
    Engine::Podman.docker_host()
}

/// `podman ARGS...`; its trimmed stdout, or a panic naming its stderr.
pub fn podman(args: &[&str]) -> String {
    Engine::Podman.cli_out(args)
}

/// The host port Podman bound for `port` (`80/tcp`) of `id` on `host_ip`
/// (`""` for a wildcard binding, which Podman reports with an empty HostIp).
pub fn podman_host_port(id: &str, port: &str, host_ip: &str) -> String {
    let asked = if host_ip.is_empty() {
        "0.0.0.0"
    } else {
        host_ip
    };
    Engine::Podman.host_port(id, port, asked)
}

/// The Podman containers and pods of one test, told apart by its label
/// (the one of its `TestEnv`); all of them are removed on drop.
pub struct PodmanContainers {
    /// `KEY=VALUE`, given to every container and pod this starts.
    label: String,
}

impl PodmanContainers {
    pub fn new(label: &str) -> PodmanContainers {
        Engine::Podman.require();
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
