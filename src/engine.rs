//! The engine seam: what the agent needs of a container engine, in our own
//! types. The Docker adapter (`docker.rs`) implements it against a real
//! engine's API; the watcher (`watcher.rs`) depends on it and on nothing
//! else of the engine.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::watch;

use crate::container::Container;

/// Why a request to the engine failed, classified by what it means for the
/// agent: the engine's trouble, or one request's.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached or failed as a whole: reconnect and list
    /// again.
    #[error("{0}")]
    Unreachable(String),
    /// The request ran out of time: the engine may be hung, or only this
    /// request (a ping tells).
    #[error("{0}")]
    TimedOut(String),
    /// The engine answered, but this one request failed (a broken container,
    /// an answer that cannot be decoded): other requests still work.
    #[error("{0}")]
    RequestFailed(String),
    /// The event stream ended.
    #[error("the engine ended the event stream")]
    StreamEnded,
    /// No connection yet.
    #[error("not connected to the engine")]
    NotConnected,
}

impl EngineError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, EngineError::TimedOut(_))
    }

    pub fn is_request_specific(&self) -> bool {
        matches!(self, EngineError::RequestFailed(_))
    }
}

/// What a container event means for its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The container (re)started: inspect it; a start also ends its drain.
    Started,
    /// It was paused or unpaused, joined or left a network, or its health
    /// changed: inspect it again, and its inspect decides whether it has a
    /// record (a paused one, or one left without published ports, has
    /// none).
    Changed,
    /// It stopped or is gone: its record goes.
    Stopped,
    /// It was sent this signal (`docker kill`, and `docker stop` before it
    /// waits): if the signal asks it to stop, its record goes at once, so
    /// that load balancers stop sending it requests while it shuts down.
    Signalled(i32),
}

/// The engine's actions on a container that the agent follows, in the
/// seam's (Docker's) words; the adapter maps each engine's names to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Start,
    Pause,
    Unpause,
    Die,
    /// `docker kill`, and `docker stop` before it waits: with the signal.
    Kill(i32),
    Destroy,
    HealthStatus,
    /// A network's `connect` / `disconnect` of the container.
    Connect,
    Disconnect,
}

impl EventAction {
    /// The action's name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Start => "start",
            EventAction::Pause => "pause",
            EventAction::Unpause => "unpause",
            EventAction::Die => "die",
            EventAction::Kill(_) => "kill",
            EventAction::Destroy => "destroy",
            EventAction::HealthStatus => "health_status",
            EventAction::Connect => "connect",
            EventAction::Disconnect => "disconnect",
        }
    }

    /// What it means for the container's record.
    pub fn kind(self) -> EventKind {
        match self {
            EventAction::Start => EventKind::Started,
            EventAction::Die | EventAction::Destroy => EventKind::Stopped,
            EventAction::Kill(signal) => EventKind::Signalled(signal),
            EventAction::Pause
            | EventAction::Unpause
            | EventAction::HealthStatus
            | EventAction::Connect
            | EventAction::Disconnect => EventKind::Changed,
        }
    }
}

/// One event of the engine about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container_id: String,
    pub action: EventAction,
}

impl ContainerEvent {
    pub fn kind(&self) -> EventKind {
        self.action.kind()
    }
}

/// Which engine an agent follows, as its lock key tells other agents of the
/// same host IP: two agents of one engine are runs of one agent (the newer
/// one's records are the older one's); two agents of different engines
/// claiming one host IP are a conflict, never a hand-over (docs/host-lock.md: One agent
/// per host). Docker's is its `/info` ID (kept in its data root across
/// restarts and upgrades); Podman's `/info` ID changes with every request,
/// so Podman is known by this machine's id (or the engine's host name) and
/// its storage root, which tells rootful Podman from a user's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngineIdentity(String);

impl EngineIdentity {
    /// The longest identity kept: the parts come from the engine and the
    /// machine, and end up in the lock key, logs and metric labels.
    const MAX_LEN: usize = 200;

    /// `kind:part:part…`, every character outside `[A-Za-z0-9._/-]` of a
    /// part replaced by `_`, empty parts left out, at most 200 characters.
    pub fn new(kind: &str, parts: &[&str]) -> EngineIdentity {
        let clean = |part: &str| -> String {
            part.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let mut identity = clean(kind);
        for part in parts.iter().map(|p| clean(p)).filter(|p| !p.is_empty()) {
            identity.push(':');
            identity.push_str(&part);
        }
        identity.truncate(Self::MAX_LEN);
        EngineIdentity(identity)
    }

    /// An identity read back from another agent's lock key, checked the
    /// same way; none when it is not one (empty, too long, foreign bytes).
    pub fn parse(text: &str) -> Option<EngineIdentity> {
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-' | ':'));
        valid.then(|| EngineIdentity(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EngineIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The engine's events, in its order.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEvent, EngineError>> + Send>>;

/// A container engine, as the watcher uses it. Cloning shares the
/// connection: the watcher hands clones to its inspects in flight.
pub trait Engine: Clone + Send + Sync + 'static {
    /// (Re)connects and agrees on the API with the engine; which engine it is.
    fn connect(&mut self) -> impl Future<Output = Result<EngineIdentity, EngineError>> + Send;

    /// Changes each time the engine accepts an event subscription: from
    /// then on, whatever happens reaches the subscription's stream.
    fn subscriptions_accepted(&self) -> watch::Receiver<u64>;

    /// Subscribes to container events, replaying what the engine logged in
    /// the last `replay` (`health`: health status changes too). The request
    /// is sent when the stream is first polled.
    fn events(&self, replay: Duration, health: bool) -> Result<EventStream, EngineError>;

    /// The ids of the containers running now.
    fn running_container_ids(
        &self,
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;

    /// A container's facts, or `None` when it does not exist (any more).
    fn inspect(
        &self,
        container_id: &str,
    ) -> impl Future<Output = Result<Option<Container>, EngineError>> + Send;

    /// Whether the engine answers at all within `timeout`.
    fn ping(&self, timeout: Duration) -> impl Future<Output = bool> + Send;
}

#[cfg(test)]
mod identity_tests {
    use super::EngineIdentity;

    #[test]
    fn an_identity_is_made_of_clean_parts() {
        let id = EngineIdentity::new("docker", &["UVBP:DXYY", " vm ", "", "a\nb\"c"]);
        assert_eq!(id.as_str(), "docker:UVBP_DXYY:vm:a_b_c");
        let long = "x".repeat(1_000);
        assert_eq!(EngineIdentity::new("podman", &[&long]).as_str().len(), 200);
        assert_eq!(EngineIdentity::parse(id.as_str()), Some(id));
    }

    #[test]
    fn anything_else_read_back_is_no_identity() {
        for bad in ["", "docker:a b", "docker:\u{e9}", "a\nb", &"x".repeat(201)] {
            assert_eq!(EngineIdentity::parse(bad), None, "{bad:?}");
        }
    }
}
