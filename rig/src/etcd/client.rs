//! Clients of the rig's etcd helpers, one per endpoint and cached, with the
//! TLS material or user a test set for that endpoint, and the blocking
//! helpers built on them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};

use super::server::etcd_bin;
use crate::runtime;

/// The environment variable that names another `etcdctl` binary.
pub const ETCDCTL_BIN_VAR: &str = "RIG_ETCDCTL_BIN";

/// The `etcdctl` the rig and the tests run: `$RIG_ETCDCTL_BIN` when it is
/// set and not empty, else the `etcdctl` beside the etcd binary the rig
/// starts ([`etcd_bin`](super::etcd_bin): `/usr/bin/etcdctl` by default,
/// `/usr/local/lib/etcd-3.5/bin/etcdctl` beside 3.5's), else `etcdctl` on
/// `PATH`.
pub fn etcdctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os(ETCDCTL_BIN_VAR).filter(|b| !b.is_empty()) {
            return PathBuf::from(bin);
        }
        etcd_bin()
            .parent()
            .map(|dir| dir.join("etcdctl"))
            .filter(|beside| beside.exists())
            .unwrap_or_else(|| PathBuf::from("etcdctl"))
    })
}

/// Extra connect options (TLS, a user) of the helpers' clients, by endpoint.
type Secure = Arc<dyn Fn(ConnectOptions) -> ConnectOptions + Send + Sync>;

fn clients() -> &'static Mutex<HashMap<String, Client>> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Client>>> = OnceLock::new();
    CLIENTS.get_or_init(Default::default)
}

fn secured() -> &'static Mutex<HashMap<String, Secure>> {
    static SECURED: OnceLock<Mutex<HashMap<String, Secure>>> = OnceLock::new();
    SECURED.get_or_init(Default::default)
}

/// From now on every helper that talks to `endpoint` (`get_prefix`, `put`,
/// `delete`, `Watch`...) connects with `secure` applied to its options: TLS
/// material or an etcd user. The client cached so far is dropped.
pub fn set_client_security(
    endpoint: &str,
    secure: impl Fn(ConnectOptions) -> ConnectOptions + Send + Sync + 'static,
) {
    secured()
        .lock()
        .unwrap()
        .insert(endpoint.to_string(), Arc::new(secure));
    clients().lock().unwrap().remove(endpoint);
}

/// A new client of `endpoint`: short timeouts (a test must fail, not hang,
/// when etcd does not answer) and the security set for it.
pub async fn connect(endpoint: &str) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    let secure = secured().lock().unwrap().get(endpoint).cloned();
    if let Some(secure) = secure {
        options = secure(options);
    }
    Client::connect([endpoint], Some(options)).await
}

/// The cached client of `endpoint`, connected on first use.
pub fn try_client(endpoint: &str) -> Result<Client, etcd_client::Error> {
    if let Some(c) = clients().lock().unwrap().get(endpoint) {
        return Ok(c.clone());
    }
    let c = runtime().block_on(connect(endpoint))?;
    clients()
        .lock()
        .unwrap()
        .insert(endpoint.to_string(), c.clone());
    Ok(c)
}

/// Like [`try_client`], panicking on failure.
pub fn client(endpoint: &str) -> Client {
    try_client(endpoint).unwrap_or_else(|e| panic!("etcd client for {endpoint}: {e}"))
}

/// One key as seen in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The value, which the agent always writes as UTF-8 JSON.
    pub value: String,
    /// Changes with every write: tells a rewrite from no write.
    pub mod_revision: i64,
    /// Changes only when the key is created again: tells a re-creation.
    pub create_revision: i64,
    /// The lease the key is attached to (0 for none).
    pub lease: i64,
}

/// Every key under `prefix` (a plain string prefix) with its record; the
/// error text when etcd does not answer.
pub fn try_get_prefix(endpoint: &str, prefix: &str) -> Result<BTreeMap<String, Record>, String> {
    let mut c = try_client(endpoint).map_err(|e| e.to_string())?;
    let resp = runtime()
        .block_on(c.get(prefix, Some(GetOptions::new().with_prefix())))
        .map_err(|e| e.to_string())?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf-8 key").to_string(),
                Record {
                    value: kv.value_str().expect("utf-8 value").to_string(),
                    mod_revision: kv.mod_revision(),
                    create_revision: kv.create_revision(),
                    lease: kv.lease(),
                },
            )
        })
        .collect())
}

/// Every key under `prefix` (a plain string prefix) with its record.
pub fn get_prefix(endpoint: &str, prefix: &str) -> BTreeMap<String, Record> {
    try_get_prefix(endpoint, prefix).unwrap_or_else(|e| panic!("etcd get {prefix}: {e}"))
}

/// Puts `key`, attached to `lease` unless it is 0; returns the new revision.
pub fn put(endpoint: &str, key: &str, value: &str, lease: i64) -> i64 {
    let mut c = client(endpoint);
    let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    let resp = runtime()
        .block_on(c.put(key, value, options))
        .unwrap_or_else(|e| panic!("etcd put {key}: {e}"));
    resp.header().expect("put header").revision()
}

/// Grants a lease of `ttl` seconds and returns its id.
pub fn lease_grant(endpoint: &str, ttl: i64) -> i64 {
    let mut c = client(endpoint);
    runtime()
        .block_on(c.lease_grant(ttl, None))
        .unwrap_or_else(|e| panic!("etcd lease grant: {e}"))
        .id()
}

/// Deletes `key`; returns how many keys were deleted.
pub fn delete(endpoint: &str, key: &str) -> i64 {
    let mut c = client(endpoint);
    runtime()
        .block_on(c.delete(key, None))
        .unwrap_or_else(|e| panic!("etcd delete {key}: {e}"))
        .deleted()
}

/// The remaining TTL of `lease` in seconds; `-1` when etcd no longer knows it.
pub fn lease_ttl(endpoint: &str, lease: i64) -> i64 {
    let mut c = client(endpoint);
    runtime()
        .block_on(c.lease_time_to_live(lease, None))
        .unwrap_or_else(|e| panic!("etcd lease time-to-live {lease:x}: {e}"))
        .ttl()
}

/// The current revision of the store.
pub fn revision(endpoint: &str) -> i64 {
    let mut c = client(endpoint);
    runtime()
        .block_on(c.get("/", Some(GetOptions::new().with_count_only())))
        .unwrap_or_else(|e| panic!("etcd get revision: {e}"))
        .header()
        .expect("get header")
        .revision()
}

/// Runs `ETCDCTL_API=3 etcdctl --endpoints <endpoints> ARGS...` (the
/// [`etcdctl_bin`]) and returns its trimmed stdout, panicking on failure.
/// The caller's `ETCDCTL_*` variables are removed, so that only `endpoints`
/// is talked to.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(etcdctl_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("ETCDCTL") {
            cmd.env_remove(key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args);
    let what = format!("{} {args:?}", etcdctl_bin().display());
    let out = crate::process::output_ok(&mut cmd, &what, "scripts/setup.sh installs it");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
