//! The ports of everything a test listens on or publishes: etcd's client
//! and peer ports, haproxy's and nginx's frontends, the agent's metrics, and
//! every host port a test container publishes.
//!
//! Why a block of its own: the engines' random host ports (Podman binds
//! port 0 and lets the kernel choose; Docker draws from the kernel's
//! ephemeral range), the kernel's ephemeral ports (every client socket,
//! every bind to port 0) and "a port that was free a moment ago" all came
//! from one range, so a port one of them had just found free was taken by
//! another before it was bound: "bind: address already in use", one run in
//! a few. Retrying hides that; disjoint ranges remove it:
//!
//! - [`TEST_PORTS`] is outside the kernel's ephemeral range:
//!   `scripts/setup.sh` adds it to `net.ipv4.ip_local_reserved_ports`, so
//!   that the kernel never hands one of them out by itself whatever
//!   `ip_local_port_range` a machine has. [`next`] checks that it holds.
//! - No engine ever chooses a port for a test: [`pin_published`] gives every
//!   `-p` that names no host port one from this block.
//! - Inside the block, a process takes sub-blocks of [`BLOCK_LEN`] ports by
//!   an exclusive lock on a file of the sub-block (the kernel releases it
//!   when the process ends, however it ends), and hands their ports out one
//!   after another, never twice. Test binaries running at the same time
//!   therefore never share a port, and neither do the tests of one binary.
//! - A port that something left over from an earlier run still holds is
//!   skipped.

use std::fs::{File, TryLockError};
use std::net::{TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Mutex;

/// The ports the tests own: below Linux's default ephemeral range
/// (32768-60999), and reserved from it by `scripts/setup.sh` anyway.
pub const TEST_PORTS: RangeInclusive<u16> = 20000..=32767;
/// Ports a process takes at once; a test binary that needs more takes
/// another sub-block.
const BLOCK_LEN: u16 = 256;
/// The longest run of consecutive ports one call may ask for: a few
/// sub-blocks side by side (a container publishing a range of 500).
const MAX_RUN: u16 = 4 * BLOCK_LEN;

/// This process's sub-blocks and the next port to hand out.
struct Allocator {
    /// The locked lock files of the sub-blocks taken: held (never read) for
    /// as long as the process lives, so that no other process takes them.
    held: Vec<File>,
    /// Ports of the current sub-block not handed out yet.
    unused: RangeInclusive<u16>,
}

static ALLOCATOR: Mutex<Allocator> = Mutex::new(Allocator {
    held: Vec::new(),
    #[allow(clippy::reversed_empty_ranges)]
    unused: 1..=0,
});

/// A loopback port of [`TEST_PORTS`] that no other test, process of this
/// suite, engine or the kernel hands out: for a listener of the test's own
/// or a container's host port.
pub fn next() -> u16 {
    next_run(1)
}

/// `len` consecutive ports of [`TEST_PORTS`] (see [`next`]), at most
/// [`MAX_RUN`]; the first. A run longer than a sub-block takes as many
/// neighbouring sub-blocks as it needs.
pub fn next_run(len: u16) -> u16 {
    assert!((1..=MAX_RUN).contains(&len), "a run of {len} ports");
    let mut allocator = ALLOCATOR.lock().unwrap_or_else(|e| e.into_inner());
    if allocator.held.is_empty() {
        check_kernel_leaves_test_ports_alone();
    }
    loop {
        let (start, end) = (*allocator.unused.start(), *allocator.unused.end());
        if !allocator.unused.is_empty() && end - start >= len - 1 {
            allocator.unused = start + len..=end;
            if (start..start + len).all(is_unbound) {
                return start;
            }
        } else {
            allocator.take_blocks(len.div_ceil(BLOCK_LEN));
        }
    }
}

impl Allocator {
    /// Locks the first `count` neighbouring sub-blocks no other process
    /// holds, and hands their ports out next.
    fn take_blocks(&mut self, count: u16) {
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // A sub-block another process holds only for a moment (its own
        // all-or-none try) is free again on a later pass.
        for pass in 0..3 {
            if pass > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            let mut start = *TEST_PORTS.start();
            while let Some(end) = start.checked_add(count * BLOCK_LEN - 1) {
                if end > *TEST_PORTS.end() {
                    break;
                }
                match self.lock_run(&dir, start, count) {
                    Some(files) => {
                        self.held.extend(files);
                        self.unused = start..=end;
                        return;
                    }
                    None => start += BLOCK_LEN,
                }
            }
        }
        panic!(
            "no {count} neighbouring sub-blocks of {TEST_PORTS:?} are free of this and other \
             test processes (lock files in {})",
            dir.display()
        );
    }

    /// Locks the `count` sub-blocks from `start` on, all or none (a lock
    /// taken is released again, by dropping its file, when a later one is
    /// held by someone else); a sub-block this process already holds counts
    /// as taken, since its ports may be out already.
    fn lock_run(&self, dir: &std::path::Path, start: u16, count: u16) -> Option<Vec<File>> {
        let mut files = Vec::new();
        for block in 0..count {
            let first = start + block * BLOCK_LEN;
            let path = dir.join(format!("{first}-{}.lock", first + BLOCK_LEN - 1));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            if self.held.iter().any(|held| same_file(held, &file)) {
                return None;
            }
            match file.try_lock() {
                Ok(()) => files.push(file),
                Err(TryLockError::WouldBlock) => return None,
                Err(TryLockError::Error(e)) => panic!("lock {}: {e}", path.display()),
            }
        }
        Some(files)
    }
}

fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Where the sub-blocks' lock files are: one directory for every process
/// of the machine's user (the suite runs as root).
fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("docker-etcd-register-test-ports")
}

/// Whether nothing holds `port`, TCP or UDP, on any address: a leftover
/// of an earlier run (an etcd whose test was killed, a container's proxy)
/// may.
fn is_unbound(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && UdpSocket::bind(("0.0.0.0", port)).is_ok()
}

/// Panics unless the kernel never hands out a port of [`TEST_PORTS`] by
/// itself: they are outside `ip_local_port_range` or all in
/// `ip_local_reserved_ports`.
fn check_kernel_leaves_test_ports_alone() {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .unwrap_or_else(|e| panic!("read net.ipv4.{name}: {e}"))
    };
    let ephemeral = parse_ranges(&read("ip_local_port_range").replace(['\t', ' '], "-"));
    let reserved = parse_ranges(&read("ip_local_reserved_ports"));
    let kernel_may_hand_out = |port: u16| {
        ephemeral.iter().any(|r| r.contains(&port)) && !reserved.iter().any(|r| r.contains(&port))
    };
    if let Some(port) = TEST_PORTS.clone().find(|&p| kernel_may_hand_out(p)) {
        panic!(
            "the kernel may hand out port {port} of the tests' ports {TEST_PORTS:?} itself \
             (net.ipv4.ip_local_port_range {ephemeral:?}, not in ip_local_reserved_ports): \
             run `bash scripts/setup.sh`, which reserves them"
        );
    }
}

/// `20000-32767,40000` (the kernel's list syntax; `ip_local_port_range`'s
/// blanks turned into `-` by the caller) as ranges.
fn parse_ranges(list: &str) -> Vec<RangeInclusive<u16>> {
    list.trim()
        .split(',')
        .filter(|item| !item.is_empty())
        .filter_map(|item| {
            let mut bounds = item.split('-').filter(|b| !b.is_empty());
            let low: u16 = bounds.next()?.trim().parse().ok()?;
            let high: u16 = match bounds.next() {
                Some(high) => high.trim().parse().ok()?,
                None => low,
            };
            Some(low..=high)
        })
        .collect()
}

/// `ARGS` of `docker run` / `docker create` / `podman pod create`, every
/// `-p` / `--publish` that names no host port given one of [`next_run`]
/// (`127.0.0.1::80` → `127.0.0.1:20007:80`, `80/udp` → `20008:80/udp`), so
/// that no engine chooses a port that the kernel or the other engine can
/// hand out too. The binding's address, protocol and container port stay as
/// the test wrote them. `-P` cannot be pinned and is refused.
pub fn pin_published(args: &[&str]) -> Vec<String> {
    let mut pinned = Vec::with_capacity(args.len());
    let mut publish_follows = false;
    for &arg in args {
        assert!(
            arg != "-P" && arg != "--publish-all",
            "a test publishes its ports by name (-p), never with {arg}: the engine would choose them"
        );
        if publish_follows {
            pinned.push(pin_spec(arg));
            publish_follows = false;
        } else if let Some(spec) = arg.strip_prefix("--publish=") {
            pinned.push(format!("--publish={}", pin_spec(spec)));
        } else {
            publish_follows = arg == "-p" || arg == "--publish";
            pinned.push(arg.to_string());
        }
    }
    pinned
}

/// One `-p` value with its host port filled in if it names none: the forms
/// are `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`, `IP` maybe `[v6]`, and a
/// container port may be a range `A-B` (then so is the host port). What is
/// not of that form (a `-p` of the container's command) is kept.
fn pin_spec(spec: &str) -> String {
    match unpinned_binding(spec) {
        Some((ip, container, proto, len)) => {
            let first = next_run(len);
            let host = match len {
                1 => first.to_string(),
                _ => format!("{first}-{}", first + len - 1),
            };
            let ip = ip.map(|ip| format!("{ip}:")).unwrap_or_default();
            let proto = proto.map(|proto| format!("/{proto}")).unwrap_or_default();
            format!("{ip}{host}:{container}{proto}")
        }
        None => spec.to_string(),
    }
}

/// The address, container port(s), protocol and number of ports of a `-p`
/// value that names no host port; `None` for any other string.
fn unpinned_binding(spec: &str) -> Option<(Option<&str>, &str, Option<&str>, u16)> {
    let (binding, proto) = match spec.split_once('/') {
        Some((binding, proto)) => (binding, Some(proto)),
        None => (spec, None),
    };
    // The address is what stands before `HOST_PORT:CONTAINER_PORT`.
    let (ip, ports) = match binding.strip_prefix('[') {
        Some(_) => {
            let (ip, ports) = binding.split_once("]:")?;
            (Some(&binding[..ip.len() + 1]), ports)
        }
        None => match binding.matches(':').count() {
            0 | 1 => (None, binding),
            2 => {
                let (ip, ports) = binding.split_once(':')?;
                (Some(ip), ports)
            }
            _ => return None,
        },
    };
    let (host, container) = ports.rsplit_once(':').unwrap_or(("", ports));
    if !host.is_empty() {
        return None;
    }
    let len = match container.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (low.parse::<u16>().ok()?, high.parse::<u16>().ok()?);
            high.checked_sub(low)?.checked_add(1)?
        }
        None => container.parse::<u16>().map(|_| 1).ok()?,
    };
    Some((ip, container, proto, len))
}

#[cfg(test)]
mod tests;
