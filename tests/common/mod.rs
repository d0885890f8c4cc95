//! Shared harness of the integration tests: a private etcd per test, the agent
//! binary as a child process, Docker containers started through the `docker`
//! CLI and removed again on drop, and helpers to look at etcd from outside.
//!
//! Every test gets a unique id. Its containers carry the label
//! `docker-etcd-register.test=<id>` and its agent requires that label, so tests
//! running in parallel on one Docker engine never see each other's containers.
//!
//! For fault injection it also has a three-member `EtcdCluster`, a
//! `DockerRelay` (a unix-socket relay in front of the Docker socket that can be
//! cut and restored), an independent etcd `Watch`, `etcdctl`, and
//! `expected_records`, which computes from Docker itself the exact records an
//! agent must hold.
//!
//! For etcd security it makes certificates (`TestPki`), starts an etcd that
//! requires TLS client certificates (`Etcd::start_tls`), and lets the etcd
//! helpers connect with TLS or as an etcd user (`set_client_security`).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use docker_etcd_register::record::{Endpoint, RecordKey};
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};

pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const LABEL_KEY: &str = "docker-etcd-register.test";
pub const IMAGE: &str = "busybox:latest";
/// How long the agent may take to react to a Docker event, generous because
/// the suites run in parallel on a small machine.
pub const REACT: Duration = Duration::from_secs(10);
/// Upper bound for Docker operations and start-up.
pub const SLOW: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- utilities

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

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// The exact value the agent must write: a compact JSON array with one object
/// per binding `(ip, public_port, private_port, port_type)`, in the given
/// order, in the record format the agent itself defines (`record::Endpoint`,
/// whose exact bytes its unit tests pin down).
pub fn expected_value(id: &str, image: &str, bindings: &[(&str, &str, &str, &str)]) -> String {
    let endpoints: Vec<Endpoint> = bindings
        .iter()
        .map(|(ip, public, private, proto)| Endpoint {
            container: (*id).into(),
            image: image.into(),
            ip: (*ip).into(),
            public_port: (*public).into(),
            private_port: (*private).into(),
            port_type: (*proto).into(),
        })
        .collect();
    Endpoint::encode(&endpoints)
}

/// The key of a record under the default root `/registered/`.
pub fn record_key(host_ip: &str, image: &str, id: &str) -> String {
    RecordKey {
        root: "/registered/",
        host: host_ip,
        image,
        container: id,
    }
    .to_string()
}

// --------------------------------------------------------------------- etcd

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fn clients() -> &'static Mutex<HashMap<String, Client>> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Client>>> = OnceLock::new();
    CLIENTS.get_or_init(Default::default)
}

/// Extra connect options (TLS, a user) of the helpers' clients, by endpoint.
type Secure = Arc<dyn Fn(ConnectOptions) -> ConnectOptions + Send + Sync>;

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

fn client(endpoint: &str) -> Client {
    let clients = clients();
    if let Some(c) = clients.lock().unwrap().get(endpoint) {
        return c.clone();
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    let secure = secured().lock().unwrap().get(endpoint).cloned();
    if let Some(secure) = secure {
        options = secure(options);
    }
    let c = runtime()
        .block_on(Client::connect([endpoint], Some(options)))
        .unwrap_or_else(|e| panic!("etcd client for {endpoint}: {e}"));
    clients
        .lock()
        .unwrap()
        .insert(endpoint.to_string(), c.clone());
    c
}

/// One key as seen in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub lease: i64,
}

pub fn try_get_prefix(endpoint: &str, prefix: &str) -> Result<BTreeMap<String, Record>, String> {
    let mut c = client(endpoint);
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

/// Runs `ETCDCTL_API=3 etcdctl --endpoints <endpoints> ARGS...` and returns its
/// trimmed stdout, panicking on failure.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("etcdctl");
    for (key, _) in std::env::vars() {
        if key.starts_with("ETCDCTL") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run etcdctl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One event seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub delete: bool,
    pub key: String,
    pub value: String,
    pub lease: i64,
    pub revision: i64,
}

/// An independent etcd watch on a key prefix, recording every event from the
/// revision after the one current when it was created. It never reconnects:
/// if its stream fails, `check` panics, so a test cannot miss events silently.
pub struct Watch {
    events: Arc<Mutex<Vec<WatchEvent>>>,
    failure: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    pub fn prefix(endpoint: &str, prefix: &str) -> Watch {
        let start = revision(endpoint) + 1;
        let mut c = client(endpoint);
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = runtime()
            .block_on(c.watch(prefix, Some(options)))
            .unwrap_or_else(|e| panic!("etcd watch {prefix}: {e}"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let failure = Arc::new(Mutex::new(None));
        let (sink, failed) = (events.clone(), failure.clone());
        let task = runtime().spawn(async move {
            let reason = loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            break format!("watch canceled: {}", response.cancel_reason());
                        }
                        let mut sink = sink.lock().unwrap();
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            sink.push(WatchEvent {
                                delete: event.event_type() == EventType::Delete,
                                key: kv.key_str().unwrap_or_default().to_string(),
                                value: kv.value_str().unwrap_or_default().to_string(),
                                lease: kv.lease(),
                                revision: kv.mod_revision(),
                            });
                        }
                    }
                    Ok(None) => break "watch stream ended".to_string(),
                    Err(e) => break format!("watch stream failed: {e}"),
                }
            };
            *failed.lock().unwrap() = Some(reason);
        });
        Watch {
            events,
            failure,
            task,
        }
    }

    /// Every event so far; panics if the watch has failed.
    pub fn events(&self) -> Vec<WatchEvent> {
        self.check();
        self.events.lock().unwrap().clone()
    }

    /// Panics if the watch stream failed (events may have been missed).
    pub fn check(&self) {
        if let Some(reason) = self.failure.lock().unwrap().clone() {
            panic!("the independent etcd watch is broken: {reason}");
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A private etcd member on free loopback ports: a single-member cluster of
/// its own (`Etcd::start`) or one member of an [`EtcdCluster`].
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster` and `--initial-cluster-token`; `None` for a
    /// single-member cluster of its own.
    cluster: Option<(String, String)>,
    /// Serves clients over TLS with client-certificate authentication
    /// (`Etcd::start_tls`); its certificate files are in `dir`.
    tls: bool,
    /// More etcd flags (`Etcd::start_with_flags`), say a small
    /// `--quota-backend-bytes`, for faults only such an etcd can show.
    extra_flags: Vec<String>,
}

impl Etcd {
    pub fn start() -> Etcd {
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut etcd = Etcd::reserve();
            match etcd.spawn_and_wait() {
                Ok(()) => return etcd,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// Like `start`, with more etcd flags appended to the command line.
    pub fn start_with_flags(flags: &[&str]) -> Etcd {
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut etcd = Etcd::reserve();
            etcd.extra_flags = flags.iter().map(|f| f.to_string()).collect();
            match etcd.spawn_and_wait() {
                Ok(()) => return etcd,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd with {flags:?} did not start: {last_error}");
    }

    /// A single member that serves clients only on `https://127.0.0.1:<port>`,
    /// with the server certificate of `pki` and `--client-cert-auth` (clients
    /// must present a certificate signed by `pki`'s CA). The helpers
    /// (`get_prefix`, `put`, `Watch`...) reach it with `pki`'s client
    /// certificate.
    pub fn start_tls(pki: &TestPki) -> Etcd {
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut etcd = Etcd::reserve();
            etcd.tls = true;
            for (from, to) in [
                (pki.ca(), "ca.pem"),
                (pki.server_cert(), "server.pem"),
                (pki.server_key(), "server-key.pem"),
            ] {
                std::fs::copy(&from, etcd.dir.path().join(to))
                    .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            }
            let ca = std::fs::read(pki.ca()).unwrap();
            let cert = std::fs::read(pki.client_cert()).unwrap();
            let key = std::fs::read(pki.client_key()).unwrap();
            set_client_security(&etcd.endpoint(), move |options| {
                options.with_tls(
                    etcd_client::TlsOptions::new()
                        .ca_certificate(etcd_client::Certificate::from_pem(&ca))
                        .identity(etcd_client::Identity::from_pem(&cert, &key)),
                )
            });
            match etcd.spawn_and_wait() {
                Ok(()) => return etcd,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd with TLS did not start: {last_error}");
    }

    /// An etcd that is not running yet: ports and data directory are chosen,
    /// nothing listens on them until `restart`.
    pub fn reserve() -> Etcd {
        assert!(
            Path::new(ETCD_BIN).exists(),
            "{ETCD_BIN} is missing: run `bash scripts/setup.sh` to install etcd-server"
        );
        let client_port = free_port();
        let mut peer_port = free_port();
        while peer_port == client_port {
            peer_port = free_port();
        }
        Etcd {
            child: None,
            dir: tempfile::tempdir().expect("etcd temp dir"),
            name: unique_id("etcd"),
            client_port,
            peer_port,
            cluster: None,
            tls: false,
            extra_flags: Vec::new(),
        }
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills etcd (SIGKILL), keeping its data directory and ports for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd (again) on the same ports and data and waits until it
    /// answers a linearizable read.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait()
            .unwrap_or_else(|e| panic!("etcd did not restart: {e}"));
    }

    /// Kills etcd and starts a new, empty one of another name (so another
    /// cluster and member id) on the same ports, with a fresh data directory.
    pub fn replace_with_empty(&mut self) {
        assert!(self.cluster.is_none(), "only a single member is replaced");
        self.stop();
        std::fs::remove_dir_all(self.dir.path().join("data")).expect("remove etcd data dir");
        self.name = unique_id("etcd");
        self.spawn_and_wait()
            .unwrap_or_else(|e| panic!("the empty etcd did not start: {e}"));
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn();
        self.wait_answering(Duration::from_secs(15))
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "etcd {} is already running",
            self.name
        );
        let client_url = self.endpoint();
        let peer_url = self.peer_url();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let mut cmd = Command::new(ETCD_BIN);
        for (key, _) in std::env::vars() {
            if key.starts_with("ETCD") {
                cmd.env_remove(key);
            }
        }
        let initial_cluster = match &self.cluster {
            Some((members, token)) => {
                cmd.arg("--initial-cluster-token").arg(token);
                members.clone()
            }
            None => format!("{}={peer_url}", self.name),
        };
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new");
        if self.tls {
            let file = |name: &str| self.dir.path().join(name);
            cmd.arg("--cert-file")
                .arg(file("server.pem"))
                .arg("--key-file")
                .arg(file("server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(file("ca.pem"))
                .arg("--client-cert-auth");
        }
        cmd.args(&self.extra_flags);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {ETCD_BIN}: {e}"));
        self.child = Some(child);
    }

    /// Waits until this member answers a linearizable read (which needs a
    /// quorum of its cluster).
    fn wait_answering(&mut self, timeout: Duration) -> Result<(), String> {
        let endpoint = self.endpoint();
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(format!("etcd {} is not running", self.name));
            };
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Err(format!("etcd exited with {status}; log:\n{}", self.log()));
            }
            if try_get_prefix(&endpoint, "/").is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "etcd at {endpoint} did not answer; log:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Certificates made for one test in a temporary directory: a CA, a server
/// certificate for `127.0.0.1` (IP SAN) and a client certificate, both signed
/// by the CA; every file PEM.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("pki temp dir");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write pem");
        };
        let serial = unique_id("ca");

        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, format!("test CA {serial}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        write("ca.pem", ca.self_signed(&ca_key).expect("CA cert").pem());
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = usages;
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        };
        // etcd's gRPC gateway also dials etcd with the server certificate.
        leaf(
            "server",
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        leaf(
            "client",
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        TestPki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.file("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.file("server-key.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.file("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.file("client-key.pem")
    }
}

/// A three-member etcd cluster on loopback; each member can be stopped and
/// restarted with its data directory.
pub struct EtcdCluster {
    members: Vec<Etcd>,
}

impl EtcdCluster {
    pub fn start() -> EtcdCluster {
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut members: Vec<Etcd> = Vec::new();
            let mut ports = BTreeSet::new();
            while members.len() < 3 {
                let m = Etcd::reserve();
                if ports.insert(m.client_port) && ports.insert(m.peer_port) {
                    members.push(m);
                }
            }
            let initial = members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url()))
                .collect::<Vec<_>>()
                .join(",");
            let token = unique_id("cluster");
            for m in &mut members {
                m.cluster = Some((initial.clone(), token.clone()));
                m.spawn();
            }
            let mut cluster = EtcdCluster { members };
            match cluster
                .members
                .iter_mut()
                .try_for_each(|m| m.wait_answering(Duration::from_secs(30)))
            {
                Ok(()) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd cluster did not start: {last_error}");
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Client endpoints of all members, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::endpoint).collect()
    }

    /// All endpoints comma-separated, as `--etcd-endpoints` takes them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// The endpoint of the first member that runs.
    pub fn live_endpoint(&self) -> String {
        self.members
            .iter()
            .find(|m| m.is_running())
            .map(Etcd::endpoint)
            .expect("no etcd member is running")
    }

    /// Kills member `i` (SIGKILL).
    pub fn stop(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Starts member `i` again with its data and waits until it is healthy:
    /// it answers linearizable reads, so it has rejoined the quorum.
    pub fn restart(&mut self, i: usize) {
        let member = &mut self.members[i];
        member.stop();
        member.spawn();
        member
            .wait_answering(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("etcd member {i} did not rejoin: {e}"));
    }
}

// -------------------------------------------------------------------- agent

pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_docker-etcd-register");

mod agent_env;
pub use agent_env::AGENT_ENV;
pub mod etcd_faults;
pub mod relay_stall;

/// The agent binary as a child process, its stderr collected line by line.
pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

impl Agent {
    /// Spawns the agent with exactly these arguments and environment additions.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(AGENT_BIN);
        for key in AGENT_ENV {
            cmd.env_remove(key);
        }
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {AGENT_BIN}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pid = child.id();
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        thread::spawn(move || echo_lines(stderr, format!("agent[{pid}] "), Some(sink)));
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || echo_lines(stdout, format!("agent[{pid}] stdout: "), None));
        Agent {
            child,
            lines,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stderr lines seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn has_log(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// How many stderr lines so far contain every one of `needles`.
    pub fn count_log(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// The stderr lines so far at level WARN or ERROR.
    pub fn warnings(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .cloned()
            .collect()
    }

    /// Panics with the log unless the agent is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            panic!(
                "the agent exited ({status}) although it must keep running; stderr:\n{}",
                self.lines().join("\n")
            );
        }
    }

    /// Waits until a stderr line contains `needle`; false on timeout or exit.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.has_log(needle) || self.try_status().is_some()
        }) && self.has_log(needle)
    }

    /// Waits for the `agent ready` line, panicking with the log otherwise.
    pub fn wait_ready(&mut self) {
        if !self.wait_for_log("agent ready", Duration::from_secs(20)) {
            panic!(
                "agent did not get ready (exit status {:?}); stderr:\n{}",
                self.try_status(),
                self.lines().join("\n")
            );
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sigint(&self) {
        self.signal("INT");
    }

    pub fn sigkill(&self) {
        self.signal("KILL");
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait agent");
        }
        self.status
    }

    /// The exit status, if the agent exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_status().is_some());
        self.try_status()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn echo_lines(stream: impl Read, prefix: String, sink: Option<Arc<Mutex<Vec<String>>>>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        eprintln!("{prefix}{line}");
        if let Some(sink) = &sink {
            sink.lock().unwrap().push(line);
        }
    }
}

// ------------------------------------------------------------------- docker

/// Runs the `docker` CLI and returns its trimmed stdout, panicking on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Panics unless the Docker engine answers: these tests must not skip.
pub fn require_docker() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let out = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
            .unwrap_or_else(|e| panic!("the docker CLI is not usable: {e}"));
        assert!(
            out.status.success(),
            "Docker is not available (run `bash scripts/setup.sh`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
    });
}

/// The full id `sha256:<64 hex>` of an image.
pub fn image_id(image: &str) -> String {
    docker(&["image", "inspect", "--format", "{{.Id}}", image])
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One published binding of a container as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub host_ip: String,
    pub host_port: String,
    /// `80/tcp`
    pub port: String,
}

/// The containers of one test; all of them are removed on drop.
pub struct Containers {
    label: String,
}

impl Containers {
    pub fn new(test_id: &str) -> Containers {
        require_docker();
        Containers {
            label: format!("{LABEL_KEY}={test_id}"),
        }
    }

    /// `KEY=VALUE` carried by every container of this test.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `docker run -d --label <label> ARGS...`; returns the full container id.
    pub fn run(&self, args: &[&str]) -> String {
        let mut full = vec!["run", "-d", "--label", &self.label];
        full.extend_from_slice(args);
        let id = docker(&full);
        let id = id.lines().last().unwrap_or_default().to_string();
        assert!(is_container_id(&id), "docker run printed {id:?}");
        id
    }

    pub fn stop(&self, id: &str) {
        docker(&["stop", "-t", "1", id]);
    }

    pub fn kill(&self, id: &str) {
        docker(&["kill", id]);
    }

    pub fn rm_f(&self, id: &str) {
        docker(&["rm", "-f", id]);
    }

    /// Every container (running or not) carrying this test's label.
    pub fn all(&self) -> Vec<String> {
        let filter = format!("label={}", self.label);
        docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn cleanup(&self) {
        let ids = self.all();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = Command::new("docker")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The published bindings of a container from `docker inspect`.
pub fn bindings(id: &str) -> Vec<Binding> {
    let json = docker(&["inspect", "--format", "{{json .NetworkSettings.Ports}}", id]);
    let ports: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut out = Vec::new();
    if let Some(map) = ports.as_object() {
        for (port, list) in map {
            for b in list.as_array().into_iter().flatten() {
                out.push(Binding {
                    host_ip: b["HostIp"].as_str().unwrap_or_default().to_string(),
                    host_port: b["HostPort"].as_str().unwrap_or_default().to_string(),
                    port: port.clone(),
                });
            }
        }
    }
    out
}

/// The host port Docker published for `port` (`80/tcp`) on `host_ip`.
pub fn host_port(id: &str, port: &str, host_ip: &str) -> String {
    let all = bindings(id);
    all.iter()
        .find(|b| b.port == port && b.host_ip == host_ip)
        .unwrap_or_else(|| panic!("{id} has no binding {host_ip} -> {port}: {all:?}"))
        .host_port
        .clone()
}

/// Waits until the container is no longer running.
pub fn wait_not_running(id: &str) {
    let ok = wait_until(SLOW, || {
        docker(&["inspect", "--format", "{{.State.Running}}", id]) == "false"
    });
    assert!(ok, "container {id} is still running");
}

/// Removes the image tags it holds on drop (`docker rmi` of a tag only
/// untags an image that has other tags; never give it `busybox:latest`).
pub struct TagGuard(pub Vec<String>);

impl TagGuard {
    /// Tags `IMAGE` as every one of `tags`.
    pub fn tag(tags: &[String]) -> TagGuard {
        require_docker();
        let guard = TagGuard(tags.to_vec());
        for tag in tags {
            assert_ne!(tag, IMAGE, "never untag {IMAGE}");
            docker(&["tag", IMAGE, tag]);
        }
        guard
    }
}

impl Drop for TagGuard {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}

/// The exact records an agent with host IP `host_ip`, prefix `/registered`
/// and `--require-label <label>` must hold now, computed from Docker: one per
/// running container carrying the label and publishing a port, its value
/// sorted and with wildcards collapsed as SPEC §2 says. The containers must
/// have been started from `busybox` or `busybox:latest`.
pub fn expected_records(host_ip: &str, label: &str) -> BTreeMap<String, String> {
    let filter = format!("label={label}");
    let ids: Vec<String> = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &filter,
        "--filter",
        "status=running",
    ])
    .lines()
    .map(str::to_string)
    .collect();
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let mut args = vec!["inspect"];
    args.extend(ids.iter().map(String::as_str));
    let inspected: serde_json::Value = serde_json::from_str(&docker(&args)).unwrap();
    let mut expected = BTreeMap::new();
    for container in inspected.as_array().expect("docker inspect array") {
        let id = container["Id"].as_str().expect("Id");
        if container["State"]["Running"] != serde_json::Value::Bool(true) {
            continue;
        }
        let image = match container["Config"]["Image"].as_str().expect("Config.Image") {
            "busybox" | "busybox:latest" => IMAGE,
            other => panic!("expected_records knows only {IMAGE}, not {other}"),
        };
        // (private port, protocol, ip, public port)
        let mut objects: BTreeSet<(u32, String, String, u32)> = BTreeSet::new();
        let ports = &container["NetworkSettings"]["Ports"];
        for (port, list) in ports.as_object().into_iter().flatten() {
            let (private, proto) = port.split_once('/').expect("port/proto");
            for b in list.as_array().into_iter().flatten() {
                let ip = b["HostIp"].as_str().unwrap_or_default();
                let ip = match ip {
                    "" | "0.0.0.0" | "::" => host_ip,
                    ip => ip,
                };
                let public = b["HostPort"].as_str().expect("HostPort");
                objects.insert((
                    private.parse().unwrap(),
                    proto.to_string(),
                    ip.to_string(),
                    public.parse().unwrap(),
                ));
            }
        }
        if objects.is_empty() {
            continue;
        }
        let strings: Vec<(String, String, String, String)> = objects
            .into_iter()
            .map(|(private, proto, ip, public)| {
                (ip, public.to_string(), private.to_string(), proto)
            })
            .collect();
        let bindings: Vec<(&str, &str, &str, &str)> = strings
            .iter()
            .map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str()))
            .collect();
        expected.insert(
            record_key(host_ip, image, id),
            expected_value(id, image, &bindings),
        );
    }
    expected
}

/// Whether the container is running, per `docker inspect`.
pub fn is_running(id: &str) -> bool {
    docker(&["inspect", "--format", "{{.State.Running}}", id]) == "true"
}

pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// A unix-socket relay in front of the Docker socket: the agent is pointed at
/// `docker_host()`, and the test can `cut` the connection (every live
/// connection closed, the listening socket removed so that new connections
/// are refused) and `restore` it.
pub struct DockerRelay {
    _dir: tempfile::TempDir,
    path: PathBuf,
    shared: Arc<RelayShared>,
    acceptor: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

#[derive(Default)]
struct RelayShared {
    /// Live connections: both ends, so that `cut` can close them.
    connections: Mutex<HashMap<u64, (UnixStream, UnixStream)>>,
    next_id: AtomicU64,
    accepted: AtomicUsize,
    /// Requests to hold back, and the request lines seen (`relay_stall`).
    stall: relay_stall::Stall,
}

impl DockerRelay {
    /// A relay that listens at once.
    pub fn start() -> DockerRelay {
        let mut relay = DockerRelay::unstarted();
        relay.restore();
        relay
    }

    /// A relay whose socket does not exist yet, as if Docker had not started;
    /// `restore` makes it listen.
    pub fn unstarted() -> DockerRelay {
        require_docker();
        let dir = tempfile::tempdir().expect("relay temp dir");
        let path = dir.path().join("docker.sock");
        DockerRelay {
            _dir: dir,
            path,
            shared: Arc::default(),
            acceptor: None,
        }
    }

    /// `unix://<socket path>`, for `--docker-host`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Connections accepted since the relay was created.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn live_connections(&self) -> usize {
        self.shared.connections.lock().unwrap().len()
    }

    /// Stops listening (the socket file is removed, so connecting fails) and
    /// closes every live connection.
    pub fn cut(&mut self) {
        if let Some((stop, handle)) = self.acceptor.take() {
            stop.store(true, Ordering::SeqCst);
            handle.join().expect("relay acceptor thread");
        }
        let _ = std::fs::remove_file(&self.path);
        self.drop_connections();
    }

    /// Closes every live connection but keeps listening: to the agent this
    /// looks like a broken event stream while Docker itself stays up.
    pub fn drop_connections(&self) {
        let live: Vec<(UnixStream, UnixStream)> = self
            .shared
            .connections
            .lock()
            .unwrap()
            .drain()
            .map(|(_, ends)| ends)
            .collect();
        for (client, upstream) in live {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    /// Listens again at the same path.
    pub fn restore(&mut self) {
        if self.acceptor.is_some() {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path)
            .unwrap_or_else(|e| panic!("relay bind {}: {e}", self.path.display()));
        listener
            .set_nonblocking(true)
            .expect("non-blocking relay listener");
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let stopped = stop.clone();
        let handle = thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => relay_connection(&shared, client),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener is dropped here: nothing accepts any more.
        });
        self.acceptor = Some((stop, handle));
    }
}

impl Drop for DockerRelay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Connects `client` to the Docker socket and copies both ways on two
/// threads; the connection is registered before this returns, so `cut`
/// closes it even if it was accepted just before.
fn relay_connection(shared: &Arc<RelayShared>, client: UnixStream) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = UnixStream::connect(DOCKER_SOCKET) else {
        return; // dropping `client` closes it
    };
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    shared.connections.lock().unwrap().insert(id, (c3, u3));
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    let shared = shared.clone();
    thread::spawn(move || {
        let back = thread::spawn(move || {
            let (mut from, mut to) = (u2, c2);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
        relay_stall::forward_requests(&shared.stall, client, upstream);
        let _ = back.join();
        shared.connections.lock().unwrap().remove(&id);
    });
}

// --------------------------------------------------------------- test setup

/// Everything one test needs: a unique id, host IP and label, a private etcd
/// and a guard over its containers.
pub struct TestEnv {
    pub id: String,
    pub host_ip: String,
    pub containers: Containers,
    pub etcd: Etcd,
}

impl TestEnv {
    pub fn new(name: &str) -> TestEnv {
        let id = unique_id(name);
        let containers = Containers::new(&id);
        TestEnv {
            host_ip: host_ip_for(&id),
            containers,
            etcd: Etcd::start(),
            id,
        }
    }

    /// Like `new`, with a given etcd (say, one that is not running yet).
    pub fn with_etcd(name: &str, etcd: Etcd) -> TestEnv {
        let id = unique_id(name);
        let containers = Containers::new(&id);
        TestEnv {
            host_ip: host_ip_for(&id),
            containers,
            etcd,
            id,
        }
    }

    /// The records this test's agent must hold now, computed from Docker
    /// (see [`expected_records`]).
    pub fn expected_now(&self) -> BTreeMap<String, String> {
        expected_records(&self.host_ip, self.label())
    }

    pub fn endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    pub fn label(&self) -> &str {
        self.containers.label()
    }

    /// `/registered/<host ip>/`
    pub fn host_prefix(&self) -> String {
        format!("/registered/{}/", self.host_ip)
    }

    /// `/registered/<host ip>/<image>/<id>`
    pub fn key(&self, image: &str, id: &str) -> String {
        record_key(&self.host_ip, image, id)
    }

    /// Host IP, endpoint and required test label as flags.
    /// A container of this test publishing port 80 on loopback.
    pub fn run_loopback_80(&self) -> String {
        self.containers
            .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
    }

    /// The one record a container of [`TestEnv::run_loopback_80`] must have
    /// now, from its `docker inspect`.
    pub fn loopback_80_record(&self, id: &str) -> (String, String) {
        let public = host_port(id, "80/tcp", "127.0.0.1");
        (
            self.key(IMAGE, id),
            expected_value(id, IMAGE, &[("127.0.0.1", &public, "80", "tcp")]),
        )
    }

    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--host-ip".into(),
            self.host_ip.clone(),
            "--etcd-endpoints".into(),
            self.endpoint(),
            "--require-label".into(),
            self.label().to_string(),
        ]
    }

    /// Spawns an agent with `agent_args` plus `extra` and waits until ready.
    pub fn start_agent(&self, extra: &[&str]) -> Agent {
        let owned = self.agent_args();
        let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let mut agent = Agent::spawn(&args, &[]);
        agent.wait_ready();
        agent
    }

    /// The records under this test's host prefix.
    pub fn records(&self) -> BTreeMap<String, Record> {
        get_prefix(&self.endpoint(), &self.host_prefix())
    }

    pub fn keys(&self) -> BTreeSet<String> {
        self.records().into_keys().collect()
    }

    /// Waits until the host prefix holds exactly `expected` (key -> value).
    pub fn wait_records(&self, timeout: Duration, expected: &BTreeMap<String, String>) {
        let mut last = BTreeMap::new();
        let ok = wait_until(timeout, || {
            last = self
                .records()
                .into_iter()
                .map(|(k, r)| (k, r.value))
                .collect();
            &last == expected
        });
        assert!(
            ok,
            "etcd under {} did not become\n{expected:#?}\nlast seen:\n{last:#?}",
            self.host_prefix()
        );
    }

    /// Waits until `key` exists and returns its record.
    pub fn wait_key(&self, timeout: Duration, key: &str) -> Record {
        let mut found = None;
        let ok = wait_until(timeout, || {
            found = self.records().remove(key);
            found.is_some()
        });
        assert!(
            ok,
            "key {key} did not appear; records:\n{:#?}",
            self.records()
        );
        found.unwrap()
    }

    /// Waits until `key` is gone.
    pub fn wait_gone(&self, timeout: Duration, key: &str) {
        let ok = wait_until(timeout, || !self.records().contains_key(key));
        assert!(
            ok,
            "key {key} was not deleted; records:\n{:#?}",
            self.records()
        );
    }
}

// --------------------------------------------------------------------- http

/// `GET path` over a plain TCP connection: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let socket = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let raw = String::from_utf8(raw).map_err(|e| format!("response not utf-8: {e}"))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {raw:?}"))?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| format!("bad chunk in {rest:?}"))?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).ok_or("short chunk")?);
        rest = after.get(size + 2..).ok_or("short chunk")?;
    }
}

// --------------------------------------------------------------------- list

/// The binary's `list` with `args`, talking to `endpoint` only (none of
/// the agent's variables of this environment leak in).
pub fn list_command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(AGENT_BIN);
    for key in AGENT_ENV {
        cmd.env_remove(key);
    }
    cmd.arg("list")
        .args(["--etcd-endpoints", endpoint])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs `list` and asserts that it succeeded.
pub fn list(endpoint: &str, args: &[&str]) -> Output {
    let out = list_command(endpoint, args)
        .output()
        .unwrap_or_else(|e| panic!("run {AGENT_BIN} list: {e}"));
    assert!(
        out.status.success(),
        "list {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ------------------------------------------------------------------ dockerd

/// The process ids of the running dockerd processes.
pub fn dockerd_pids() -> Vec<u32> {
    let out = Command::new("pidof")
        .arg("dockerd")
        .output()
        .expect("run pidof");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}
