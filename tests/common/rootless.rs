//! Rootless Podman (`scripts/setup-podman.sh`): the API service of the
//! unprivileged user `der-rootless` on /run/user/<uid>/podman/podman.sock,
//! driven from root with `podman --url`, so the tests never switch users;
//! and a test's rootless containers under the test's label, removed on drop.
//! Every helper fails loudly when rootless Podman is missing: a rootless
//! test never passes by skipping.

use std::process::Command;

use rig::docker::Engine;
use std::time::Duration;

/// The user `scripts/setup-podman.sh` runs rootless Podman as.
pub const ROOTLESS_USER: &str = "der-rootless";

/// The rootless user's API socket, `/run/user/<uid>/podman/podman.sock`;
/// panics when the user does not exist or its service does not answer.
pub fn rootless_socket() -> String {
    let out = Command::new("id")
        .args(["-u", ROOTLESS_USER])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "user {ROOTLESS_USER} is missing: run scripts/setup-podman.sh as root"
    );
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let socket = format!("/run/user/{uid}/podman/podman.sock");
    let url = format!("unix://{socket}");
    if let Err(error) = Engine::Podman.try_cli(&["--remote", "--url", &url, "version"]) {
        panic!(
            "rootless Podman's API on {socket} does not answer ({error}): \
             run scripts/setup-podman.sh as root"
        );
    }
    socket
}

/// The rootless service of one test: its socket and the test's label.
pub struct RootlessPodman {
    /// `unix:///run/user/<uid>/podman/podman.sock`: the agent's
    /// `--docker-host` and the CLI's `--url`.
    pub url: String,
    /// `KEY=VALUE`, given to every container this starts.
    label: String,
}

impl RootlessPodman {
    /// Panics unless the rootless service answers.
    pub fn new(label: &str) -> RootlessPodman {
        RootlessPodman {
            url: format!("unix://{}", rootless_socket()),
            label: label.to_string(),
        }
    }

    /// `podman --url <url> ARGS...`; its trimmed stdout, or a panic naming
    /// its stderr.
    pub fn podman(&self, args: &[&str]) -> String {
        let mut podman = Command::new("podman");
        podman.arg("--url").arg(&self.url).args(args);
        let what = format!("podman --url {} {args:?}", self.url);
        let out =
            rig::process::output_ok(&mut podman, &what, "scripts/setup-podman.sh installs it");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `podman run -d --label <label> ARGS...`; the full container id.
    pub fn run(&self, args: &[&str]) -> String {
        let pinned = rig::ports::pin_published(args);
        let mut full = vec!["run", "-d", "--label", &self.label];
        full.extend(pinned.iter().map(String::as_str));
        self.podman(&full)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    }

    /// The host port the rootless engine reports for `port` (`80/tcp`) of
    /// `id` on `host_ip` (`""` for a wildcard binding).
    pub fn host_port(&self, id: &str, port: &str, host_ip: &str) -> String {
        let format = format!(
            "{{{{range (index .NetworkSettings.Ports \"{port}\")}}}}{{{{.HostIP}}}}={{{{.HostPort}}}} {{{{end}}}}"
        );
        let bindings = self.podman(&["inspect", "--format", &format, id]);
        bindings
            .split_whitespace()
            .find_map(|binding| {
                let (ip, public) = binding.split_once('=')?;
                (ip == host_ip).then(|| public.to_string())
            })
            .unwrap_or_else(|| panic!("{id} binds no {port} on {host_ip:?}: {bindings}"))
    }

    fn cleanup(&self) {
        let filter = format!("label={}", self.label);
        let listed = Command::new("podman")
            .args(["--url", &self.url, "ps", "-a", "-q", "--no-trunc"])
            .args(["--filter", &filter])
            .output();
        let Ok(listed) = listed else { return };
        for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            let removed = Command::new("podman")
                .args(["--url", &self.url, "rm", "-f", "-t", "0", id])
                .output();
            if !removed.as_ref().is_ok_and(|out| out.status.success()) {
                eprintln!("cleanup of rootless Podman container {id}: {removed:?}");
            }
        }
    }
}

impl Drop for RootlessPodman {
    fn drop(&mut self) {
        self.cleanup();
    }
}
