//! Which process of which boot of which machine a candidate for the host
//! lock is: written into the candidate key, so that a new run of the agent
//! can tell a previous run of its own on this machine that died (a crash,
//! `kill -9`, an abort: its key lives on until its lease expires) from a
//! live agent beside it. The first is taken over at once; the second is
//! waited for.

use std::fs;

use super::{Holder, HolderRun};
use crate::engine::EngineIdentity;

/// The longest text field taken from a candidate key: the value is anyone's
/// to write, and its fields are only ever logged and compared.
const MAX_FIELD: usize = 255;

/// This process, as its candidate key says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Candidate {
    pub hostname: String,
    pub pid: u32,
    /// The kernel's id of this boot: a pid says nothing across reboots.
    #[serde(default)]
    pub boot_id: String,
    /// When the process started, in clock ticks since boot: tells a live
    /// process from another one that got the dead run's pid.
    #[serde(default)]
    pub started: u64,
    /// The pid namespace (`/proc/self/ns/pid`): a pid means something only
    /// in its namespace (two agents in two containers of one host name are
    /// both pid 1).
    #[serde(default)]
    pub pid_ns: String,
    /// The `--docker-host` this run follows: a run restarted while its
    /// engine does not answer takes the host over only from a previous run
    /// that followed the same one (docs/host-lock.md: One agent per host).
    #[serde(default)]
    pub docker_host: String,
    /// The engine this run follows (`engine::EngineIdentity`).
    #[serde(default)]
    pub engine: String,
    /// The host and prefix, as in the lock's name: said again so that the
    /// value alone tells whose it is.
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub prefix: String,
}

impl Candidate {
    /// This process (what it follows and writes left empty).
    pub(super) fn this_process() -> Candidate {
        let pid = std::process::id();
        Candidate {
            hostname: hostname(),
            pid,
            boot_id: boot_id(),
            started: started(pid).unwrap_or(0),
            pid_ns: pid_namespace(),
            docker_host: String::new(),
            engine: String::new(),
            host_ip: String::new(),
            prefix: String::new(),
        }
    }

    /// The holder whose candidate key `key` on `lease` holds `value`, parsed
    /// at the edge: a value that is not a candidate (an older agent's
    /// without the new fields still is one) says nothing of its process, text
    /// fields are cut at 255 characters, an engine that is not an identity
    /// is none.
    pub(super) fn holder(key: String, lease: i64, value: &[u8]) -> Holder {
        let candidate: Option<Candidate> = serde_json::from_slice(value).ok();
        let field = |value: &str| value.chars().take(MAX_FIELD).collect::<String>();
        let text = |pick: fn(&Candidate) -> &str| {
            candidate
                .as_ref()
                .map_or_else(String::new, |c| field(pick(c)))
        };
        Holder {
            key,
            lease,
            hostname: candidate
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |c| field(&c.hostname)),
            pid: candidate.as_ref().map_or(0, |c| c.pid),
            boot_id: text(|c| &c.boot_id),
            started: candidate.as_ref().map_or(0, |c| c.started),
            pid_ns: text(|c| &c.pid_ns),
            docker_host: text(|c| &c.docker_host),
            engine: candidate
                .as_ref()
                .and_then(|c| EngineIdentity::parse(&c.engine)),
        }
    }

    /// What this process can tell of `holder`'s: gone when it was a run on
    /// this machine, in this boot, whose process no longer runs (its lock
    /// key outlives it only until its lease expires); alive here when that
    /// process still runs.
    /// This very process on an older lease of ours counts as gone: it is
    /// ours to take over. A process that cannot be looked at (another
    /// user's, with `hidepid`: missing or unreadable) is unknown, not gone,
    /// unless the kernel says no such process runs.
    pub(super) fn holder_run(&self, holder: &Holder) -> HolderRun {
        let known = !holder.boot_id.is_empty()
            && holder.started != 0
            && !holder.pid_ns.is_empty()
            && !self.boot_id.is_empty()
            && !self.pid_ns.is_empty();
        let here = holder.hostname == self.hostname
            && holder.boot_id == self.boot_id
            && holder.pid_ns == self.pid_ns;
        if !known || !here {
            return HolderRun::Unknown;
        }
        if holder.pid == self.pid && holder.started == self.started {
            return HolderRun::Gone;
        }
        match fs::read_to_string(format!("/proc/{}/stat", holder.pid)) {
            // A zombie has exited; only its parent has not reaped it yet.
            Ok(stat) if parse_started(&stat) == Some(holder.started) && !has_exited(&stat) => {
                HolderRun::AliveHere
            }
            Ok(_) => HolderRun::Gone,
            // Missing from /proc: gone, unless /proc hides it (`hidepid`
            // hides other users' processes, and with `invisible` also some
            // of our own user's); the kernel's answer to a signal 0 does
            // not depend on what /proc shows.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if exists(holder.pid) {
                    HolderRun::Unknown
                } else {
                    HolderRun::Gone
                }
            }
            Err(_) => HolderRun::Unknown,
        }
    }
}

/// This machine's name, for the operator who finds two agents for one host.
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn pid_namespace() -> String {
    fs::read_link("/proc/self/ns/pid")
        .map(|link| link.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time; none when
/// there is no such process (here).
fn started(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_started(&stat)
}

/// The command (field 2) is in parentheses and may itself hold spaces and
/// parentheses: the fields are counted after its last `)`.
fn parse_started(stat: &str) -> Option<u64> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    // Fields 3, 4, ... follow; the start time is field 22.
    after_command.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` (of our pid namespace) exists, by `kill(pid, 0)`:
/// no such process (or a pid none could have), or one we may or may not
/// signal.
fn exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Whether the process of `stat` has exited (field 3, its state: `Z` a
/// zombie not reaped yet, `X` dead).
fn has_exited(stat: &str) -> bool {
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X" | "x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(candidate: &Candidate) -> Holder {
        Holder {
            key: "k".into(),
            lease: 1,
            hostname: candidate.hostname.clone(),
            pid: candidate.pid,
            boot_id: candidate.boot_id.clone(),
            started: candidate.started,
            pid_ns: candidate.pid_ns.clone(),
            docker_host: candidate.docker_host.clone(),
            engine: None,
        }
    }

    #[test]
    fn a_candidate_value_is_parsed_at_the_edge() {
        let garbage = Candidate::holder("k".into(), 1, b"\xff not json");
        assert_eq!(
            (garbage.hostname.as_str(), garbage.pid, garbage.started),
            ("unknown", 0, 0)
        );
        assert!(garbage.boot_id.is_empty() && garbage.engine.is_none());
        let older = Candidate::holder("k".into(), 1, br#"{"hostname":"h","pid":7}"#);
        assert_eq!((older.hostname.as_str(), older.pid), ("h", 7));
        assert!(older.boot_id.is_empty() && older.pid_ns.is_empty() && older.engine.is_none());
        let long = "x".repeat(100_000);
        let value = serde_json::json!({
            "hostname": long, "pid": 7, "boot_id": long, "pid_ns": long,
            "engine": "docker:a\nb", "started": 3
        });
        let hostile = Candidate::holder("k".into(), 1, value.to_string().as_bytes());
        assert_eq!(hostile.hostname.len(), MAX_FIELD);
        assert_eq!(
            (hostile.boot_id.len(), hostile.pid_ns.len()),
            (MAX_FIELD, MAX_FIELD)
        );
        assert!(hostile.engine.is_none(), "a newline is no identity");
        let negative = Candidate::holder("k".into(), 1, br#"{"hostname":"h","pid":-1}"#);
        assert_eq!(negative.pid, 0, "not a candidate: a pid is never negative");
    }

    #[test]
    fn the_start_time_is_counted_after_the_command() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2";
        assert_eq!(parse_started(stat), Some(987_654));
        assert_eq!(parse_started("42 (x"), None);
        assert_eq!(parse_started(""), None);
    }

    #[test]
    fn a_zombie_has_exited() {
        let stat = |state: &str| {
            format!("42 (a) b) {state} 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2")
        };
        assert!(has_exited(&stat("Z")) && has_exited(&stat("X")));
        assert!(!has_exited(&stat("S")) && !has_exited(&stat("R")) && !has_exited(&stat("D")));
        assert!(!has_exited(""));
    }

    /// A holder that exited but is not reaped yet (a supervisor slow to
    /// wait for it) is gone, not alive: a standby beside it takes over.
    #[test]
    fn an_exited_process_not_reaped_yet_is_gone() {
        let here = Candidate::this_process();
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let started = started(pid).expect("its start time");
        let exited = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| has_exited(&stat))
        });
        assert!(exited, "the child did not become a zombie");
        let zombie = Candidate {
            pid,
            started,
            ..here.clone()
        };
        assert_eq!(here.holder_run(&holder(&zombie)), HolderRun::Gone);
        child.wait().expect("reap");
    }

    #[test]
    fn this_process_is_ours_and_its_parent_is_alive_here() {
        let here = Candidate::this_process();
        assert!(here.started > 0 && !here.boot_id.is_empty());
        assert_eq!(
            here.holder_run(&holder(&here)),
            HolderRun::Gone,
            "this very process, on an older lease, is ours to take over"
        );
        let parent = Candidate {
            pid: std::os::unix::process::parent_id(),
            started: started(std::os::unix::process::parent_id()).unwrap(),
            ..here.clone()
        };
        assert_eq!(here.holder_run(&holder(&parent)), HolderRun::AliveHere);
    }

    #[test]
    fn a_dead_run_of_this_boot_is_one_and_anything_unknown_is_not() {
        let here = Candidate::this_process();
        let dead = Candidate {
            pid: u32::MAX - 1,
            ..here.clone()
        };
        assert_eq!(here.holder_run(&holder(&dead)), HolderRun::Gone);
        let reused = Candidate {
            pid: 1,
            started: 1,
            ..here.clone()
        };
        assert_eq!(
            here.holder_run(&holder(&reused)),
            HolderRun::Gone,
            "pid 1 is another process"
        );
        let elsewhere = Candidate {
            hostname: "other".into(),
            ..dead.clone()
        };
        assert_eq!(here.holder_run(&holder(&elsewhere)), HolderRun::Unknown);
        let other_boot = Candidate {
            boot_id: "another".into(),
            ..dead.clone()
        };
        assert_eq!(here.holder_run(&holder(&other_boot)), HolderRun::Unknown);
        let other_namespace = Candidate {
            pid_ns: "pid:[1]".into(),
            ..dead.clone()
        };
        assert_eq!(
            here.holder_run(&holder(&other_namespace)),
            HolderRun::Unknown
        );
        let legacy = Candidate {
            boot_id: String::new(),
            started: 0,
            pid_ns: String::new(),
            ..dead
        };
        assert_eq!(here.holder_run(&holder(&legacy)), HolderRun::Unknown);
    }
}
