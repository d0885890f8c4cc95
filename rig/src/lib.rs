//! The development rig of docker-etcd-register: what its integration tests
//! (`tests/`) and its benchmark (`examples/bench`) share. It is a workspace
//! member that is never published.
//!
//! - [`etcd`]: private etcd processes on loopback ports of the tests' own (one member,
//!   one with TLS client certificates, a three-member cluster), the client
//!   helpers that look at etcd from outside (`get_prefix`, `put`, `Watch`,
//!   `etcdctl`...) and the faults only etcd can show (its space quota).
//! - [`docker`]: the engine's CLI as an operator uses it (`docker`, or
//!   `podman` for [`Engine::Podman`]), labelled containers removed again on
//!   drop, image tags.
//! - [`agent`]: the agent binary as a child process, its stderr collected.
//! - [`http`]: GET over TCP (`/healthz`, `/metrics`) and over the engine's
//!   Unix socket, with hyper.
//! - [`pki`]: certificates for an etcd that requires TLS.
//! - [`process`]: processes in groups of their own, killed whole on drop;
//!   Ctrl-C noted by the benchmarks.
//! - [`proxies`]: Envoy's and Traefik's shipped static configuration with
//!   the run's own directory and ports.
//! - [`ports`]: the ports of every listener and published port of a test,
//!   from a block that no engine, no other test and not the kernel hands out.
//!
//! Everything that starts a process or a container removes it on drop, so a
//! failing test or an interrupted benchmark leaves nothing behind.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub mod agent;
pub mod docker;
pub mod etcd;
pub mod http;
pub mod pki;
pub mod ports;
pub mod process;
pub mod proxies;

pub use agent::{Agent, AgentOutput, AGENT_ENV};
pub use docker::{
    bindings, docker, host_port, image_id, is_running, require_docker, try_docker,
    wait_not_running, Binding, Containers, DockerError, Engine, TagGuard, DOCKER_SOCKET, IMAGE,
    LABEL_KEY, PODMAN_IMAGE, PODMAN_SOCKET,
};
pub use etcd::{
    delete, etcdctl, get_prefix, lease_grant, lease_ttl, put, revision, set_client_security,
    try_get_prefix, Etcd, EtcdCluster, EtcdError, Record, Watch, WatchEvent, ETCD_BIN,
};
pub use http::http_get;
pub use pki::TestPki;
pub use ports::next as test_port;

/// How long the agent may take to react to a Docker event, generous because
/// the suites run in parallel on a small machine.
pub const REACT: Duration = Duration::from_secs(10);
/// Upper bound for Docker operations and start-up.
pub const SLOW: Duration = Duration::from_secs(60);

/// The runtime the blocking helpers run their async clients on (etcd, HTTP,
/// the `docker` CLI): two workers, so that a background watch keeps
/// receiving while a caller blocks.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Polls `cond` every 20 ms until it holds or `timeout` has passed.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A unique id for one test: its name, the process id and a counter.
pub fn unique_id(name: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A loopback address `127.a.b.1` derived from the test id (`a` never 0), so
/// that appending a `0` gives another valid address whose string has this one
/// as a prefix.
pub fn host_ip_for(id: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    let h = hasher.finish();
    format!("127.{}.{}.1", 1 + (h % 254), (h >> 8) % 256)
}
