//! Wall-clock time shared by the engine's event times and the watch's receipt
//! times: both are taken on this host, from the same clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, like Docker's `timeNano`.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// When a change reached the watch: wall clock (to compare with the engine's
/// event times), monotonic clock (for durations within the run) and the etcd
/// revision that made it (one revision per transaction).
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub wall_ns: i128,
    pub at: Instant,
    pub revision: i64,
}

/// Milliseconds from `from_ns` to `to_ns`.
pub fn ms_between(from_ns: i128, to_ns: i128) -> f64 {
    (to_ns - from_ns) as f64 / 1e6
}
