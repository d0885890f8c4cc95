//! One private etcd process on loopback ports of the tests' own (`crate::ports`): a single-member cluster
//! of its own, one that requires TLS client certificates, or one member of
//! an [`EtcdCluster`](super::EtcdCluster).
//!
//! # Which etcd
//!
//! The binary is [`ETCD_BIN`], Debian's etcd 3.4 (`etcd-server`), unless the
//! environment variable [`RIG_ETCD_BIN`](ETCD_BIN_VAR) names another one:
//! `RIG_ETCD_BIN=/usr/local/lib/etcd-3.5/bin/etcd cargo test --test faults_etcd`
//! runs a suite against etcd 3.5 (installed there by
//! `scripts/setup-etcd35.sh`, which `scripts/setup.sh` runs). The `etcdctl`
//! of [`etcdctl`](super::etcdctl) is then the one beside that binary
//! ([`etcdctl_bin`](super::etcdctl_bin)). `docs/etcd-versions.md` says
//! which versions the suite runs against and how they differ.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::client::{set_client_security, try_get_prefix};
use crate::pki::TestPki;
use crate::{test_port, unique_id};

/// The etcd binary when [`ETCD_BIN_VAR`] is not set: Debian's etcd 3.4.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// The environment variable that names another etcd binary.
pub const ETCD_BIN_VAR: &str = "RIG_ETCD_BIN";

/// The etcd binary the rig starts: `$RIG_ETCD_BIN` when it is set and not
/// empty, else [`ETCD_BIN`].
pub fn etcd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os(ETCD_BIN_VAR) {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => PathBuf::from(ETCD_BIN),
    })
}

/// How long a single member may take to answer after its spawn.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an etcd did not start.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(
        "{} is missing: run `bash scripts/setup.sh`, which installs Debian's etcd-server \
         ({ETCD_BIN}) and, with scripts/setup-etcd35.sh, etcd 3.5 (/usr/local/lib/etcd-3.5/bin/etcd); \
         ${ETCD_BIN_VAR} chooses the binary",
        bin.display()
    )]
    Missing { bin: PathBuf },
    #[error("spawn {}: {source}", bin.display())]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd {name} is not running")]
    NotRunning { name: String },
    #[error("etcd exited with {status}; log:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("etcd at {endpoint} did not answer within {timeout:?}; log:\n{log}")]
    Silent {
        endpoint: String,
        timeout: Duration,
        log: String,
    },
}

/// A private etcd member on loopback ports of the tests' own (`crate::ports`): a single-member cluster of
/// its own (`Etcd::start`) or one member of an [`EtcdCluster`](super::EtcdCluster).
/// Killed on drop; its data directory is removed with it.
pub struct Etcd {
    /// The running process; `None` while stopped (or not started yet).
    child: Option<Child>,
    /// Data directory, log file and TLS files; kept across restarts.
    dir: tempfile::TempDir,
    /// The member name; a new one makes a new cluster and member id.
    pub(super) name: String,
    pub(super) client_port: u16,
    pub(super) peer_port: u16,
    /// `--initial-cluster` and `--initial-cluster-token`; `None` for a
    /// single-member cluster of its own.
    pub(super) cluster: Option<(String, String)>,
    /// Serves clients over TLS with client-certificate authentication
    /// (`Etcd::start_tls`); its certificate files are in `dir`.
    tls: bool,
    /// More etcd flags (`Etcd::start_with_flags`), say a small
    /// `--quota-backend-bytes`, for faults only such an etcd can show.
    extra_flags: Vec<String>,
}

impl Etcd {
    /// A running single member; panics if it does not start.
    pub fn start() -> Etcd {
        Etcd::try_start().unwrap_or_else(|e| panic!("etcd did not start: {e}"))
    }

    /// A running single member, or why it did not start.
    pub fn try_start() -> Result<Etcd, EtcdError> {
        Etcd::start_prepared(|_| {})
    }

    /// Like `start`, with more etcd flags appended to the command line.
    pub fn start_with_flags(flags: &[&str]) -> Etcd {
        Etcd::start_prepared(|etcd| {
            etcd.extra_flags = flags.iter().map(|f| f.to_string()).collect();
        })
        .unwrap_or_else(|e| panic!("etcd with {flags:?} did not start: {e}"))
    }

    /// A single member that serves clients only on `https://127.0.0.1:<port>`,
    /// with the server certificate of `pki` and `--client-cert-auth` (clients
    /// must present a certificate signed by `pki`'s CA). The helpers
    /// (`get_prefix`, `put`, `Watch`...) reach it with `pki`'s client
    /// certificate.
    pub fn start_tls(pki: &TestPki) -> Etcd {
        Etcd::start_prepared(|etcd| {
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
        })
        .unwrap_or_else(|e| panic!("etcd with TLS did not start: {e}"))
    }

    /// Reserves ports, lets `prepare` configure the member and starts it.
    /// Once: its ports are the tests' own (`crate::ports`), so nothing else
    /// can take them before etcd binds them.
    fn start_prepared(prepare: impl Fn(&mut Etcd)) -> Result<Etcd, EtcdError> {
        let mut etcd = Etcd::try_reserve()?;
        prepare(&mut etcd);
        etcd.spawn_and_wait()?;
        Ok(etcd)
    }

    /// An etcd that is not running yet: ports and data directory are chosen,
    /// nothing listens on them until `restart`.
    pub fn reserve() -> Etcd {
        Etcd::try_reserve().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_reserve() -> Result<Etcd, EtcdError> {
        if !etcd_bin().exists() {
            return Err(EtcdError::Missing {
                bin: etcd_bin().to_path_buf(),
            });
        }
        let client_port = test_port();
        let peer_port = test_port();
        Ok(Etcd {
            child: None,
            dir: tempfile::tempdir().expect("etcd temp dir"),
            name: unique_id("etcd"),
            client_port,
            peer_port,
            cluster: None,
            tls: false,
            extra_flags: Vec::new(),
        })
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

    /// The process id while it runs (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

    fn spawn_and_wait(&mut self) -> Result<(), EtcdError> {
        self.spawn()?;
        self.wait_answering(START_TIMEOUT)
    }

    pub(super) fn spawn(&mut self) -> Result<(), EtcdError> {
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
        let mut cmd = Command::new(etcd_bin());
        // The caller's ETCD_* variables would configure this etcd too.
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
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log);
        self.child = Some(cmd.spawn().map_err(|source| EtcdError::Spawn {
            bin: etcd_bin().to_path_buf(),
            source,
        })?);
        Ok(())
    }

    /// Waits until this member answers a linearizable read (which needs a
    /// quorum of its cluster).
    pub(super) fn wait_answering(&mut self, timeout: Duration) -> Result<(), EtcdError> {
        let endpoint = self.endpoint();
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(EtcdError::NotRunning {
                    name: self.name.clone(),
                });
            };
            if let Some(status) = child.try_wait().expect("try_wait etcd") {
                self.child = None;
                let log = self.log();
                return Err(EtcdError::Exited { status, log });
            }
            if try_get_prefix(&endpoint, "/").is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                let log = self.log();
                return Err(EtcdError::Silent {
                    endpoint,
                    timeout,
                    log,
                });
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
