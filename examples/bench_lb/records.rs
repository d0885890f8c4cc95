//! The benchmark's own etcd watch on every record: when each container's
//! record arrived (the first stage after `docker run`, the same for every
//! proxy) and the host port it was published on, which is how a rendered
//! file names the new backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use docker_etcd_register::record::{Endpoint, RecordKey};
use etcd_client::EventType;

use rig::process::check_interrupted;

/// The root of the agent's keys.
const ROOT: &str = "/registered/";
/// Longest a record may take to arrive before the run is abandoned.
const RECORD_TIMEOUT: Duration = Duration::from_secs(30);

/// A container's record, as the watch first saw it.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    /// When the watch received it.
    pub at: Instant,
    /// The host port of the backend's frontend port.
    pub public_port: u16,
}

/// Container id → its first record, filled by a task on the rig's runtime.
#[derive(Clone, Default)]
pub struct Records(Arc<Mutex<HashMap<String, Registered>>>);

impl Records {
    /// Opens a watch on every record and returns once etcd has confirmed it,
    /// so that no later record is missed. `private_port` is the backends'
    /// port, whose host port is taken from each record.
    pub fn watch(endpoint: &str, private_port: u16) -> Result<Records> {
        let records = Records::default();
        let sink = records.clone();
        let on_response = move |response: &etcd_client::WatchResponse, at| {
            for event in response.events() {
                if event.event_type() != EventType::Put {
                    continue;
                }
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let Some(key) = RecordKey::parse(ROOT, key) else {
                    continue;
                };
                if let Some(public_port) = public_port(kv.value(), private_port) {
                    sink.note(key.container, at, public_port);
                }
            }
        };
        rig::runtime().block_on(rig::etcd::follow_prefix(endpoint, ROOT, on_response))?;
        Ok(records)
    }

    fn note(&self, container: &str, at: Instant, public_port: u16) {
        self.0
            .lock()
            .unwrap()
            .entry(container.to_string())
            .or_insert(Registered { at, public_port });
    }

    /// The record of `container`, once it arrived.
    pub fn get(&self, container: &str) -> Option<Registered> {
        self.0.lock().unwrap().get(container).copied()
    }

    /// Waits for the record of `container`.
    pub fn wait(&self, container: &str) -> Result<Registered> {
        let deadline = Instant::now() + RECORD_TIMEOUT;
        loop {
            check_interrupted()?;
            if let Some(record) = self.get(container) {
                return Ok(record);
            }
            if Instant::now() > deadline {
                bail!("no record of {container} within {RECORD_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The host port a record's value gives `private_port` (TCP).
fn public_port(value: &[u8], private_port: u16) -> Option<u16> {
    Endpoint::decode(value)
        .ok()?
        .iter()
        .find(|e| e.port_type == "tcp" && e.private_port.parse() == Ok(private_port))?
        .public_port
        .parse()
        .ok()
}
