//! Load balancers for `tests/render.rs` and `tests/proxies.rs`: the
//! binary's `render` as a child process, Debian's haproxy and nginx as plain
//! processes on the test's own loopback ports (each in a process group of
//! its own, killed whole on drop), backends that answer HTTP with their
//! hostname, and a client loop.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{http_get, Agent, AgentOutput, Containers, AGENT_BIN};

/// The shipped examples, used as they are.
pub fn example(relative: &str) -> PathBuf {
    rig::proxies::examples().join(relative)
}

/// `render` of `template` into `out` with the test's etcd and `args`, its
/// frontends bound on loopback (`LB_BIND_ADDRESS`), its log collected like
/// an agent's.
pub fn spawn_render(endpoint: &str, template: &Path, out: &Path, args: &[&str]) -> Agent {
    spawn_render_with(endpoint, template, out, args, &[])
}

/// Like `spawn_render`, with more environment for the template.
pub fn spawn_render_with(
    endpoint: &str,
    template: &Path,
    out: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Agent {
    spawn_render_files(endpoint, &[(template, out)], args, envs)
}

/// One `render` writing several files: each (template, out) pair as
/// `--template T --out O`, in the order given (the order it publishes them).
pub fn spawn_render_files(
    endpoint: &str,
    files: &[(&Path, &Path)],
    args: &[&str],
    envs: &[(&str, &str)],
) -> Agent {
    let paths: Vec<(String, String)> = files
        .iter()
        .map(|(t, o)| (t.display().to_string(), o.display().to_string()))
        .collect();
    let mut full = vec!["render", "--etcd-endpoints", endpoint];
    for (template, out) in &paths {
        full.extend(["--template", template, "--out", out]);
    }
    full.extend_from_slice(args);
    let mut all_envs = vec![("LB_BIND_ADDRESS", "127.0.0.1")];
    all_envs.extend_from_slice(envs);
    Agent::spawn_binary(Path::new(AGENT_BIN), &full, &all_envs, AgentOutput::Echo)
        .unwrap_or_else(|e| panic!("spawn {AGENT_BIN} render: {e}"))
}

/// A backend of the test (see `rig::docker::run_web_backend`).
pub fn run_backend(containers: &Containers, port: u16) -> String {
    rig::docker::run_web_backend(containers, port)
}

pub use rig::process::Group;

/// `program args` in a process group of its own, killed whole on drop
/// (haproxy's and nginx's master and workers); panics if it cannot start.
pub fn group(program: &str, args: &[&str]) -> Group {
    Group::spawn(Command::new(program).args(args))
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"))
}

/// haproxy in master-worker mode on `config`, its master's pid in
/// `pidfile` (what `--reload 'kill -USR2 $(cat PIDFILE)'` signals), its
/// master CLI on a socket beside the pidfile: through it a new worker takes
/// the listening sockets of the old one, so a reload refuses no connection.
pub fn haproxy(config: &Path, pidfile: &Path) -> Group {
    let master_socket = pidfile.with_extension("master.sock");
    group(
        "haproxy",
        &[
            "-W",
            "-db",
            "-S",
            &master_socket.to_string_lossy(),
            "-p",
            &pidfile.to_string_lossy(),
            "-f",
            &config.to_string_lossy(),
        ],
    )
}

/// The body `GET /` gets from `port` on loopback.
pub fn get(port: u16) -> Result<String, String> {
    match http_get(&format!("127.0.0.1:{port}"), "/") {
        Ok((200, body)) => Ok(body.trim().to_string()),
        Ok((status, body)) => Err(format!("status {status}: {body}")),
        Err(error) => Err(error),
    }
}

/// Waits until `GET /` on `port` is answered by `hostname`; how long it took.
pub fn wait_served_by(port: u16, hostname: &str, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if get(port).as_deref() == Ok(hostname) {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// One answer of the client loop.
#[derive(Debug, Clone)]
pub struct Answer {
    /// When the request was answered.
    pub at: Instant,
    /// The hostname that answered, or why nothing did.
    pub result: Result<String, String>,
}

/// Requests `GET /` on `port` one after another until dropped or stopped.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    thread: Option<JoinHandle<()>>,
}

impl ClientLoop {
    pub fn start(port: u16) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (stopping, sink) = (stop.clone(), answers.clone());
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let result = get(port);
                sink.lock().unwrap().push(Answer {
                    at: Instant::now(),
                    result,
                });
                thread::sleep(Duration::from_millis(5));
            }
        });
        ClientLoop {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    /// Stops the loop; every answer.
    pub fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.answers()
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The short id a container's hostname is.
pub fn hostname_of(id: &str) -> String {
    id[..12].to_string()
}

/// A port of the tests' own (`rig::ports`), for a backend's private port
/// (and so the load balancer's frontend).
pub fn private_port() -> u16 {
    super::test_port()
}

/// The file at `path`; empty while it does not exist.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// How many `server` lines the rendered file at `path` has.
pub fn servers(path: &Path) -> usize {
    read(path)
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .count()
}
