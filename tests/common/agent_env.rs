//! The environment variables the agent reads: removed from every agent a
//! test or the benchmark spawns, so that none leaks in from the caller.
//! Shared by `tests/` and `examples/bench`.

pub const AGENT_ENV: &[&str] = &[
    "HOST_IP",
    "ETCD_ENDPOINT",
    "REGISTER_PREFIX",
    "REGISTER_TTL",
    "REGISTER_RESYNC",
    "REGISTER_REQUIRE_LABELS",
    "REGISTER_DEREGISTER_ON_EXIT",
    "REGISTER_REQUIRE_HEALTHY",
    "REGISTER_METRICS_ADDR",
    "DOCKER_HOST",
    "ETCD_CACERT",
    "ETCD_CERT",
    "ETCD_KEY",
    "ETCD_USER",
    "ETCD_PASSWORD",
    "ETCD_PASSWORD_FILE",
    "LOG_FORMAT",
    "RUST_LOG",
];
