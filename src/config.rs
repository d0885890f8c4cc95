//! Command line and environment (README "Configuration"), validated into a
//! [`Config`].
//!
//! Every flag also reads an environment variable so that the original unit
//! file (`-e HOST_IP=... -e ETCD_ENDPOINT=host:4001`) keeps working. Values
//! are taken as text and validated here, so that every mistake is reported as
//! one line naming both the flag and its variable.

mod address;
mod etcd;
mod list;
mod render;

use crate::record::address::AddressMode;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::IntErrorKind;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::container::{LabelRequirement, Selection};
use crate::record::{self, HostPrefix};

use address::{parse_docker_host, parse_metrics_addr};
use etcd::EtcdArgs;
pub use etcd::{EtcdSecurity, EtcdTarget};
pub use list::ListConfig;
pub use render::{RenderConfig, RenderedFile};

/// etcd's `MaxLeaseTTL` (lease/lessor.go): a longer TTL is refused by every
/// grant ("etcdserver: too large lease TTL"), which the agent would retry
/// forever.
const MAX_LEASE_TTL_SECS: u64 = 9_000_000_000;

/// One year. A resync period becomes `Instant + period`, which panics on
/// overflow; a year is far beyond any useful period (`0` turns it off) and
/// far inside every clock, and inside the range tokio's timer wheel keeps
/// exactly (about two years).
const MAX_RESYNC_SECS: u64 = 365 * 24 * 60 * 60;

#[derive(Debug, Parser)]
#[command(
    name = "docker-etcd-register",
    version,
    about = "Keeps etcd v3 equal to the published ports of the containers running on this Docker host",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    etcd: EtcdArgs,

    /// Address other hosts reach this host on; goes into keys and replaces wildcard bindings.
    #[arg(long, env = "HOST_IP", value_name = "IP")]
    host_ip: Option<String>,

    /// This host's IPv6 address: replaces `::` wildcard bindings (which --host-ip replaces when unset) and serves host-network containers too.
    #[arg(long, env = "HOST_IP6", value_name = "IPV6")]
    host_ip6: Option<String>,

    /// Lifetime of the agent's etcd lease in seconds; 0 = records without lease.
    #[arg(
        long,
        env = "REGISTER_TTL",
        value_name = "SECS",
        default_value = "30",
        allow_hyphen_values = true
    )]
    ttl: String,

    /// Period of the full reconcile in seconds; 0 = never.
    #[arg(
        long,
        env = "REGISTER_RESYNC",
        value_name = "SECS",
        default_value = "300",
        allow_hyphen_values = true
    )]
    resync: String,

    /// Docker Engine API: unix://PATH, tcp://HOST:PORT or http://HOST:PORT.
    // `hide_env_values`: `--help` must not print a password someone typed
    // into the URL.
    #[arg(
        long,
        env = "DOCKER_HOST",
        value_name = "URL",
        default_value = "unix:///var/run/docker.sock",
        hide_env_values = true
    )]
    docker_host: String,

    /// Only register containers carrying this label (and value); repeatable.
    #[arg(
        long = "require-label",
        env = "REGISTER_REQUIRE_LABELS",
        value_name = "KEY[=VALUE]",
        value_delimiter = ','
    )]
    require_labels: Vec<String>,

    /// Register a container with a HEALTHCHECK only while Docker reports it healthy.
    #[arg(
        long,
        env = "REGISTER_REQUIRE_HEALTHY",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    require_healthy: bool,

    /// Which address registers a container: `published` (its published ports, on --host-ip for a wildcard) or `network` (its own address on --network, with its exposed ports).
    #[arg(
        long,
        env = "REGISTER_ADDRESS_MODE",
        value_name = "MODE",
        default_value = "published"
    )]
    address_mode: String,

    /// With --address-mode network: the network whose address is registered (`host`: containers on the host's network, on --host-ip); unset: each container's only network.
    #[arg(long, env = "REGISTER_NETWORK", value_name = "NAME")]
    network: Option<String>,

    /// On SIGTERM/SIGINT, remove this host's records (revoke the lease) before exiting.
    #[arg(
        long,
        env = "REGISTER_DEREGISTER_ON_EXIT",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    deregister_on_exit: bool,

    /// Serve Prometheus /metrics and /healthz on this address (e.g. 127.0.0.1:9731); off when unset.
    #[arg(long, env = "REGISTER_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<String>,

    /// Log format: `text` (one human-readable line per event) or `json` (one JSON object per line).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    log_format: String,

    /// Reconcile once and exit: 0 when the prefix is exact afterwards, 1 otherwise.
    #[arg(long)]
    once: bool,

    /// Log every write and delete that would happen, change nothing in etcd.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what is registered across the whole cluster, read from etcd.
    List(list::ListArgs),
    /// Render a load balancer's configuration from the records of every host.
    Render(render::RenderArgs),
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
///
/// Nothing in it shows a secret when logged or printed with `{:?}`: the
/// addresses carry no user info (refused at start) and [`EtcdSecurity`]
/// hides the password and the key.
pub struct Config {
    /// `{prefix}/{host_ip}/`: the one prefix the agent writes under.
    pub host: HostPrefix,
    /// Normalised `http(s)://host:port`, never with user info: safe to log.
    pub etcd_endpoints: Vec<String>,
    /// `None`: plain keys, no lease. At most etcd's maximum lease TTL.
    pub lease_ttl: Option<Duration>,
    /// `None`: no periodic reconcile. At most [`MAX_RESYNC_SECS`], so that
    /// `Instant + resync` cannot overflow.
    pub resync: Option<Duration>,
    /// `unix:///path`, or `tcp://host:port` / `http://host:port` without
    /// user info: safe to log.
    pub docker_host: String,
    /// Which containers are registered (labels, health).
    pub selection: Selection,
    /// Remove the host's records at shutdown instead of leaving them to the lease.
    pub deregister_on_exit: bool,
    /// TLS and credentials for etcd; its `Debug` shows no secret.
    pub etcd_security: EtcdSecurity,
    /// Where `/metrics` and `/healthz` are served (never port 0); off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// How log lines look on stderr.
    pub log_format: LogFormat,
    /// Reconcile once and exit (an exit code says whether the prefix is exact).
    pub once: bool,
    /// Log the writes and deletes instead of doing them.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration mistake: names the flag and its environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    flag: &'static str,
    /// `None` for flags without a variable (those of `list`).
    env: Option<&'static str>,
    problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}", self.flag)?;
        if let Some(env) = self.env {
            write!(f, " (env {env})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn error(flag: &'static str, env: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        env: Some(env),
        problem: problem.into(),
    }
}

/// A mistake in a flag that has no environment variable.
fn flag_error(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        env: None,
        problem: problem.into(),
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Mode {
    /// Run the agent.
    Agent(Box<Config>),
    /// `list`: show the records.
    List(Box<ListConfig>),
    /// `render`: write a load balancer's configuration.
    Render(Box<RenderConfig>),
}

impl Cli {
    pub fn into_mode(self) -> Result<Mode, ConfigError> {
        match self.command {
            Some(Command::List(list)) => {
                let root = record::root_path(&self.etcd.prefix);
                let config = list.into_config(self.etcd.target()?, root)?;
                Ok(Mode::List(Box::new(config)))
            }
            Some(Command::Render(render)) => {
                let root = record::root_path(&self.etcd.prefix);
                let config = render.into_config(self.etcd.target()?, root)?;
                Ok(Mode::Render(Box::new(config)))
            }
            None => Ok(Mode::Agent(Box::new(self.into_config()?))),
        }
    }

    pub fn into_config(self) -> Result<Config, ConfigError> {
        let host_ip = parse_host_ip(self.host_ip.as_deref())?;
        let host_ip6 = parse_host_ip6(self.host_ip6.as_deref(), host_ip)?;
        let EtcdTarget {
            endpoints: etcd_endpoints,
            security: etcd_security,
        } = self.etcd.target()?;
        let metrics_addr = self
            .metrics_addr
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                parse_metrics_addr(a)
                    .map_err(|p| error("--metrics-addr", "REGISTER_METRICS_ADDR", p))
            })
            .transpose()?;
        let log_format = match self.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(error(
                    "--log-format",
                    "LOG_FORMAT",
                    format!("{other:?} is neither text nor json"),
                ))
            }
        };
        let lease_ttl = parse_seconds(&self.ttl, MAX_LEASE_TTL_SECS, "etcd's maximum lease TTL")
            .map_err(|p| error("--ttl", "REGISTER_TTL", p))?;
        let resync = parse_seconds(&self.resync, MAX_RESYNC_SECS, "one year")
            .map_err(|p| error("--resync", "REGISTER_RESYNC", p))?;
        let docker_host = parse_docker_host(&self.docker_host)
            .map_err(|p| error("--docker-host", "DOCKER_HOST", p))?;
        let required_labels = self
            .require_labels
            .iter()
            .filter(|text| !text.trim().is_empty())
            .map(|text| {
                LabelRequirement::parse(text).ok_or_else(|| {
                    error(
                        "--require-label",
                        "REGISTER_REQUIRE_LABELS",
                        format!("{text:?} has no label key (expected KEY or KEY=VALUE)"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let address_mode = AddressMode::from_flags(&self.address_mode, self.network.as_deref())
            .map_err(|p| error("--address-mode", "REGISTER_ADDRESS_MODE", p))?;
        Ok(Config {
            host: HostPrefix::new(&self.etcd.prefix, host_ip),
            etcd_endpoints,
            lease_ttl,
            resync,
            docker_host,
            selection: Selection {
                required_labels,
                require_healthy: self.require_healthy,
                address_mode,
                host_ip6,
            },
            deregister_on_exit: self.deregister_on_exit,
            etcd_security,
            metrics_addr,
            log_format,
            once: self.once,
            dry_run: self.dry_run,
        })
    }
}

fn parse_host_ip(text: Option<&str>) -> Result<IpAddr, ConfigError> {
    let text = text.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(error("--host-ip", "HOST_IP", "required, e.g. 10.0.0.5"));
    }
    let ip: IpAddr = text.parse().map_err(|_| {
        error(
            "--host-ip",
            "HOST_IP",
            format!("{text:?} is not an IP address"),
        )
    })?;
    // One host, one spelling: `::ffff:10.0.0.5` is `10.0.0.5`, in its keys
    // and in its lock.
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        return Err(error(
            "--host-ip",
            "HOST_IP",
            format!("{ip} is a wildcard, not an address other hosts can reach"),
        ));
    }
    if !crate::record::offerable(ip, ip) {
        return Err(error(
            "--host-ip",
            "HOST_IP",
            format!("{ip} is multicast, broadcast or link-local: no host is reached there"),
        ));
    }
    Ok(ip)
}

/// `--host-ip6`: an IPv6 address other hosts can reach, or none.
fn parse_host_ip6(
    text: Option<&str>,
    host_ip: IpAddr,
) -> Result<Option<std::net::Ipv6Addr>, ConfigError> {
    let text = text.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Ok(None);
    }
    let fail = |problem: String| error("--host-ip6", "HOST_IP6", problem);
    let ip: std::net::Ipv6Addr = text
        .parse()
        .map_err(|_| fail(format!("{text:?} is not an IPv6 address")))?;
    // Judged as the records' addresses are, against --host-ip: a loopback
    // address only beside a loopback --host-ip, or list and render would
    // refuse every record it is in.
    let reachable = !ip.is_unspecified()
        && ip.to_ipv4_mapped().is_none()
        && crate::record::offerable(IpAddr::V6(ip), host_ip);
    if !reachable {
        return Err(fail(format!(
            "{ip} is a wildcard, an IPv4 address, multicast, link-local, or loopback beside a --host-ip that is not: no other host is reached there"
        )));
    }
    Ok(Some(ip))
}

/// A whole number of seconds from 0 to `max` (named `max_name` in the
/// error); `0` disables the feature (`None`).
///
/// No lower bound above 1: etcd raises a TTL below its minimum (1.5 election
/// timeouts, 2 s by default) by itself, and the keep-alives, sent every third
/// of the configured TTL, then come more often than needed, never too late.
fn parse_seconds(text: &str, max: u64, max_name: &str) -> Result<Option<Duration>, String> {
    let seconds: u64 = text.trim().parse().map_err(|e: std::num::ParseIntError| {
        if *e.kind() == IntErrorKind::PosOverflow {
            format!("{text:?} is above the maximum of {max} s ({max_name})")
        } else {
            format!("{text:?} is not a whole number of seconds")
        }
    })?;
    if seconds > max {
        return Err(format!(
            "{seconds} is above the maximum of {max} s ({max_name}); 0 turns it off"
        ));
    }
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests;
