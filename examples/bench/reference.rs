//! A reference registrar: the least an agent can do — for each engine event,
//! in order and one at a time, inspect the container and put its published
//! ports to etcd (`start`), or delete its key (`die`) — over keep-alive
//! connections, with nothing else. Run under the same load as the agent's
//! burst (the pre-start and the final removal of the same number of
//! containers, the same way) and seen by the same kind of watch, it is the
//! floor of start → key and die → gone on this machine under load.

use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use crate::docker::{Engine, EventReader, Forwarded};
use crate::etcd;

/// Where the reference keeps its keys, outside any agent's prefix.
pub const PREFIX: &str = "/bench-reference/";

/// What the reference registrar measured of its own steps.
#[derive(Default)]
pub struct ReferenceStats {
    /// Events it could not handle (a container gone before its inspect).
    pub failed: usize,
    /// Each inspect after a `start`.
    pub inspects: Vec<Duration>,
    /// Each put after an inspect.
    pub puts: Vec<Duration>,
}

/// The reference registrar, fed by an `EventReader` until `stop`.
pub struct Reference<'a> {
    events: &'a EventReader,
    worker: Option<JoinHandle<ReferenceStats>>,
}

impl<'a> Reference<'a> {
    pub fn start(events: &'a EventReader, rt: &Runtime, endpoint: &str) -> Result<Reference<'a>> {
        let mut engine = Engine::connect(rt.handle(), events.engine());
        let mut client = rt.block_on(etcd::connect(endpoint))?;
        let handle = rt.handle().clone();
        let (to, from) = mpsc::channel::<Forwarded>();
        events.forward_to(to);
        let worker = thread::spawn(move || {
            let mut stats = ReferenceStats::default();
            for event in from {
                let key = format!("{PREFIX}{}", event.id);
                let done = match event.action.as_str() {
                    "start" => {
                        let started = Instant::now();
                        engine.inspect(&event.id).and_then(|container| {
                            stats.inspects.push(started.elapsed());
                            let ports = container["NetworkSettings"]["Ports"].to_string();
                            let started = Instant::now();
                            handle.block_on(client.put(key, ports, None))?;
                            stats.puts.push(started.elapsed());
                            Ok(())
                        })
                    }
                    _ => handle
                        .block_on(client.delete(key, None))
                        .map(drop)
                        .map_err(Into::into),
                };
                stats.failed += usize::from(done.is_err());
            }
            stats
        });
        Ok(Reference {
            events,
            worker: Some(worker),
        })
    }

    /// Stops feeding it; returns, once it has handled what it was given,
    /// what it measured.
    pub fn stop(mut self) -> Result<ReferenceStats> {
        self.events.stop_forwarding();
        let worker = self.worker.take().context("reference already stopped")?;
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("the reference registrar panicked"))
    }
}

impl Drop for Reference<'_> {
    fn drop(&mut self) {
        self.events.stop_forwarding();
    }
}
