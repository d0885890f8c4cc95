//! Looking at containers: every running one (a listing) or one after an
//! event, with failures told apart by whose trouble they are.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::warn;

use crate::container::Container;
use crate::engine::{Engine, EngineError};

/// Inspects in flight at once.
pub(super) const INSPECT_CONCURRENCY: usize = 16;
/// How long the engine may take to answer a ping after an inspect timed out.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The running containers, and those whose inspect failed.
pub(super) struct Listed {
    pub(super) containers: Vec<Container>,
    pub(super) unknown: BTreeSet<String>,
}

/// What one inspect found out.
pub(super) enum Inspected {
    Facts(Option<Container>),
    /// This container's trouble; the engine answers.
    Failed(EngineError),
    /// The engine's trouble.
    EngineDown(EngineError),
}

/// Lists the running containers and inspects them, at most
/// [`INSPECT_CONCURRENCY`] at a time.
pub(super) async fn list<E: Engine>(engine: E) -> Result<Listed, EngineError> {
    let ids = engine.running_container_ids().await?;
    let engine = &engine;
    let mut results = futures_util::stream::iter(ids)
        .map(|id| async move {
            let inspected = inspect(engine, &id).await;
            (id, inspected)
        })
        .buffer_unordered(INSPECT_CONCURRENCY);
    let mut listed = Listed {
        containers: Vec::new(),
        unknown: BTreeSet::new(),
    };
    while let Some((id, inspected)) = results.next().await {
        match inspected {
            Inspected::Facts(Some(container)) => listed.containers.push(container),
            Inspected::Facts(None) => {}
            Inspected::Failed(error) => {
                warn!(container_id = id, error = %error, "cannot inspect container; keeping its record as it is");
                listed.unknown.insert(id);
            }
            Inspected::EngineDown(error) => return Err(error),
        }
    }
    Ok(listed)
}

/// Inspects one container and tells whose trouble a failure is: an inspect
/// that timed out while the engine still answers a ping is the container's.
pub(super) async fn inspect<E: Engine>(engine: &E, id: &str) -> Inspected {
    match engine.inspect(id).await {
        Ok(container) => Inspected::Facts(container),
        Err(error) if error.is_request_specific() => Inspected::Failed(error),
        Err(error) if error.is_timeout() && engine.ping(PING_TIMEOUT).await => {
            Inspected::Failed(error)
        }
        Err(error) => Inspected::EngineDown(error),
    }
}
