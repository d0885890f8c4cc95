//! The engine side of the benchmark (dockerd or Podman): containers started
//! and removed through the engine's CLI (as an operator would, see
//! `rig::docker`), and the
//! engine's API over its unix socket (`rig::http::UnixHttp`, kept-alive
//! connections — no process start in what is measured) for the engine's
//! event stream (its own `start` / `die` times, and when they reach a
//! subscriber) and the inspect floor.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use rig::docker::{Containers, HUNG};
use rig::http::UnixHttp;
use tokio::runtime::Handle;

use crate::clock::now_ns;

/// Longest a single request to the engine may take before the run fails.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `docker run -d --label LABEL -p 127.0.0.1::80 busybox sleep 3600` (or
/// Podman's): a container that publishes one port; returns its full id.
pub fn run_container(containers: &Containers) -> Result<String> {
    let image = containers.engine().image();
    Ok(containers.try_run(&["-p", "127.0.0.1::80", image, "sleep", "3600"])?)
}

// ------------------------------------------------------------- the events

/// One engine event: the engine's own time (`timeNano`) and when this
/// process received it, both in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct EngineEvent {
    pub time_ns: i128,
    pub received_ns: i128,
}

/// The first `start` and the first `die` of one container.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineTimes {
    pub start: Option<EngineEvent>,
    pub die: Option<EngineEvent>,
}

/// An event handed on to another consumer as soon as it is received.
pub struct Forwarded {
    pub id: String,
    pub action: String,
}

#[derive(Default)]
struct Received {
    /// Container id → its first `start` and `die`.
    times: HashMap<String, EngineTimes>,
    /// Where each event also goes, while the reference registrar runs.
    forward: Option<Sender<Forwarded>>,
}

/// The engine's event stream (`GET /events`) for one label, read in the
/// background by a task on the benchmark's runtime, over its own connection.
pub struct EventReader {
    /// The reading task; aborted on drop, which closes the connection.
    task: tokio::task::JoinHandle<()>,
    received: Arc<Mutex<Received>>,
    /// The engine it reads.
    kind: rig::docker::Engine,
}

impl EventReader {
    /// Subscribes from `since_secs` (Unix seconds), so that nothing that
    /// happens while the subscription is set up is missed.
    pub fn start(
        rt: &Handle,
        kind: rig::docker::Engine,
        label: &str,
        since_secs: u64,
    ) -> Result<EventReader> {
        // Podman's filter matches its own name of `die` (it sends `die`).
        let died = match kind {
            rig::docker::Engine::Docker => "die",
            rig::docker::Engine::Podman => "died",
        };
        let filters = serde_json::json!({
            "type": ["container"],
            "label": [label],
            "event": ["start", died],
        });
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("since", &since_secs.to_string())
            .append_pair("filters", &filters.to_string())
            .finish();
        let engine = UnixHttp::new(kind.socket());
        let response = rt.block_on(async {
            tokio::time::timeout(IO_TIMEOUT, engine.open(&format!("/events?{query}"))).await
        });
        let response = response.map_err(|_| {
            anyhow::anyhow!("GET /events: no answer within {IO_TIMEOUT:?}; {HUNG}")
        })??;
        if response.status() != 200 {
            bail!("GET /events: HTTP {}", response.status());
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = received.clone();
        let mut body = response.into_body();
        let task = rt.spawn(async move {
            let mut pending = Vec::new();
            // Each frame (one chunk of the stream) is timestamped on receipt.
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let received_ns = now_ns();
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let Some((id, action, time_ns)) = parse_event(&line) else {
                        continue;
                    };
                    let event = EngineEvent {
                        time_ns,
                        received_ns,
                    };
                    record_event(&mut sink.lock().unwrap(), id, action, event);
                }
            }
        });
        Ok(EventReader {
            task,
            received,
            kind,
        })
    }

    /// The engine whose events it reads.
    pub fn engine(&self) -> rig::docker::Engine {
        self.kind
    }

    pub fn times(&self, id: &str) -> EngineTimes {
        let received = self.received.lock().unwrap();
        received.times.get(id).copied().unwrap_or_default()
    }

    /// From now on, every event received is also sent to `to`, until
    /// `stop_forwarding`.
    pub fn forward_to(&self, to: Sender<Forwarded>) {
        self.received.lock().unwrap().forward = Some(to);
    }

    /// Drops the forwarding sender: the receiver sees the channel close.
    pub fn stop_forwarding(&self) {
        self.received.lock().unwrap().forward = None;
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record_event(received: &mut Received, id: String, action: String, event: EngineEvent) {
    let times = received.times.entry(id.clone()).or_default();
    match action.as_str() {
        "start" => times.start = times.start.or(Some(event)),
        "die" => times.die = times.die.or(Some(event)),
        _ => {}
    }
    if let Some(forward) = &received.forward {
        let _ = forward.send(Forwarded { id, action });
    }
}

/// (container id, action, timeNano) of one event.
fn parse_event(json: &[u8]) -> Option<(String, String, i128)> {
    let event: serde_json::Value = serde_json::from_slice(json).ok()?;
    let id = event["Actor"]["ID"].as_str().or(event["id"].as_str())?;
    let action = event["Action"].as_str().or(event["status"].as_str())?;
    let time_ns = event["timeNano"].as_i64()?;
    Some((id.to_string(), action.to_string(), i128::from(time_ns)))
}

// ------------------------------------------------------- the Engine API

/// The engine's API over kept-alive connections to its unix socket, for
/// callers on plain threads (each request blocks on the benchmark's runtime).
pub struct Engine {
    http: UnixHttp,
    rt: Handle,
}

impl Engine {
    pub fn connect(rt: &Handle, kind: rig::docker::Engine) -> Engine {
        Engine {
            http: UnixHttp::new(kind.socket()),
            rt: rt.clone(),
        }
    }

    /// `GET path`; the body of a `200` answer.
    pub fn get(&mut self, path: &str) -> Result<Vec<u8>> {
        let (status, body) = self.rt.block_on(self.http.get(path, IO_TIMEOUT))?;
        if status != 200 {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(body.to_vec())
    }

    /// Fails unless the engine answers `GET /info`, the first request a
    /// deadlocked engine leaves unanswered.
    pub fn check_answers(&mut self) -> Result<()> {
        self.get("/info")
            .map(drop)
            .with_context(|| format!("the engine does not answer GET /info; {HUNG}"))
    }

    /// The engine's version, e.g. `20.10.24+dfsg1 (API 1.41)`.
    pub fn version(&mut self) -> Result<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.get("/version")?)?;
        Ok(format!(
            "{} (API {})",
            body["Version"].as_str().unwrap_or("?"),
            body["ApiVersion"].as_str().unwrap_or("?")
        ))
    }

    /// `GET /containers/<id>/json`.
    pub fn inspect(&mut self, id: &str) -> Result<serde_json::Value> {
        let body = self.get(&format!("/containers/{id}/json"))?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// `count` sequential inspects of one container, each timed.
    pub fn time_inspects(&mut self, id: &str, count: usize) -> Result<Vec<Duration>> {
        (0..count)
            .map(|_| {
                let started = Instant::now();
                self.inspect(id)?;
                Ok(started.elapsed())
            })
            .collect()
    }
}
