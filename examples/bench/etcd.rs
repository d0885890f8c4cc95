//! The etcd side of the benchmark: a private single-member etcd on free
//! loopback ports, an independent watch on the agent's host prefix that
//! timestamps every change on receipt, and the put floor.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use docker_etcd_register::record::{Endpoint, RecordKey};
use etcd_client::{Client, ConnectOptions, EventType, WatchOptions};
use tempfile::TempDir;
use tokio::runtime::Runtime;

use crate::clock::{now_ns, Seen};

const ETCD_BIN: &str = "/usr/bin/etcd";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private etcd, killed (and its data directory removed) on drop.
pub struct EtcdServer {
    child: Child,
    endpoint: String,
    _dir: TempDir,
}

impl EtcdServer {
    pub fn start(rt: &Runtime) -> Result<EtcdServer> {
        let dir = tempfile::tempdir().context("etcd data directory")?;
        let (client_port, peer_port) = two_free_ports()?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = File::create(dir.path().join("etcd.log"))?;
        let mut cmd = Command::new(ETCD_BIN);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("ETCD")) {
            cmd.env_remove(key);
        }
        let child = cmd
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {ETCD_BIN} (run scripts/setup.sh)"))?;
        let mut server = EtcdServer {
            child,
            endpoint,
            _dir: dir,
        };
        server.wait_answering(rt)?;
        Ok(server)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn wait_answering(&mut self, rt: &Runtime) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("etcd exited at start ({status}); see its log");
            }
            let answered = rt.block_on(async {
                let mut client = connect(&self.endpoint).await?;
                client.get("/", None).await?;
                anyhow::Ok(())
            });
            if answered.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "etcd at {} did not answer within {START_TIMEOUT:?}",
                    self.endpoint
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct loopback ports that were free a moment ago.
fn two_free_ports() -> Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

pub async fn connect(endpoint: &str) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    Ok(Client::connect([endpoint], Some(options)).await?)
}

/// `count` sequential puts of a small value to one scratch key outside any
/// host prefix, each timed; the key is deleted afterwards.
pub async fn time_puts(endpoint: &str, count: usize) -> Result<Vec<Duration>> {
    let mut client = connect(endpoint).await?;
    let key = "/bench-floor/put";
    let value = Endpoint::encode(&[Endpoint {
        container: "0000".into(),
        image: "busybox:latest".into(),
        ip: "127.0.0.1".into(),
        public_port: "32768".into(),
        private_port: "80".into(),
        port_type: "tcp".into(),
    }]);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        client.put(key, value.as_str(), None).await?;
        times.push(started.elapsed());
    }
    client.delete(key, None).await?;
    Ok(times)
}

// -------------------------------------------------------------- the watch

/// What the independent watch saw of one container's key: its first put and
/// the first delete after it.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeySeen {
    pub put: Option<Seen>,
    pub deleted: Option<Seen>,
}

/// The root of the agent's keys.
const ROOT: &str = "/registered/";

/// Container id (the last key segment) → what the watch saw.
#[derive(Clone, Default)]
pub struct WatchLog(Arc<Mutex<HashMap<String, KeySeen>>>);

impl WatchLog {
    pub fn get(&self, id: &str) -> KeySeen {
        self.0.lock().unwrap().get(id).copied().unwrap_or_default()
    }

    /// How many of `ids` satisfy `cond`.
    pub fn count(&self, ids: &[String], cond: impl Fn(&KeySeen) -> bool) -> usize {
        let log = self.0.lock().unwrap();
        ids.iter()
            .filter(|id| log.get(*id).is_some_and(&cond))
            .count()
    }

    fn record(&self, event_type: EventType, key: &str, seen: Seen) {
        let id = RecordKey::parse(ROOT, key).map_or(key, |k| k.container);
        let mut log = self.0.lock().unwrap();
        let entry = log.entry(id.to_string()).or_default();
        match event_type {
            EventType::Put => {
                entry.put.get_or_insert(seen);
            }
            EventType::Delete if entry.put.is_some() => {
                entry.deleted.get_or_insert(seen);
            }
            EventType::Delete => {}
        }
    }
}

/// Opens a watch on `prefix` and returns once etcd has confirmed it, so that
/// every later change is seen; the changes are recorded in the background
/// until the runtime shuts down or the server goes away.
pub async fn watch_prefix(endpoint: &str, prefix: &str) -> Result<WatchLog> {
    let mut client = connect(endpoint).await?;
    let mut stream = client
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await?;
    let first = stream.message().await?.context("watch closed at once")?;
    if !first.created() {
        bail!("the first watch response is not the creation");
    }
    let log = WatchLog::default();
    let sink = log.clone();
    tokio::spawn(async move {
        // The client must live as long as the stream.
        let _client = client;
        while let Ok(Some(response)) = stream.message().await {
            let seen = Seen {
                wall_ns: now_ns(),
                at: Instant::now(),
                revision: 0,
            };
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let seen = Seen {
                    revision: kv.mod_revision(),
                    ..seen
                };
                sink.record(event.event_type(), key, seen);
            }
        }
    });
    Ok(log)
}
