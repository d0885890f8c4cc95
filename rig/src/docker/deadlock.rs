//! Docker 20.10's networking deadlock (moby/moby#42545, fixed upstream in
//! moby/libnetwork#2679 but not in Debian's 20.10.24): when containers come
//! and go quickly, libnetwork's watch loop (`processEndpointDelete`, or
//! `processEndpointCreate`) and a container's network join or leave take two
//! locks in opposite orders, and from then on every command that touches the
//! network (`run`, `rm`, `stop`) hangs for ever. The suite cannot avoid it
//! (it is a race inside dockerd), so the rig recognises it and restarts
//! dockerd, so that one hung command costs a restart instead of the run:
//!
//! - a `docker` command still running after [`WATCH_AFTER`] asks dockerd for
//!   its goroutines (SIGUSR1 writes them to `/var/run/docker/`) twice,
//!   [`CONFIRM_AFTER`] apart;
//! - the deadlock is confirmed only when the same watch-loop goroutine waits
//!   on a lock in both dumps (libnetwork holds its locks for microseconds);
//! - then dockerd is killed and started again by `scripts/setup.sh`, and the
//!   command is run again, if running it twice does no harm (`rm`, `stop`,
//!   `kill`, `inspect`, `ps`...; never `run` or `create`, which would leave
//!   a second container behind): commands that failed because dockerd went
//!   away under them too, and a removal or stop that turns out done before
//!   the restart counts as done.
//!
//! A restart is printed (`eprintln!`) and the dumps that confirmed it stay in
//! `/var/run/docker/`, so a run that needed one says so; dumps that showed no
//! deadlock are removed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::process::Command;

/// How long a `docker` command runs before the rig looks for the deadlock;
/// a `stop` with a grace period legitimately takes longer, which is why a
/// long command is only looked at, never killed for being long.
pub(crate) const WATCH_AFTER: Duration = Duration::from_secs(30);
/// Between the two goroutine dumps that confirm the deadlock: libnetwork
/// holds these locks for microseconds, even on a loaded machine.
const CONFIRM_AFTER: Duration = Duration::from_secs(10);
/// Subcommands that may run twice: a retry after a restart changes nothing
/// that the first run would not have.
const RERUNNABLE: [&str; 12] = [
    "rm", "stop", "kill", "inspect", "ps", "info", "version", "image", "port", "logs", "pause",
    "unpause",
];
/// Where dockerd writes its goroutine dumps (its exec root).
const DUMP_DIR: &str = "/var/run/docker";
/// The functions of libnetwork's watch loop that take the controller's lock
/// before a network's: the goroutine that the deadlock leaves waiting.
const WATCH_LOOP_FUNCTIONS: [&str; 2] = ["processEndpointDelete", "processEndpointCreate"];

/// One check and restart at a time: the threads of a test process whose
/// commands hang together look at one pair of dumps and restart dockerd once.
static RESTARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The ids of the goroutines of libnetwork's watch loop that wait on a lock
/// in `dump` (dockerd's SIGUSR1 goroutine dump).
pub(crate) fn stuck_watch_loop(dump: &str) -> Vec<u64> {
    dump.split("\n\n")
        .filter_map(|block| {
            let header = block.trim_start().lines().next()?;
            let rest = header.strip_prefix("goroutine ")?;
            let (id, state) = rest.split_once(' ')?;
            let waits_on_lock = state.starts_with("[semacquire");
            // The frames only: a `created by …` line names who started the
            // goroutine, not what it runs.
            let in_watch_loop = block
                .lines()
                .skip(1)
                .filter(|line| !line.trim_start().starts_with("created by"))
                .any(|line| WATCH_LOOP_FUNCTIONS.iter().any(|f| line.contains(f)));
            (waits_on_lock && in_watch_loop).then(|| id.parse().ok())?
        })
        .collect()
}

/// The pids of the running dockerd processes.
async fn dockerd_pids() -> Vec<u32> {
    let out = Command::new("pidof").arg("dockerd").output().await;
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// Asks dockerd for a goroutine dump; the dump file written after the
/// request, if one appears within 10 s.
async fn dump(pid: u32) -> Option<PathBuf> {
    let asked = SystemTime::now() - Duration::from_millis(50);
    let sent = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .await;
    if !sent.is_ok_and(|s| s.success()) {
        return None;
    }
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(path) = newest_dump_since(asked) {
            return Some(path);
        }
    }
    None
}

fn newest_dump_since(since: SystemTime) -> Option<PathBuf> {
    std::fs::read_dir(DUMP_DIR)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("goroutine-stacks-")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(modified, _)| *modified >= since)
        .max()
        .map(|(_, path)| path)
}

fn stuck_in(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .map(|dump| stuck_watch_loop(&dump))
        .unwrap_or_default()
}

/// Whether dockerd `pid` is in the deadlock: the same watch-loop goroutine
/// waits on a lock in two dumps taken [`CONFIRM_AFTER`] apart.
async fn confirmed(pid: u32) -> Option<PathBuf> {
    let first = dump(pid).await?;
    let stuck = stuck_in(&first);
    if stuck.is_empty() {
        let _ = std::fs::remove_file(&first);
        return None;
    }
    tokio::time::sleep(CONFIRM_AFTER).await;
    let second = dump(pid).await?;
    let still = stuck_in(&second);
    if stuck.iter().any(|id| still.contains(id)) {
        return Some(second);
    }
    let _ = std::fs::remove_file(&first);
    let _ = std::fs::remove_file(&second);
    None
}

/// If dockerd is deadlocked, restarts it; whether the command that hung
/// (`what`, for the message) should be run again. A dockerd that someone
/// else restarted meanwhile counts as restarted.
pub(crate) async fn recover(what: &str, hung_on: &[u32]) -> bool {
    let Some(pid) = hung_on.first().copied() else {
        return false;
    };
    let _one_at_a_time = RESTARTING.lock().await;
    if dockerd_pids().await != hung_on {
        return answers_again().await;
    }
    let Some(evidence) = confirmed(pid).await else {
        return false;
    };
    eprintln!(
        "docker {what} hung: dockerd {pid} is deadlocked (moby/moby#42545, goroutine dump {}); \
         restarting it with scripts/setup.sh",
        evidence.display()
    );
    restart(pid).await;
    true
}

/// Kills dockerd (a deadlocked dockerd does not finish a SIGTERM) and starts
/// it again with the project's set-up script.
async fn restart(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await;
    for _ in 0..150 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/setup.sh");
    let status = Command::new("bash")
        .arg(setup)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .await;
    if !status.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("scripts/setup.sh did not start dockerd again: {status:?}");
    }
}

/// The dockerd a command started on, to tell later whether it was restarted.
pub(crate) async fn current() -> Vec<u32> {
    dockerd_pids().await
}

/// Whether `subcommand` may be run again after a restart.
pub(crate) fn may_run_again(subcommand: &str) -> bool {
    RERUNNABLE.contains(&subcommand)
}

/// Whether dockerd is another one than `before` (restarted meanwhile) and
/// answers again.
pub(crate) async fn restarted_since(before: &[u32]) -> bool {
    let _after_any_restart = RESTARTING.lock().await;
    dockerd_pids().await != before && answers_again().await
}

/// Whether a removal or a stop that failed after a restart found its work
/// done already (the restart stopped the container, or the first run
/// removed it).
pub(crate) fn done_before_the_restart(subcommand: &str, stderr: &str) -> bool {
    match subcommand {
        "rm" => stderr.contains("No such container"),
        "stop" | "kill" => {
            stderr.contains("is not running") || stderr.contains("No such container")
        }
        _ => false,
    }
}

/// Waits up to a minute for dockerd to answer `docker info`.
async fn answers_again() -> bool {
    for _ in 0..300 {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if info.is_ok_and(|s| s.success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::stuck_watch_loop;

    const DUMP: &str = "goroutine 1 [chan receive, 3 minutes]:\nmain.main()\n\t/go/main.go:1\n\n\
goroutine 47 [semacquire, 2 minutes]:\nsync.runtime_SemacquireMutex(0xc0, 0x0, 0x1)\n\
github.com/docker/docker/libnetwork.(*network).ID(0xc0)\n\
github.com/docker/docker/libnetwork.(*controller).processEndpointDelete(0xc0, 0xc1, 0xc2)\n\
github.com/docker/docker/libnetwork.(*controller).watchLoop(0xc0)\n\n\
goroutine 90 [semacquire]:\nsync.runtime_SemacquireMutex(0xc0, 0x0, 0x1)\n\
github.com/docker/docker/libnetwork.(*network).getSvcRecords(0xc0, 0xc1)\n\n\
goroutine 91 [select]:\ngithub.com/docker/docker/libnetwork.(*controller).processEndpointCreate(0xc0)\n";

    #[test]
    fn the_watch_loop_waiting_on_a_lock_is_found() {
        assert_eq!(stuck_watch_loop(DUMP), vec![47]);
    }

    #[test]
    fn a_dump_without_it_finds_nothing() {
        assert!(stuck_watch_loop("").is_empty());
        assert!(stuck_watch_loop("goroutine 1 [running]:\nmain.main()\n").is_empty());
        assert!(stuck_watch_loop("goroutine x [semacquire]:\nprocessEndpointDelete\n").is_empty());
        let started_by_it = "goroutine 5 [semacquire]:\nsync.(*Mutex).Lock()\n\
            created by github.com/docker/libnetwork.(*controller).processEndpointCreate\n";
        assert!(
            stuck_watch_loop(started_by_it).is_empty(),
            "a `created by` line is no frame"
        );
    }
}
