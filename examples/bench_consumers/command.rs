//! One measured command, from outside: its wall time, the CPU time the etcd
//! server spent meanwhile, and its peak RSS from `wait4`'s rusage (what
//! `/usr/bin/time -v` reports). Each command runs in a process group of
//! its own, killed whole when it runs past the time limit or the benchmark
//! is interrupted.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::etcd::EtcdProcess;
use rig::process::check_interrupted;

/// What one command cost.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// From spawn to exit, in seconds.
    pub wall_s: f64,
    /// CPU seconds (user + system) of the etcd server meanwhile.
    pub etcd_cpu_s: f64,
    /// The command's peak resident set size.
    pub peak_rss_mib: f64,
}

/// How one command ended.
#[derive(Debug, Clone)]
pub enum Outcome<T> {
    Done(T),
    /// Killed at the time limit.
    TimedOut,
    /// Exited with an error; the reason and the end of its stderr.
    Failed(String),
}

/// How a process ended, seen by `wait4`.
pub struct Exit {
    /// When `wait4` returned.
    pub at: Instant,
    /// Exit code, or `None` when a signal ended it.
    pub code: Option<i32>,
    pub peak_rss_mib: f64,
}

/// A child in a process group of its own, killed whole on drop, reaped by
/// a thread that reports its rusage.
pub struct Group {
    pid: u32,
    exited: mpsc::Receiver<Result<Exit>>,
    /// The exit, once received.
    exit: Option<Exit>,
}

impl Group {
    /// Spawns `command` as the leader of a new process group, with no stdin.
    pub fn spawn(command: &mut Command) -> Result<Group> {
        let child = command.stdin(Stdio::null()).process_group(0).spawn()?;
        let pid = child.id();
        let (tx, exited) = mpsc::channel();
        thread::spawn(move || {
            // Reaped by `wait4`, not by `Child::wait`, for its rusage.
            let _ = tx.send(wait4(child));
        });
        Ok(Group {
            pid,
            exited,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit, if the process has ended within `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<&Exit>> {
        if self.exit.is_none() {
            match self.exited.recv_timeout(timeout) {
                Ok(exit) => self.exit = Some(exit?),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("the reaper of process {} is gone", self.pid)
                }
            }
        }
        Ok(self.exit.as_ref())
    }

    /// Sends `signal` to the whole group.
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the leader's exit.
    pub fn stop(&mut self, grace: Duration) {
        if self.exit.is_none() {
            self.signal(rustix::process::Signal::TERM);
            if !matches!(self.wait_timeout(grace), Ok(Some(_))) {
                self.signal(rustix::process::Signal::KILL);
                let _ = self.wait_timeout(Duration::from_secs(10));
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Whatever the leader left in its group goes too.
        self.signal(rustix::process::Signal::KILL);
        let _ = self.wait_timeout(Duration::from_secs(10));
    }
}

/// Blocks until `child` exits and reaps it, with its rusage.
fn wait4(child: Child) -> Result<Exit> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types; the
        // child is ours and is not reaped anywhere else.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("wait4");
        }
    }
    let at = Instant::now();
    Ok(Exit {
        at,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        // `ru_maxrss` is in KiB on Linux.
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

/// Runs `command` to its end or to `limit`, with stdout to /dev/null and
/// stderr to `log`, measuring what it cost.
pub fn measure(
    command: &mut Command,
    limit: Duration,
    etcd: &EtcdProcess,
    log: &Path,
) -> Result<Outcome<Cost>> {
    command
        .stdout(Stdio::null())
        .stderr(File::create(log).with_context(|| log.display().to_string())?);
    let cpu_before = etcd.cpu_seconds()?;
    let started = Instant::now();
    let mut group = Group::spawn(command)?;
    loop {
        if let Some(exit) = group.wait_timeout(Duration::from_millis(50))? {
            let etcd_cpu_s = etcd.cpu_seconds()? - cpu_before;
            if exit.code != Some(0) {
                return Ok(Outcome::Failed(format!(
                    "exit {:?}: {}",
                    exit.code,
                    tail(log)
                )));
            }
            return Ok(Outcome::Done(Cost {
                wall_s: (exit.at - started).as_secs_f64(),
                etcd_cpu_s,
                peak_rss_mib: exit.peak_rss_mib,
            }));
        }
        if started.elapsed() >= limit {
            return Ok(Outcome::TimedOut);
        }
        check_interrupted()?;
    }
}

/// The agent's `subcommand` (`list`, `render`) reading the records from
/// `endpoint`, with none of the caller's etcd and agent variables (they
/// would configure it too). The etcd flags follow the subcommand: before
/// it, they are the agent's own.
pub fn agent(bin: &Path, subcommand: &str, endpoint: &str) -> Command {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("ETCD") || key.starts_with("REGISTER_") {
            command.env_remove(key);
        }
    }
    command
        .arg(subcommand)
        .arg("--etcd-endpoints")
        .arg(endpoint);
    command
}

/// The last few lines of a log file, on one line.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
