//! etcd for the tests and the benchmark: private processes (`server`,
//! `cluster`), helpers that look at etcd from outside through
//! `etcd_client` (`client`, `watch`), and etcd's own faults (`faults`).
//! `RIG_ETCD_BIN` chooses the etcd binary (Debian's 3.4 by default), and so
//! the `etcdctl` beside it (`server`'s docs: Which etcd).

mod client;
mod cluster;
pub mod faults;
mod server;
mod watch;

pub use client::{
    client, connect, delete, etcdctl, etcdctl_bin, get_prefix, lease_grant, lease_ttl, put,
    revision, set_client_security, try_client, try_get_prefix, Record, ETCDCTL_BIN_VAR,
};
pub use cluster::EtcdCluster;
pub use server::{etcd_bin, Etcd, EtcdError, ETCD_BIN, ETCD_BIN_VAR};
pub use watch::{follow_prefix, FollowError, Watch, WatchEvent};
