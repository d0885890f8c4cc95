//! etcd for the tests and the benchmark: private processes (`server`,
//! `cluster`), helpers that look at etcd from outside through
//! `etcd_client` (`client`, `watch`), and etcd's own faults (`faults`).

mod client;
mod cluster;
pub mod faults;
mod server;
mod watch;

pub use client::{
    client, connect, delete, etcdctl, get_prefix, lease_grant, lease_ttl, put, revision,
    set_client_security, try_client, try_get_prefix, Record,
};
pub use cluster::EtcdCluster;
pub use server::{Etcd, EtcdError, ETCD_BIN};
pub use watch::{follow_prefix, FollowError, Watch, WatchEvent};
