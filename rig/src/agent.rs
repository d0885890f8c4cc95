//! The agent binary as a child process, its stderr collected line by line
//! (and echoed, or written to a log file), killed on drop.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::wait_until;

/// The environment variables the agent reads: removed from every agent a
/// test or the benchmark spawns, so that none leaks in from the caller.
pub const AGENT_ENV: &[&str] = &[
    "HOST_IP",
    "ETCD_ENDPOINT",
    "REGISTER_PREFIX",
    "REGISTER_TTL",
    "REGISTER_RESYNC",
    "REGISTER_REQUIRE_LABELS",
    "REGISTER_DEREGISTER_ON_EXIT",
    "REGISTER_REQUIRE_HEALTHY",
    "REGISTER_METRICS_ADDR",
    "DOCKER_HOST",
    "ETCD_CACERT",
    "ETCD_CERT",
    "ETCD_KEY",
    "ETCD_USER",
    "ETCD_PASSWORD",
    "ETCD_PASSWORD_FILE",
    "LOG_FORMAT",
    "RUST_LOG",
];

/// Where the agent's output goes besides the lines an [`Agent`] collects.
pub enum AgentOutput {
    /// stdout and stderr echoed to this process's stderr, each line
    /// prefixed with the agent's pid: a failing test shows its agent's log.
    Echo,
    /// stderr written to this file (stdout dropped): the benchmark keeps
    /// each run's log without flooding its own output.
    LogFile(PathBuf),
}

/// The agent binary as a child process, its stderr collected line by line.
pub struct Agent {
    child: Child,
    /// Every stderr line so far, filled by a reader thread.
    lines: Arc<Mutex<Vec<String>>>,
    /// The exit status, once it has been seen.
    status: Option<ExitStatus>,
}

impl Agent {
    /// Spawns `binary` with exactly these arguments and environment additions;
    /// none of the caller's [`AGENT_ENV`] variables leaks in.
    pub fn spawn_binary(
        binary: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        output: AgentOutput,
    ) -> std::io::Result<Agent> {
        let mut cmd = Command::new(binary);
        for key in AGENT_ENV {
            cmd.env_remove(key);
        }
        let log_file = match &output {
            AgentOutput::Echo => None,
            AgentOutput::LogFile(path) => Some(File::create(path)?),
        };
        let stdout = match output {
            AgentOutput::Echo => Stdio::piped(),
            AgentOutput::LogFile(_) => Stdio::null(),
        };
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = lines.clone();
        let echo = log_file.is_none().then(|| format!("agent[{pid}] "));
        thread::spawn(move || follow_lines(stderr, echo, log_file, Some(sink)));
        if let Some(stdout) = child.stdout.take() {
            let echo = Some(format!("agent[{pid}] stdout: "));
            thread::spawn(move || follow_lines(stdout, echo, None, None));
        }
        Ok(Agent {
            child,
            lines,
            status: None,
        })
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stderr lines seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn has_log(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// How many stderr lines so far contain every one of `needles`.
    pub fn count_log(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// The stderr lines so far at level WARN or ERROR.
    pub fn warnings(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .cloned()
            .collect()
    }

    /// Panics with the log unless the agent is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            panic!(
                "the agent exited ({status}) although it must keep running; stderr:\n{}",
                self.lines().join("\n")
            );
        }
    }

    /// Waits until a stderr line contains `needle`; false on timeout or exit.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.has_log(needle) || self.try_status().is_some()
        }) && self.has_log(needle)
    }

    /// Waits for the `agent ready` line, panicking with the log otherwise.
    pub fn wait_ready(&mut self) {
        if !self.wait_for_log("agent ready", Duration::from_secs(20)) {
            panic!(
                "agent did not get ready (exit status {:?}); stderr:\n{}",
                self.try_status(),
                self.lines().join("\n")
            );
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sigint(&self) {
        self.signal("INT");
    }

    pub fn sigkill(&self) {
        self.signal("KILL");
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait agent");
        }
        self.status
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// The exit status, if the agent exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_status().is_some());
        self.try_status()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `stream` line by line until it ends: echoes each line with
/// `echo` in front, appends it to `file`, collects it into `sink`.
fn follow_lines(
    stream: impl Read,
    echo: Option<String>,
    mut file: Option<File>,
    sink: Option<Arc<Mutex<Vec<String>>>>,
) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if let Some(prefix) = &echo {
            eprintln!("{prefix}{line}");
        }
        if let Some(file) = file.as_mut() {
            let _ = writeln!(file, "{line}");
        }
        if let Some(sink) = &sink {
            sink.lock().unwrap().push(line);
        }
    }
}
