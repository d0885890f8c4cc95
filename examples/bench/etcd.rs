//! The etcd side of the benchmark (its private etcd is `rig::Etcd`): an
//! independent watch on the agent's host prefix that timestamps every
//! change on receipt, and the put floor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use docker_etcd_register::record::{Endpoint, RecordKey};
use etcd_client::{Client, EventType};

use crate::clock::{now_ns, Seen};
use crate::reference;

/// A new client of the benchmark's etcd (the rig's timeouts).
pub async fn connect(endpoint: &str) -> Result<Client> {
    Ok(rig::etcd::connect(endpoint).await?)
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
        // An agent's record key, or a reference registrar's `PREFIX<id>`.
        let id = RecordKey::parse(ROOT, key)
            .map(|k| k.container)
            .or_else(|| key.strip_prefix(reference::PREFIX))
            .unwrap_or(key);
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
    let log = WatchLog::default();
    let sink = log.clone();
    rig::etcd::follow_prefix(endpoint, prefix, move |response, at| {
        let wall_ns = now_ns();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let seen = Seen {
                wall_ns,
                at,
                revision: kv.mod_revision(),
            };
            sink.record(event.event_type(), key, seen);
        }
    })
    .await?;
    Ok(log)
}
