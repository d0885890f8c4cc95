//! Docker adapter: the only module that speaks bollard. It implements the
//! engine seam ([`Engine`]), turning the engine's containers and events into
//! our own [`Container`] and [`ContainerEvent`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum, SystemInfo};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::{FutureExt, StreamExt};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::watch;

use crate::container::{parse_signal, Container, Health, NetworkMode, PortBinding, StopTimeout};
use crate::engine::{
    ContainerEvent, Engine, EngineError, EngineIdentity, EventAction, EventStream,
};

mod dialect;
mod health;

use dialect::Dialect;

/// Seconds a request may take before it counts as failed; the event stream
/// itself is unbounded (the limit only covers its response headers).
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// The address is none the engine API speaks.
#[derive(Debug, thiserror::Error)]
#[error("unsupported Docker host {0:?}")]
pub struct UnsupportedHost(String);

impl From<BollardError> for EngineError {
    fn from(error: BollardError) -> Self {
        let message = format!("Docker engine request failed: {error}");
        match error {
            BollardError::RequestTimeoutError => EngineError::TimedOut(message),
            BollardError::DockerResponseServerError { .. }
            | BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. } => EngineError::RequestFailed(message),
            _ => EngineError::Unreachable(message),
        }
    }
}

/// The Docker engine at one address; connected by [`Engine::connect`].
#[derive(Debug, Clone)]
pub struct Docker {
    host: String,
    client: Option<bollard::Docker>,
    /// Counts the engine's answers to event subscriptions: an answer means
    /// the engine has registered the subscriber, so whatever happens from
    /// then on reaches its stream. bollard's stream gives no sign of it
    /// before the first event, so the transport reports it.
    subscriptions_accepted: Arc<watch::Sender<u64>>,
    /// Docker or Podman, from the version answer at connect: they name
    /// some events differently (see `dialect.rs`).
    dialect: Dialect,
}

impl Docker {
    /// Checks the address; nothing is connected yet, so an engine that is not
    /// up (no socket yet) is no error here.
    pub fn new(host: &str) -> Result<Self, UnsupportedHost> {
        let supported = ["unix://", "tcp://", "http://"];
        if !supported.iter().any(|scheme| host.starts_with(scheme)) {
            return Err(UnsupportedHost(host.to_owned()));
        }
        Ok(Self {
            host: host.to_owned(),
            client: None,
            subscriptions_accepted: Arc::new(watch::channel(0).0),
            dialect: Dialect::default(),
        })
    }

    fn client(&self) -> Result<&bollard::Docker, EngineError> {
        self.client.as_ref().ok_or(EngineError::NotConnected)
    }
}

impl Engine for Docker {
    /// (Re)connects, agrees on the API version with the engine (Debian's
    /// 20.10 speaks 1.41, older than bollard's default) and learns whether
    /// it is dockerd or Podman.
    async fn connect(&mut self) -> Result<EngineIdentity, EngineError> {
        self.client = None;
        let accepted = Arc::clone(&self.subscriptions_accepted);
        let client = match self.host.strip_prefix("unix://") {
            Some(path) => {
                pooled_client(hyperlocal::UnixConnector, unix_socket_base(path), accepted)?
            }
            None => {
                let base = self.host.replacen("tcp://", "http://", 1);
                pooled_client(HttpConnector::new(), base.into(), accepted)?
            }
        };
        let client = client.negotiate_version().await?;
        let version = client.version().await?;
        let components = version.components.iter().flatten();
        self.dialect = Dialect::from_component_names(components.map(|c| c.name.as_str()));
        let identity = match client.info().await {
            Ok(info) => identity(self.dialect, &info),
            // An answer bollard cannot read (a field value it does not know)
            // must not keep the agent from following the engine.
            Err(error) => {
                tracing::warn!(error = %error, "cannot read the engine's /info; naming it by its kind only");
                EngineIdentity::new(&self.dialect.to_string(), &["unnamed"])
            }
        };
        tracing::info!(
            engine = %self.dialect,
            engine_version = version.version.as_deref().unwrap_or("unknown"),
            api_version = %client.client_version(),
            engine_id = %identity,
            "connected to the container engine"
        );
        self.client = Some(client);
        Ok(identity)
    }

    /// Changes each time the engine accepts an event subscription.
    fn subscriptions_accepted(&self) -> watch::Receiver<u64> {
        self.subscriptions_accepted.subscribe()
    }

    /// Whether the engine answers at all, within `timeout`: tells a request
    /// that is slow on its own from an engine that is hung.
    async fn ping(&self, timeout: Duration) -> bool {
        let Ok(client) = self.client() else {
            return false;
        };
        matches!(
            tokio::time::timeout(timeout, client.ping()).await,
            Ok(Ok(_))
        )
    }

    /// Container start/die/destroy/pause/unpause events, networks'
    /// connect/disconnect events (`docker network disconnect` takes a
    /// container's published ports away without any container event) and,
    /// with `health`, health status changes, from `since` (an engine
    /// timestamp) on, in the engine's order.
    fn events(&self, replay: Duration, health: bool) -> Result<EventStream, EngineError> {
        // The engine's timestamps are whole seconds since the epoch.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(replay)
            .as_secs()
            .to_string();
        let actions = self.dialect.subscribed_actions(health);
        // The engine ANDs the keys and ORs the values of each key.
        let filters = HashMap::from([("type", vec!["container", "network"]), ("event", actions)]);
        let options = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let client = self.client()?;
        let messages = client.events(Some(options));
        let dialect = self.dialect;
        if health && dialect.health_event_precedes_verdict() {
            return Ok(health::with_verdicts(messages, client.clone(), dialect));
        }
        Ok(messages
            .filter_map(move |message| async move {
                match message {
                    Ok(message) => container_event(message, dialect).map(Ok),
                    Err(error) => Some(Err(EngineError::from(error))),
                }
            })
            .boxed())
    }

    /// Ids of the containers that are running now.
    async fn running_container_ids(&self) -> Result<Vec<String>, EngineError> {
        let filters = HashMap::from([("status", vec!["running"])]);
        let options = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let summaries = self.client()?.list_containers(Some(options)).await?;
        Ok(summaries.into_iter().filter_map(|s| s.id).collect())
    }

    /// The container's facts, or `None` when it no longer exists.
    async fn inspect(&self, container_id: &str) -> Result<Option<Container>, EngineError> {
        match self.client()?.inspect_container(container_id, None).await {
            Ok(response) => Ok(Some(container_from(response)?)),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

/// The base URI of requests to a Unix socket: hyperlocal's connector finds
/// the socket in the URI's host, hex-encoded.
fn unix_socket_base(socket: &str) -> Arc<str> {
    let host: String = socket.bytes().map(|b| format!("{b:02x}")).collect();
    format!("unix://{host}:0").into()
}

/// A client that keeps its connections to the engine open between requests
/// and reports accepted event subscriptions. bollard's own Unix client opens
/// a connection per request; under a burst of container starts, connecting
/// to a busy dockerd is a measurable part of each registration's latency.
fn pooled_client<C>(
    connector: C,
    base: Arc<str>,
    subscriptions_accepted: Arc<watch::Sender<u64>>,
) -> Result<bollard::Docker, BollardError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client = Arc::new(
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
    );
    let transport = move |request: bollard::BollardRequest| {
        let client = Arc::clone(&client);
        let base = Arc::clone(&base);
        let accepted = Arc::clone(&subscriptions_accepted);
        async move {
            let (mut parts, body) = request.into_parts();
            let is_subscription = parts.uri.path().ends_with("/events");
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("{base}{path}").parse()?;
            let request = bollard::BollardRequest::from_parts(parts, body);
            let response = client.request(request).await?;
            if is_subscription && response.status().is_success() {
                accepted.send_modify(|count| *count += 1);
            }
            Ok(response)
        }
        .boxed()
    };
    bollard::Docker::connect_with_custom_transport(
        transport,
        Some("http://docker.sock"),
        REQUEST_TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
}

/// The container an engine event is about and what it means for its record,
/// in the seam's (Docker's) words; `None` for events that change nothing we
/// register (a network's own `destroy`, say, which the action filter lets
/// through).
fn container_event(message: EventMessage, dialect: Dialect) -> Option<ContainerEvent> {
    use EventAction::{
        Connect, Destroy, Die, Disconnect, HealthStatus, Kill, Pause, Start, Unpause,
    };
    use EventMessageTypeEnum::{CONTAINER, NETWORK};
    let typ = message.typ?;
    let signal = || {
        let attributes = message.actor.as_ref()?.attributes.as_ref()?;
        attributes.get("signal")?.parse::<i32>().ok()
    };
    let action = match (typ, message.action.as_deref()?) {
        (CONTAINER, "start") => Start,
        (CONTAINER, "pause") => Pause,
        (CONTAINER, "unpause") => Unpause,
        (CONTAINER, "die") => Die,
        // dockerd's `kill` names the signal by number; without one there is
        // nothing to decide.
        (CONTAINER, "kill") => Kill(signal()?),
        // Podman's compat stream renames its `died` to `die` but keeps
        // `remove`, which is Docker's `destroy`.
        (CONTAINER, "destroy" | "remove") => Destroy,
        (CONTAINER, action) if action.starts_with("health_status") => HealthStatus,
        (NETWORK, "connect") => Connect,
        (NETWORK, "disconnect") => Disconnect,
        _ => return None,
    };
    let actor = message.actor?;
    let container_id = if typ == NETWORK && !dialect.network_event_actor_is_container() {
        // A network event's actor is the network; the container is named
        // in its attributes.
        actor.attributes?.remove("container")?
    } else {
        actor.id?
    };
    Some(ContainerEvent {
        container_id,
        action,
    })
}

fn container_from(response: ContainerInspectResponse) -> Result<Container, EngineError> {
    let id = response.id.ok_or_else(|| {
        EngineError::RequestFailed("Docker engine sent a container without its Id".into())
    })?;
    let config = response.config.unwrap_or_default();
    let state = response.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let paused = state.paused.unwrap_or(false);
    let health = state
        .health
        .and_then(|health| health.status)
        .map_or(Health::NoCheck, |status| {
            Health::from_docker(status.as_ref())
        });
    // A container in another's network namespace (`--network container:ID`,
    // every member of a Podman pod) publishes nothing of its own: Podman
    // still reports the owner's bindings on it, which would register one
    // port under two containers. The owner (a pod's infra container) has
    // the record.
    let network_mode = network::network_mode(
        response
            .host_config
            .as_ref()
            .and_then(|host| host.network_mode.as_deref()),
    );
    let shares_network = network_mode == NetworkMode::Shared;
    let settings = response.network_settings.unwrap_or_default();
    let exposed = network::exposed(config.exposed_ports.as_deref(), settings.ports.as_ref());
    let networks = network::attachments(settings.networks);
    let bindings = settings
        .ports
        .filter(|_| !shares_network)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(port, bindings)| port_bindings(port, bindings.unwrap_or_default()))
        .collect();
    let stop_signal = config.stop_signal.as_deref().and_then(parse_signal);
    let stop_timeout = StopTimeout::from_engine_seconds(config.stop_timeout);
    Ok(Container {
        id,
        configured_image: config.image.unwrap_or_default(),
        image_id: response.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        running,
        paused,
        health,
        bindings,
        network_mode,
        networks,
        exposed,
        stop_signal,
        stop_timeout,
    })
}

/// `"80/tcp"` with its host bindings; a port without a protocol is TCP.
fn port_bindings(
    port: String,
    bindings: Vec<bollard::models::PortBinding>,
) -> impl Iterator<Item = PortBinding> {
    let (private_port, protocol) = match port.split_once('/') {
        Some((number, protocol)) => (number.to_owned(), protocol.to_owned()),
        None => (port, "tcp".to_owned()),
    };
    bindings.into_iter().map(move |binding| PortBinding {
        private_port: private_port.clone(),
        protocol: protocol.clone(),
        host_ip: binding.host_ip.unwrap_or_default(),
        host_port: binding.host_port.unwrap_or_default(),
    })
}

mod network;
#[cfg(test)]
mod tests;

/// Which engine this is (`engine::EngineIdentity`), from what the engine
/// itself says (an agent in a container sees another filesystem than the
/// engine): Docker by its `/info` ID and host name (VMs cloned from one
/// image can share an ID); Podman, whose `/info` ID is new on every
/// request, and an engine that gives none, by its host name and storage
/// root (which tells rootful Podman from a user's).
fn identity(dialect: Dialect, info: &SystemInfo) -> EngineIdentity {
    let id = info.id.as_deref().unwrap_or_default();
    let name = info.name.as_deref().unwrap_or_default();
    if dialect == Dialect::Docker && !id.trim().is_empty() {
        return EngineIdentity::new("docker", &[id, name]);
    }
    let root = info.docker_root_dir.as_deref().unwrap_or_default();
    EngineIdentity::new(&dialect.to_string(), &[name, root])
}
