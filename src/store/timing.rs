//! The facts of talking to etcd that the adapter and the simulator's store
//! share, so that the simulator cannot drift from what the agent really
//! does: the host lock's name, and how long a request or a connection may
//! stay silent.

use std::time::Duration;

use crate::record::HostPrefix;

/// Where the host locks of every prefix live: outside the records' root, so
/// that consumers reading records never see a candidate key.
pub const LOCK_ROOT: &str = "/docker-etcd-register/agents";

/// How long a request may take before the client gives up on it. A
/// campaign for the host lock is the exception: it waits for the holder for
/// as long as the holder holds, and is given no request timeout (a standby
/// that gave up every few seconds would lose its candidate key and write it
/// again, a revision each time, for ever).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting to an etcd endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on every connection, and how long one may go unanswered:
/// what ends a request without a timeout (a campaign) on a connection that
/// went silent.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The election name of the host lock of `prefix`:
/// `/docker-etcd-register/agents{prefix}/{host_ip}` (docs/host-lock.md: One agent per host).
pub fn lock_name(prefix: &HostPrefix) -> String {
    let prefix = prefix.as_str();
    format!("{LOCK_ROOT}{}", prefix.strip_suffix('/').unwrap_or(prefix))
}

/// The candidate key a campaign on `lease` puts under `lock_name`, as
/// etcd's election writes it: the lease in hex.
pub fn candidate_key(lock_name: &str, lease: i64) -> String {
    format!("{lock_name}/{lease:x}")
}
