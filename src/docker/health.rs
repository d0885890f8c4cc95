//! Podman's health events, made to mean what dockerd's mean. Podman sends
//! `health_status` when a check's command starts, before its verdict is
//! stored (see `Dialect::health_event_precedes_verdict`), and sends nothing
//! when the verdict is stored: an inspect on the event alone would keep the
//! verdict from before the check until the next one. So each such event is
//! passed on at once and again once the check it announced has its result in
//! `State.Health.Log`, or its timeout has passed.

use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, EventMessage};
use futures_util::{stream, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::container_event;
use super::dialect::{ended_after, Dialect};
use crate::engine::{ContainerEvent, EngineError, EventAction, EventStream};

/// A check's own limit when the container sets none (Docker's and Podman's
/// default `--health-timeout`).
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a check's result is waited for, whatever timeout the
/// container's owner gave its check: a follow-up is a task polling the
/// engine, and a check that never ends must not keep one for ever.
const MAX_CHECK_WAIT: Duration = Duration::from_secs(600);
/// Slack after the check's timeout for the engine to store the result.
const STORE_SLACK: Duration = Duration::from_secs(2);

/// Longest pause between two looks at a check in progress.
const MAX_POLL_PAUSE: Duration = Duration::from_secs(1);

/// The engine's events as `container_event` translates them, each
/// `health_status` followed by the same event when its check has a verdict.
/// The stream ends when the engine's stream ends.
pub(super) fn with_verdicts(
    messages: impl Stream<Item = Result<EventMessage, BollardError>> + Send + 'static,
    client: bollard::Docker,
    dialect: Dialect,
) -> EventStream {
    let (verdicts_sender, verdicts) = mpsc::unbounded_channel();
    let announced = messages.filter_map(move |message| {
        let verdicts_sender = verdicts_sender.clone();
        let client = client.clone();
        async move {
            let message = match message {
                Ok(message) => message,
                Err(error) => return Some(Err(EngineError::from(error))),
            };
            let announced_nanos = message.time_nano;
            let event = container_event(message, dialect)?;
            if let (EventAction::HealthStatus, Some(announced_nanos)) =
                (event.action, announced_nanos)
            {
                let check = follow_check(client, event.clone(), announced_nanos, verdicts_sender);
                tokio::spawn(check);
            }
            Some(Ok(event))
        }
    });
    let verdicts = stream::unfold(verdicts, |mut verdicts| async move {
        let event = verdicts.recv().await?;
        Some((Some(Ok(event)), verdicts))
    });
    // The verdicts never end on their own (the sender lives in the
    // translation): the end of the engine's stream, marked by `None`, ends
    // both.
    let announced = announced.map(Some).chain(stream::once(async { None }));
    stream::select(announced, verdicts)
        .take_while(|item| std::future::ready(item.is_some()))
        .filter_map(std::future::ready)
        .boxed()
}

/// Waits until the check announced at `announced_nanos` has its result
/// stored (or cannot have one any more), then passes `event` on again.
async fn follow_check(
    client: bollard::Docker,
    event: ContainerEvent,
    announced_nanos: i64,
    verdicts: mpsc::UnboundedSender<ContainerEvent>,
) {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    while !verdicts.is_closed() {
        // A container gone, or the engine in trouble: the watcher's own
        // inspect of the event says what it means.
        let Ok(response) = client.inspect_container(&event.container_id, None).await else {
            break;
        };
        if verdict_stored(&response, announced_nanos)
            || started.elapsed() > check_timeout(&response) + STORE_SLACK
        {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL_PAUSE);
    }
    tracing::debug!(container_id = %event.container_id, "health check finished");
    // The stream may be gone; then nobody needs the verdict.
    let _ = verdicts.send(event);
}

/// Whether the newest result in `State.Health.Log` ended after the event
/// that announced its check.
pub(super) fn verdict_stored(response: &ContainerInspectResponse, announced_nanos: i64) -> bool {
    let newest_end = response
        .state
        .as_ref()
        .and_then(|state| state.health.as_ref())
        .and_then(|health| health.log.as_ref())
        .and_then(|log| log.last())
        .and_then(|result| result.end.as_deref());
    newest_end.is_some_and(|end| ended_after(end, announced_nanos))
}

/// How long the container's health check may run (`Healthcheck.Timeout`).
fn check_timeout(response: &ContainerInspectResponse) -> Duration {
    response
        .config
        .as_ref()
        .and_then(|config| config.healthcheck.as_ref())
        .and_then(|check| check.timeout)
        .and_then(|nanos| u64::try_from(nanos).ok())
        .filter(|nanos| *nanos > 0)
        .map_or(DEFAULT_CHECK_TIMEOUT, Duration::from_nanos)
        .min(MAX_CHECK_WAIT)
}
