//! Stalls for the gap tests: a [`DockerRelay`] that can hold (never forward)
//! the requests whose request line contains a given string — one container's
//! inspect hangs while every other request goes through — and that records
//! every request line it relays; and an etcd frozen with SIGSTOP, thawed
//! again on drop so that no test leaves a stopped etcd behind.
//!
//! Only the requests the agent sends are looked at: the relay reads each
//! connection's bytes from the agent, finds the request lines (`GET
//! /v1.41/containers/<id>/json HTTP/1.1`) and, on a match, stops forwarding
//! that one connection from the matching line on, until the hold is
//! released (the held bytes are then sent on) or the agent gives up and
//! closes the connection.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{DockerRelay, Etcd};

/// How often a held connection looks whether its hold was released.
const HOLD_POLL: Duration = Duration::from_millis(50);

/// What the relay holds back and what it has seen; shared by all connections.
#[derive(Default)]
pub(super) struct Stall {
    /// Request lines containing one of these are held.
    holding: Mutex<Vec<String>>,
    /// Every request line relayed or held so far, in order: tells a test
    /// what the agent asked the engine and when.
    request_lines: Mutex<Vec<String>>,
    /// Requests held so far (each one counted once, when it was caught).
    held: AtomicUsize,
}

impl Stall {
    fn holds(&self, line: &str) -> bool {
        self.holding
            .lock()
            .unwrap()
            .iter()
            .any(|needle| line.contains(needle))
    }
}

impl DockerRelay {
    /// From now on, every request whose request line contains `needle` is
    /// held: its connection forwards nothing more until `release_all`.
    pub fn hold_requests(&self, needle: &str) {
        self.shared
            .stall
            .holding
            .lock()
            .unwrap()
            .push(needle.to_string());
    }

    /// Stops holding anything; held connections send their requests on.
    pub fn release_all(&self) {
        self.shared.stall.holding.lock().unwrap().clear();
    }

    /// How many requests were held so far.
    pub fn held_requests(&self) -> usize {
        self.shared.stall.held.load(Ordering::SeqCst)
    }

    /// Every request line the agent sent through the relay so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.shared.stall.request_lines.lock().unwrap().clone()
    }

    /// How many request lines so far contain `needle`.
    pub fn count_requests(&self, needle: &str) -> usize {
        self.request_lines()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }
}

/// Copies the agent's bytes on one connection to the engine, recording its
/// request lines and holding the connection from a request line that the
/// stall holds on. Ends when either side closes; then shuts the engine's
/// side for writing, as `std::io::copy` would have.
pub(super) fn forward_requests(stall: &Stall, mut from: UnixStream, mut to: UnixStream) {
    // The read timeout lets a held connection notice its release.
    let _ = from.set_read_timeout(Some(HOLD_POLL));
    let mut buffer = vec![0u8; 64 * 1024];
    // The current, unfinished line: a request line may span two reads.
    let mut line: Vec<u8> = Vec::new();
    // The held request line, and the bytes held back since it began.
    let mut held: Option<(String, Vec<u8>)> = None;
    loop {
        if let Some((request_line, bytes)) = &held {
            if !stall.holds(request_line) {
                if to.write_all(bytes).is_err() {
                    break;
                }
                held = None;
            }
        }
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buffer[..n];
        if let Some((_, bytes)) = held.as_mut() {
            bytes.extend_from_slice(chunk);
            continue;
        }
        // Where in `chunk` a held request line starts, if one does.
        let mut hold_from = None;
        let mut line_start = 0;
        for (i, byte) in chunk.iter().enumerate() {
            line.push(*byte);
            if *byte != b'\n' {
                continue;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let starts_in_chunk = line.len() <= i + 1;
            line.clear();
            let begin = line_start;
            line_start = i + 1;
            if !is_request_line(&text) {
                continue;
            }
            stall.request_lines.lock().unwrap().push(text.clone());
            if stall.holds(&text) {
                stall.held.fetch_add(1, Ordering::SeqCst);
                // A line begun in an earlier read was partly forwarded
                // already; the engine still waits for the rest of it.
                hold_from = Some((text, if starts_in_chunk { begin } else { 0 }));
                break;
            }
        }
        let forward_until = hold_from.as_ref().map_or(chunk.len(), |(_, start)| *start);
        if to.write_all(&chunk[..forward_until]).is_err() {
            break;
        }
        if let Some((request_line, start)) = hold_from {
            line.clear();
            held = Some((request_line, chunk[start..].to_vec()));
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// `METHOD /path HTTP/1.x`
fn is_request_line(text: &str) -> bool {
    let mut words = text.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    method.bytes().all(|b| b.is_ascii_uppercase())
        && path.starts_with('/')
        && version.starts_with("HTTP/1.")
}

/// An etcd stopped with SIGSTOP: its sockets stay open and accept
/// connections, but nothing answers — a hung etcd. Drop sends SIGCONT.
pub struct FrozenEtcd {
    pid: u32,
}

impl FrozenEtcd {
    /// Stops `etcd`'s process (which must be running).
    pub fn freeze(etcd: &Etcd) -> FrozenEtcd {
        let pid = etcd.pid().expect("freeze a running etcd");
        signal(pid, "STOP");
        FrozenEtcd { pid }
    }

    /// Lets etcd run again (what drop does, said out loud in a test).
    pub fn thaw(self) {}
}

impl Drop for FrozenEtcd {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        if !send_signal(self.pid, "CONT") {
            eprintln!("could not SIGCONT etcd (pid {})", self.pid);
        }
    }
}

fn signal(pid: u32, name: &str) {
    assert!(send_signal(pid, name), "kill -{name} {pid} failed");
}

fn send_signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|status| status.success())
}
