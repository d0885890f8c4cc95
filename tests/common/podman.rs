//! Rootful Podman beside dockerd (`scripts/setup-podman.sh`): its
//! Docker-compatible socket, the `podman` CLI, and a test's Podman containers
//! and pods under the test's label, removed on drop. Every helper fails
//! loudly when Podman is missing: a Podman test never passes by skipping.

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

/// The Podman pods of one test, under the test's label (the one of its
/// `TestEnv`), removed with their containers on drop. Its other containers
/// are the `TestEnv`'s.
pub struct Pods {
    /// `KEY=VALUE`, given to every pod this creates.
    label: String,
}

impl Pods {
    pub fn new(label: &str) -> Pods {
        Engine::Podman.require();
        Pods {
            label: label.to_string(),
        }
    }

    /// `podman pod create --label <label> ARGS...`; the pod's id.
    pub fn create(&self, args: &[&str]) -> String {
        let pinned = rig::ports::pin_published(args);
        let mut full = vec!["pod", "create", "--label", &self.label];
        full.extend(pinned.iter().map(String::as_str));
        podman(&full)
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label);
        let Ok(listed) =
            Engine::Podman.try_cli(&["pod", "ps", "-q", "--no-trunc", "--filter", &filter])
        else {
            return;
        };
        for id in listed.split_whitespace() {
            if let Err(error) = Engine::Podman.try_cli(&["pod", "rm", "-f", "-t", "0", id]) {
                eprintln!("cleanup of Podman pod {id}: {error}");
            }
        }
    }
}
