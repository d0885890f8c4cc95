//! What the agent knows of a container: the facts the Docker adapter extracts
//! from an inspect, and the rules (labels, health) that decide whether it is
//! registered.

use std::collections::BTreeMap;

use crate::record::{Name, NameError};

mod network;
pub use network::{Attachment, ExposedPort, NetworkMode};

/// The facts of one container that decide its record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    /// Full 64-hex container id.
    pub id: String,
    /// `Config.Image`: the reference exactly as it was typed.
    pub configured_image: String,
    /// `Image`: the `sha256:<hex>` id of the container's image.
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// `State.Paused`: Docker still reports a paused container as running,
    /// but its processes are frozen and serve nothing.
    pub paused: bool,
    /// Docker's verdict on its HEALTHCHECK (`State.Health.Status`).
    pub health: Health,
    pub bindings: Vec<PortBinding>,
    /// `HostConfig.NetworkMode`.
    pub network_mode: NetworkMode,
    /// The networks it is attached to, with its addresses there
    /// (`NetworkSettings.Networks`, the only place API 1.52 reports them).
    pub networks: Vec<Attachment>,
    /// The ports it serves on, published or not.
    pub exposed: Vec<ExposedPort>,
    /// `Config.StopSignal` as a number; `None`: the engine's default,
    /// SIGTERM (also when the name is not one we know).
    pub stop_signal: Option<i32>,
    /// `Config.StopTimeout`: how long a stop waits before SIGKILL.
    pub stop_timeout: StopTimeout,
}

/// How long `docker stop` waits for the container before it kills it, as
/// the container's owner set it (`--stop-timeout`): any number the engine
/// reports is a value of this type, none can overflow a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopTimeout {
    /// Killed after this long.
    After(std::time::Duration),
    /// Never killed: the stop waits for it to exit (a negative timeout,
    /// `--stop-timeout -1`).
    Never,
}

impl Default for StopTimeout {
    /// The engine's own default.
    fn default() -> Self {
        StopTimeout::After(DEFAULT_STOP_TIMEOUT)
    }
}

impl StopTimeout {
    /// `Config.StopTimeout` in seconds as the engine reports it: absent is
    /// the engine's default, negative means "wait for ever".
    pub fn from_engine_seconds(seconds: Option<i64>) -> Self {
        match seconds {
            None => StopTimeout::default(),
            Some(seconds) => match u64::try_from(seconds) {
                Ok(seconds) => StopTimeout::After(std::time::Duration::from_secs(seconds)),
                Err(_) => StopTimeout::Never,
            },
        }
    }
}

/// SIGTERM: what `docker stop` sends unless the image says otherwise.
pub const SIGTERM: i32 = 15;
/// How long `docker stop` waits for a container unless it says otherwise.
pub const DEFAULT_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The signals of Linux on x86 and arm by name (`SIGTERM` or `TERM`) or
/// number, as `Config.StopSignal` holds them; `None` for anything else.
pub fn parse_signal(text: &str) -> Option<i32> {
    const NAMES: [(&str, i32); 19] = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("WINCH", 28),
    ];
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return (1..=64).contains(&number).then_some(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, number)| *number)
}

/// The container label that opts a container out of registration.
pub const IGNORE_LABEL: &str = "docker-etcd-register.ignore";
/// The container label that names the service a container belongs to: it
/// replaces the image in the record's key, so that the versions of an image
/// during a rolling upgrade are one service.
pub const SERVICE_LABEL: &str = "docker-etcd-register.service";

/// Docker's verdict on a container's HEALTHCHECK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// No HEALTHCHECK (Docker reports no `State.Health`, or `none`).
    #[default]
    NoCheck,
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    /// Docker's `State.Health.Status` (or the status of a `health_status`
    /// event); anything unknown counts as not healthy yet.
    pub fn from_docker(status: &str) -> Self {
        match status {
            "" | "none" => Health::NoCheck,
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            _ => Health::Starting,
        }
    }
}

/// Why a container that would otherwise be registered is held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Withheld {
    /// Its HEALTHCHECK has not passed yet.
    Starting,
    /// Its HEALTHCHECK fails.
    Unhealthy,
}

impl Withheld {
    pub const ALL: [Withheld; 2] = [Withheld::Starting, Withheld::Unhealthy];

    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::Starting => "starting",
            Withheld::Unhealthy => "unhealthy",
        }
    }
}

/// Which containers this agent registers (`--require-label`,
/// `--require-healthy`, the ignore label), and on which address
/// (`--address-mode`, `--network`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub required_labels: Vec<LabelRequirement>,
    /// Containers with a HEALTHCHECK count only while `healthy`.
    pub require_healthy: bool,
    /// The agent's address mode; a container's labels may override it.
    pub address_mode: crate::record::address::AddressMode,
    /// `--host-ip6`: replaces `::` wildcards; `None`: `--host-ip` does.
    pub host_ip6: Option<std::net::Ipv6Addr>,
}

/// What the selection says of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Registered if it publishes a port.
    Selected,
    /// Not this agent's business: not running, paused, a label missing, or
    /// opted out.
    NotSelected,
    /// Selected but for its health: registered once it is healthy.
    Withheld(Withheld),
}

/// One published port binding, as Docker reports it in `NetworkSettings.Ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub private_port: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Empty, a wildcard (`0.0.0.0`, `::`) or a concrete address.
    pub host_ip: String,
    pub host_port: String,
}

/// `--require-label KEY[=VALUE]`: the container must carry `KEY`, with exactly
/// `VALUE` when one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub value: Option<String>,
}

impl LabelRequirement {
    /// Parses `KEY` or `KEY=VALUE`; `None` when the key is empty.
    pub fn parse(text: &str) -> Option<Self> {
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (text, None),
        };
        let key = key.trim();
        (!key.is_empty()).then(|| Self {
            key: key.to_owned(),
            value,
        })
    }

    fn is_met_by(&self, labels: &BTreeMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(actual), Some(wanted)) => actual == wanted,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

impl Container {
    /// Whether the container is one this agent registers at all: running and
    /// not paused, carrying every required label, not opted out by the ignore label, and
    /// (with `require_healthy`) healthy or without HEALTHCHECK. Whether it
    /// publishes anything is the record builder's question.
    pub fn verdict(&self, selection: &Selection) -> Verdict {
        let labelled = selection
            .required_labels
            .iter()
            .all(|r| r.is_met_by(&self.labels));
        if !self.running || self.paused || !labelled || self.opted_out() {
            return Verdict::NotSelected;
        }
        match (selection.require_healthy, self.health) {
            (true, Health::Starting) => Verdict::Withheld(Withheld::Starting),
            (true, Health::Unhealthy) => Verdict::Withheld(Withheld::Unhealthy),
            _ => Verdict::Selected,
        }
    }

    /// Whether `signal` asks the container to stop, so that it should stop
    /// receiving traffic now (docs/behaviour.md: "Drain before stop"): its stop signal,
    /// or SIGKILL, SIGINT or SIGQUIT. Any other signal (SIGHUP for a reload,
    /// SIGUSR1...) changes nothing.
    pub fn drains_on(&self, signal: i32) -> bool {
        const KILL_INT_QUIT: [i32; 3] = [9, 2, 3];
        signal == self.stop_signal.unwrap_or(SIGTERM) || KILL_INT_QUIT.contains(&signal)
    }

    /// The service named by [`SERVICE_LABEL`], as a key segment (the image
    /// segment's rules: `/` becomes `::`); `Ok(None)` when the label is
    /// absent or blank, `Err` when it is outside the name grammar.
    pub fn service(&self) -> Result<Option<Name>, NameError> {
        self.service_label()
            .map_or(Ok(None), Name::from_service_label)
    }

    /// The raw value of [`SERVICE_LABEL`], as the container's owner wrote it.
    pub fn service_label(&self) -> Option<&str> {
        self.labels.get(SERVICE_LABEL).map(String::as_str)
    }

    /// `docker-etcd-register.ignore=true` (also `1`, `yes`, any case).
    fn opted_out(&self) -> bool {
        self.labels.get(IGNORE_LABEL).is_some_and(|value| {
            matches!(
                value.trim().to_ascii_lowercase().as_str(),
                "true" | "1" | "yes"
            )
        })
    }
}

#[cfg(test)]
mod tests;
