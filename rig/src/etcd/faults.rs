//! Helpers for tests where etcd refuses writes for a while or where several
//! agents meet: filling etcd's space quota until it raises the NOSPACE alarm
//! and freeing it again, reading a lease's granted TTL and keys, the host
//! lock's election keys, a foreign writer that keeps overwriting one key, and
//! reading `/healthz` and `/metrics` of `--metrics-addr`.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use etcd_client::LeaseTimeToLiveOptions;

use super::client::{client, etcdctl, get_prefix, put, revision, Record};
use crate::http::http_get;
use crate::{runtime, wait_until};
/// The etcd flag that makes its space quota small enough to fill within a
/// second or two: 4 MiB, well above the ~20 KiB an empty etcd 3.4 needs.
pub const SMALL_QUOTA_FLAGS: [&str; 2] = ["--quota-backend-bytes", "4194304"];

/// One junk value: 256 KiB, below etcd's default request limit (1.5 MiB), so
/// ~16 of them exceed `SMALL_QUOTA_FLAGS`.
const JUNK_BYTES: usize = 256 * 1024;

/// What etcd answers to a write while the NOSPACE alarm is raised.
pub const NOSPACE_MESSAGE: &str = "database space exceeded";

/// Puts `key` without a lease; the error text on failure.
pub fn try_put(endpoint: &str, key: &str, value: &str) -> Result<i64, String> {
    let mut c = client(endpoint);
    runtime()
        .block_on(c.put(key, value, None))
        .map(|resp| resp.header().map_or(0, |h| h.revision()))
        .map_err(|e| e.to_string())
}

/// `etcdctl alarm list`: one line per raised alarm, empty when none is.
pub fn alarms(endpoint: &str) -> String {
    etcdctl(endpoint, &["alarm", "list"])
}

/// Writes junk keys under `junk_prefix` (which must lie outside the agent's
/// prefix) until etcd refuses with "database space exceeded", and checks
/// that `etcdctl alarm list` then shows NOSPACE. Returns how many keys it
/// wrote.
pub fn fill_quota(endpoint: &str, junk_prefix: &str) -> usize {
    let junk = "x".repeat(JUNK_BYTES);
    for i in 0..200 {
        match try_put(endpoint, &format!("{junk_prefix}{i}"), &junk) {
            Ok(_) => continue,
            Err(e) if e.contains(NOSPACE_MESSAGE) => {
                let raised = alarms(endpoint);
                assert!(
                    raised.contains("NOSPACE"),
                    "etcd refused a write with {e:?} but `alarm list` says {raised:?}"
                );
                return i;
            }
            Err(e) => panic!("filling the quota: put {i} failed otherwise: {e}"),
        }
    }
    panic!("200 junk values of {JUNK_BYTES} bytes did not exceed etcd's space quota");
}

/// Gives the space back as an operator would: deletes the junk, compacts to
/// the current revision, defragments and disarms the alarm. Returns the
/// moment etcd accepted writes again (right after the disarm).
pub fn free_quota(endpoint: &str, junk_prefix: &str) -> Instant {
    etcdctl(endpoint, &["del", "--prefix", junk_prefix]);
    let now = revision(endpoint).to_string();
    etcdctl(endpoint, &["compact", &now, "--physical"]);
    etcdctl(endpoint, &["defrag"]);
    etcdctl(endpoint, &["alarm", "disarm"]);
    let disarmed = Instant::now();
    let left = alarms(endpoint);
    assert!(left.is_empty(), "alarms left after the disarm: {left}");
    disarmed
}

/// The TTL a lease was granted with and the keys it carries; `None` when
/// etcd no longer knows the lease.
pub fn lease_info(endpoint: &str, lease: i64) -> Option<(i64, Vec<String>)> {
    let mut c = client(endpoint);
    let resp = runtime()
        .block_on(c.lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys())))
        .unwrap_or_else(|e| panic!("etcd lease time-to-live {lease:x}: {e}"));
    if resp.ttl() == -1 {
        return None;
    }
    let keys = resp
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    Some((resp.granted_ttl(), keys))
}

/// Revokes `lease` if etcd still knows it; whether it did.
pub fn revoke_if_alive(endpoint: &str, lease: i64) -> bool {
    let mut c = client(endpoint);
    runtime().block_on(c.lease_revoke(lease)).is_ok()
}

/// The election name agents of one host campaign under:
/// `/docker-etcd-register/agents{prefix}/{host_ip}`.
pub fn election_name(prefix: &str, host_ip: &str) -> String {
    format!("/docker-etcd-register/agents{prefix}/{host_ip}")
}

/// The candidate keys of an election (`<name>/<lease hex>`), with records.
pub fn candidates(endpoint: &str, election: &str) -> BTreeMap<String, Record> {
    get_prefix(endpoint, &format!("{election}/"))
}

/// This machine's hostname, as the agent puts it into its candidate value.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read /proc/sys/kernel/hostname")
        .trim()
        .to_string()
}

/// Overwrites `key` (no lease) with a new junk value every `every` for
/// `during`, like a misconfigured second writer. Returns the revisions of
/// its first and last put.
pub fn overwrite_repeatedly(
    endpoint: &str,
    key: &str,
    every: Duration,
    during: Duration,
) -> (i64, i64) {
    let start = Instant::now();
    let (mut first, mut last) = (0, 0);
    let mut n = 0u64;
    while start.elapsed() < during {
        let revision = put(
            endpoint,
            key,
            &format!("junk from a foreign writer #{n}"),
            0,
        );
        if first == 0 {
            first = revision;
        }
        last = revision;
        n += 1;
        thread::sleep(every);
    }
    (first, last)
}

/// Whether a log line carries `name=value`, quoted or not.
pub fn has_field(line: &str, name: &str, value: &str) -> bool {
    line.contains(&format!("{name}={value}")) || line.contains(&format!("{name}=\"{value}\""))
}

// ------------------------------------------------------------------ http

/// `GET /healthz`: status and body; `(0, error)` when nothing answers.
pub fn healthz(addr: &str) -> (u16, String) {
    http_get(addr, "/healthz").unwrap_or_else(|e| (0, e))
}

/// Every sample of `/metrics`, by series (`name{labels}`).
pub fn metrics(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

pub const HOST_LOCK_HELD: &str = "docker_etcd_register_host_lock_held";
pub const ETCD_CONNECTED: &str = "docker_etcd_register_connected{dependency=\"etcd\"}";
pub const ETCD_ERRORS: &str = "docker_etcd_register_etcd_errors_total";

/// Waits until series `series` of `/metrics` at `addr` is `value`; panics
/// with the last exposition otherwise.
pub fn wait_metric(addr: &str, series: &str, value: f64, timeout: Duration) {
    let mut last = BTreeMap::new();
    let ok = wait_until(timeout, || {
        last = metrics(addr);
        last.get(series) == Some(&value)
    });
    assert!(
        ok,
        "{series} at {addr} did not become {value} within {timeout:?}; last /metrics:\n{last:#?}"
    );
}

/// Waits until `/healthz` at `addr` answers `status`; the last answer.
pub fn wait_healthz(addr: &str, status: u16, timeout: Duration) -> (u16, String) {
    let mut last = (0, String::new());
    let ok = wait_until(timeout, || {
        last = healthz(addr);
        last.0 == status
    });
    assert!(
        ok,
        "/healthz at {addr} did not answer {status} within {timeout:?}; last: {last:?}"
    );
    last
}
