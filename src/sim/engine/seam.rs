//! The engine seam, answered by the simulated engine.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

use super::{facts, SimEngine, REQUEST_TIMEOUT};
use crate::container::Container;
use crate::engine::{Engine, EngineError, EngineIdentity, EventStream};

impl Engine for SimEngine {
    async fn connect(&mut self) -> Result<EngineIdentity, EngineError> {
        self.request().await?;
        Ok(EngineIdentity::new("sim", &[self.id()]))
    }

    fn subscriptions_accepted(&self) -> watch::Receiver<u64> {
        self.accepted.subscribe()
    }

    fn events(&self, replay: Duration, health: bool) -> Result<EventStream, EngineError> {
        let engine = self.clone();
        // The request goes out when the stream is first polled; a hung
        // engine answers it once healed.
        let subscription = async move {
            match engine.answering().await {
                Ok(()) => engine.subscribe(replay, health),
                Err(error) => futures_util::stream::iter([Err(error)]).boxed(),
            }
        };
        Ok(futures_util::stream::once(subscription).flatten().boxed())
    }

    async fn running_container_ids(&self) -> Result<Vec<String>, EngineError> {
        self.request().await?;
        let state = self.lock();
        Ok(state
            .containers
            .iter()
            .filter(|(_, c)| c.running && !c.removed)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn inspect(&self, container_id: &str) -> Result<Option<Container>, EngineError> {
        self.request().await?;
        let delay = {
            let state = self.lock();
            state
                .slow_inspects
                .get(container_id)
                .and_then(|delays| delays.values().max().copied())
        };
        if let Some(delay) = delay {
            if delay >= REQUEST_TIMEOUT {
                sleep(REQUEST_TIMEOUT).await;
                return Err(EngineError::TimedOut("inspect timed out".into()));
            }
            sleep(delay).await;
        }
        self.request().await?;
        let state = self.lock();
        Ok(state
            .containers
            .get(container_id)
            .filter(|c| !c.removed)
            .map(|c| facts(container_id, c)))
    }

    async fn ping(&self, wait: Duration) -> bool {
        matches!(timeout(wait, self.answering()).await, Ok(Ok(())))
    }
}
