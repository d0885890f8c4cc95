//! Processes that must not outlive a test or a benchmark: each in a process
//! group of its own, the whole group killed on drop (haproxy's and nginx's
//! master and workers, Envoy, Traefik), and Ctrl-C for the benchmarks.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{signal, SignalKind};

use crate::runtime;

/// A process in a process group of its own, the whole group killed on drop.
pub struct Group {
    /// The group's leader: its pid is the group's id.
    child: Child,
}

impl Group {
    /// Spawns `command`, with no stdin, as the leader of a new group.
    pub fn spawn(command: &mut Command) -> std::io::Result<Group> {
        let child = command.stdin(Stdio::null()).process_group(0).spawn()?;
        Ok(Group { child })
    }

    /// Spawns `program` with `args`, its stdout and stderr into the file
    /// `log` (created anew).
    pub fn spawn_logged(program: &str, args: &[&str], log: &Path) -> std::io::Result<Group> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        Group::spawn(Command::new(program).args(args).stdout(out).stderr(err))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// Runs `command` (no stdin) to its end and returns its output; panics
/// unless it exits 0, naming it `what` and showing what it printed, or,
/// when it cannot start at all, with `missing` (what installs it).
pub fn output_ok(command: &mut Command, what: &str, missing: &str) -> std::process::Output {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}): {missing}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether `program arg` runs and exits 0 (`haproxy -v`, `envoy --version`).
pub fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Set by SIGINT or SIGTERM once [`note_interrupts`] has run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The error of a wait that ended because the benchmark was interrupted.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Notes SIGINT and SIGTERM from now on (on the rig's runtime) instead of
/// dying at once: a benchmark's processes run in groups of their own, which
/// Ctrl-C at the terminal does not reach, and its etcd and containers must
/// be removed on the way out. `name` prefixes the one line it prints.
pub fn note_interrupts(name: &'static str) -> std::io::Result<()> {
    let _guard = runtime().enter();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    runtime().spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("{name}: interrupted: cleaning up");
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
    Ok(())
}

/// Whether SIGINT or SIGTERM has come since [`note_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// [`Interrupted`] once interrupted: every wait of a benchmark calls it.
pub fn check_interrupted() -> Result<(), Interrupted> {
    if interrupted() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
