//! The engine watcher: a task of its own that follows the Docker engine and
//! tells the agent loop what runs, as [`Observation`]s.
//!
//! It runs apart from the loop for two reasons: a slow or hung engine must
//! never hold up the etcd side (the lease, the repair of foreign changes), and
//! the event stream must be read while the loop waits on etcd, because dockerd
//! drops the events of a subscriber that does not read them.
//!
//! Order: the subscription is accepted by the engine before the containers are
//! listed, so nothing that happens in between is lost. Per container,
//! observations follow the engine's order: only an inspect started after the
//! container's latest event answers for it (an older one still in flight is
//! discarded when it comes back), and whatever happens while all containers
//! are being listed is looked at again once the listing has been reported.

mod drain;
mod follower;
mod inspect;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::future::pending;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::container::Container;
use crate::engine::{Engine, EngineError, EngineIdentity};
use crate::metrics::Metrics;
use crate::supervise::Retry;
use follower::Follower;

/// What the watcher reports to the loop.
#[derive(Debug)]
pub enum Observation {
    /// The engine answered a (re)connect: which engine it is.
    Connected(EngineIdentity),
    /// Every running container, inspected: what runs now. The containers in
    /// `unknown` could not be inspected; what was known of them stands.
    Listed {
        containers: Vec<Container>,
        unknown: BTreeSet<String>,
    },
    /// The facts of one container after an event; `None`: it is gone.
    Changed {
        id: String,
        container: Option<Container>,
    },
    /// This container was asked to stop and still runs: it has no record
    /// until it stops, or until it has survived its stop signal.
    Draining { id: String },
    /// This container could not be inspected although the engine answers;
    /// what was known of it stands, and it is tried again with backoff.
    InspectFailed { id: String, error: EngineError },
    /// The engine cannot be reached; the watcher reconnects and lists again.
    EngineDown(EngineError),
}

/// The watcher task and its two channels.
pub struct Watcher {
    /// Observations, in order.
    observations: mpsc::UnboundedReceiver<Observation>,
    /// Requests to list every container again (the periodic resync).
    relist: mpsc::UnboundedSender<()>,
    /// Aborted on drop: the watcher lives as long as the agent.
    task: JoinHandle<()>,
}

impl Watcher {
    /// Starts following `engine` (with `health`, its health_status events
    /// too); `jitter_seed` makes the reconnect delays reproducible.
    pub fn spawn<E: Engine>(
        engine: E,
        health: bool,
        metrics: Arc<Metrics>,
        jitter_seed: Option<u64>,
    ) -> Self {
        let (observations_sender, observations) = mpsc::unbounded_channel();
        let (relist, relist_requests) = mpsc::unbounded_channel();
        let follower = Follower::new(
            engine,
            health,
            metrics,
            observations_sender,
            Retry::new(jitter_seed.map(|seed| seed ^ 0x5eed)),
        );
        Self {
            observations,
            relist,
            task: tokio::spawn(follower.run(relist_requests)),
        }
    }

    /// The next observation.
    pub async fn next(&mut self) -> Observation {
        match self.observations.recv().await {
            Some(observation) => observation,
            None => pending().await,
        }
    }

    /// The next observation if one is waiting.
    pub fn try_next(&mut self) -> Option<Observation> {
        self.observations.try_recv().ok()
    }

    /// Lists every container again (and reports [`Observation::Listed`]).
    pub fn relist(&self) {
        let _ = self.relist.send(());
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
