//! Command line and environment (SPEC §1), validated into a [`Config`].
//!
//! Every flag also reads an environment variable so that the original unit
//! file (`-e HOST_IP=... -e ETCD_ENDPOINT=host:4001`) keeps working. Values
//! are taken as text and validated here, so that every mistake is reported as
//! one line naming both the flag and its variable.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::container::{LabelRequirement, Selection};
use crate::listing::Filter;
use crate::record::{self, HostPrefix};

const DEFAULT_ETCD_PORT: u16 = 2379;

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
    #[arg(
        long,
        env = "DOCKER_HOST",
        value_name = "URL",
        default_value = "unix:///var/run/docker.sock"
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
    List(ListArgs),
}

/// How to reach etcd and where the records are: shared by the agent and `list`.
#[derive(Debug, Args)]
struct EtcdArgs {
    /// Comma-separated etcd endpoints of one cluster; `host:port` means `http://host:port`.
    #[arg(
        long,
        global = true,
        env = "ETCD_ENDPOINT",
        value_name = "LIST",
        default_value = "http://127.0.0.1:2379"
    )]
    etcd_endpoints: String,

    /// Root of all keys.
    #[arg(
        long,
        global = true,
        env = "REGISTER_PREFIX",
        value_name = "PATH",
        default_value = "/registered"
    )]
    prefix: String,

    /// CA certificate (PEM) that signed etcd's server certificates; enables TLS.
    #[arg(long, global = true, env = "ETCD_CACERT", value_name = "FILE")]
    etcd_cacert: Option<PathBuf>,

    /// Client certificate (PEM) for etcd's client-certificate authentication.
    #[arg(long, global = true, env = "ETCD_CERT", value_name = "FILE")]
    etcd_cert: Option<PathBuf>,

    /// Private key (PEM) of --etcd-cert.
    #[arg(long, global = true, env = "ETCD_KEY", value_name = "FILE")]
    etcd_key: Option<PathBuf>,

    /// etcd user name (etcd's own authentication).
    #[arg(long, global = true, env = "ETCD_USER", value_name = "NAME")]
    etcd_user: Option<String>,

    /// Password of --etcd-user (prefer --etcd-password-file: the environment and
    /// the command line are visible to other processes of the same user).
    #[arg(
        long,
        global = true,
        env = "ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    etcd_password: Option<String>,

    /// File holding the password of --etcd-user (first line).
    #[arg(long, global = true, env = "ETCD_PASSWORD_FILE", value_name = "FILE")]
    etcd_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only the records of this host (its --host-ip).
    #[arg(long, value_name = "IP")]
    host: Option<String>,

    /// Only this image, in any familiar form (`busybox`, `docker.io/library/busybox:latest`);
    /// without a tag, every tag of it.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,

    /// One JSON array (one object per published port) instead of a table.
    #[arg(long)]
    json: bool,

    /// Keep running and print the whole list again whenever it changes.
    #[arg(long)]
    watch: bool,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: HostPrefix,
    pub etcd_endpoints: Vec<String>,
    /// `None`: plain keys, no lease.
    pub lease_ttl: Option<Duration>,
    /// `None`: no periodic reconcile.
    pub resync: Option<Duration>,
    pub docker_host: String,
    /// Which containers are registered (labels, health).
    pub selection: Selection,
    /// Remove the host's records at shutdown instead of leaving them to the lease.
    pub deregister_on_exit: bool,
    pub etcd_security: EtcdSecurity,
    pub metrics_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub once: bool,
    pub dry_run: bool,
}

/// How the agent authenticates to etcd and checks etcd's identity.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdSecurity {
    /// PEM of the CA that signed etcd's server certificates: TLS is on.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key for client-certificate authentication.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    pub credentials: Option<Credentials>,
}

/// An etcd user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Never shows the password, whatever prints it.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("tls", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_identity.is_some())
            .field("credentials", &self.credentials)
            .finish()
    }
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
}

/// The validated configuration of `list`.
#[derive(Debug, Clone)]
pub struct ListConfig {
    pub etcd: EtcdTarget,
    /// The root of all keys, with a trailing `/` (`/registered/`).
    pub root: String,
    /// What to read: one host's prefix when filtered by host (so
    /// `10.0.0.1` never reads `10.0.0.10`), else the whole root.
    pub read_prefix: String,
    pub filter: Filter,
    pub json: bool,
    pub watch: bool,
}

/// An etcd cluster and how to talk to it.
#[derive(Debug, Clone)]
pub struct EtcdTarget {
    pub endpoints: Vec<String>,
    pub security: EtcdSecurity,
}

impl Cli {
    pub fn into_mode(self) -> Result<Mode, ConfigError> {
        match self.command {
            Some(Command::List(ref list)) => {
                let etcd = self.etcd.target()?;
                let host = list
                    .host
                    .as_deref()
                    .map(|text| {
                        text.trim().parse::<IpAddr>().map_err(|_| {
                            flag_error("--host", format!("{text:?} is not an IP address"))
                        })
                    })
                    .transpose()?;
                let root = record::root_path(&self.etcd.prefix);
                let read_prefix = host.map_or_else(
                    || root.clone(),
                    |ip| HostPrefix::new(&root, ip).as_str().to_owned(),
                );
                Ok(Mode::List(Box::new(ListConfig {
                    etcd,
                    root,
                    read_prefix,
                    filter: Filter {
                        host: host.map(|ip| ip.to_string()),
                        image: list.image.clone().filter(|i| !i.trim().is_empty()),
                    },
                    json: list.json,
                    watch: list.watch,
                })))
            }
            None => Ok(Mode::Agent(Box::new(self.into_config()?))),
        }
    }

    pub fn into_config(self) -> Result<Config, ConfigError> {
        let host_ip = parse_host_ip(self.host_ip.as_deref())?;
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
                a.parse::<SocketAddr>().map_err(|_| {
                    error(
                        "--metrics-addr",
                        "REGISTER_METRICS_ADDR",
                        format!("{a:?} is not IP:PORT, e.g. 127.0.0.1:9731"),
                    )
                })
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
        let lease_ttl = parse_seconds(&self.ttl).map_err(|p| error("--ttl", "REGISTER_TTL", p))?;
        let resync =
            parse_seconds(&self.resync).map_err(|p| error("--resync", "REGISTER_RESYNC", p))?;
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
        Ok(Config {
            host: HostPrefix::new(&self.etcd.prefix, host_ip),
            etcd_endpoints,
            lease_ttl,
            resync,
            docker_host,
            selection: Selection {
                required_labels,
                require_healthy: self.require_healthy,
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

impl EtcdArgs {
    fn target(&self) -> Result<EtcdTarget, ConfigError> {
        let security = self.etcd_security()?;
        let tls = security.ca_pem.is_some();
        let endpoints = parse_endpoints(&self.etcd_endpoints, tls)
            .map_err(|p| error("--etcd-endpoints", "ETCD_ENDPOINT", p))?;
        Ok(EtcdTarget {
            endpoints,
            security,
        })
    }

    fn etcd_security(&self) -> Result<EtcdSecurity, ConfigError> {
        let ca_pem = self
            .etcd_cacert
            .as_deref()
            .map(|path| read_file(path).map_err(|p| error("--etcd-cacert", "ETCD_CACERT", p)))
            .transpose()?;
        let client_identity = match (&self.etcd_cert, &self.etcd_key) {
            (Some(cert), Some(key)) => {
                let cert = read_file(cert).map_err(|p| error("--etcd-cert", "ETCD_CERT", p))?;
                let key = read_file(key).map_err(|p| error("--etcd-key", "ETCD_KEY", p))?;
                Some((cert, key))
            }
            (Some(_), None) => {
                return Err(error("--etcd-key", "ETCD_KEY", "required with --etcd-cert"))
            }
            (None, Some(_)) => {
                return Err(error(
                    "--etcd-cert",
                    "ETCD_CERT",
                    "required with --etcd-key",
                ))
            }
            (None, None) => None,
        };
        if client_identity.is_some() && ca_pem.is_none() {
            return Err(error(
                "--etcd-cacert",
                "ETCD_CACERT",
                "required with a client certificate (TLS needs the CA that signed etcd's certificate)",
            ));
        }
        let password =
            match (&self.etcd_password, &self.etcd_password_file) {
                (Some(_), Some(_)) => return Err(error(
                    "--etcd-password-file",
                    "ETCD_PASSWORD_FILE",
                    "give either a password file or --etcd-password (env ETCD_PASSWORD), not both",
                )),
                (None, Some(path)) => {
                    let text = read_file(path)
                        .map_err(|p| error("--etcd-password-file", "ETCD_PASSWORD_FILE", p))?;
                    let text = String::from_utf8(text).map_err(|_| {
                        error(
                            "--etcd-password-file",
                            "ETCD_PASSWORD_FILE",
                            "is not UTF-8 text",
                        )
                    })?;
                    Some(text.lines().next().unwrap_or_default().to_owned())
                }
                (Some(password), None) => Some(password.clone()),
                (None, None) => None,
            };
        let user = self
            .etcd_user
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let credentials = match (user, password) {
            (Some(user), Some(password)) => Some(Credentials {
                user: user.to_owned(),
                password,
            }),
            (Some(_), None) => {
                return Err(error(
                    "--etcd-password-file",
                    "ETCD_PASSWORD_FILE",
                    "--etcd-user needs a password (--etcd-password-file or --etcd-password)",
                ))
            }
            (None, Some(_)) => {
                return Err(error(
                    "--etcd-user",
                    "ETCD_USER",
                    "a password was given without a user",
                ))
            }
            (None, None) => None,
        };
        Ok(EtcdSecurity {
            ca_pem,
            client_identity,
            credentials,
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
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
    if ip.is_unspecified() {
        return Err(error(
            "--host-ip",
            "HOST_IP",
            format!("{ip} is a wildcard, not an address other hosts can reach"),
        ));
    }
    Ok(ip)
}

/// `0` disables the feature (`None`).
fn parse_seconds(text: &str) -> Result<Option<Duration>, String> {
    let seconds: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))?;
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

/// With `tls`, endpoints without a scheme are `https://`, and `http://` is
/// refused: half-encrypted clusters are a mistake, not a configuration.
fn parse_endpoints(list: &str, tls: bool) -> Result<Vec<String>, String> {
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| parse_endpoint(e, tls))
        .collect::<Result<_, _>>()?;
    if endpoints.is_empty() {
        return Err("no endpoint given".into());
    }
    Ok(endpoints)
}

/// Normalises one endpoint to `http(s)://host:port`.
fn parse_endpoint(text: &str, tls: bool) -> Result<String, String> {
    let wanted = if tls { "https" } else { "http" };
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("{wanted}://{text}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| format!("{text:?} is not host:port or {wanted}://host:port"))?;
    match (uri.scheme_str(), tls) {
        (Some("http"), false) | (Some("https"), true) => {}
        (Some("https"), false) => {
            return Err(format!(
                "{text:?} is https: give --etcd-cacert (env ETCD_CACERT) to use TLS"
            ))
        }
        (Some("http"), true) => {
            return Err(format!("{text:?} is plain http, but TLS is configured"))
        }
        _ => return Err(format!("{text:?}: the scheme must be {wanted}")),
    }
    let host = uri.host().filter(|h| !h.is_empty());
    let Some(host) = host else {
        return Err(format!("{text:?} has no host"));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("{text:?}: an endpoint has no path"));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "{text:?}: credentials do not belong in the endpoint"
        ));
    }
    // `http::Uri` accepts `host:` and `host:99999`; etcd would not.
    let port = match authority.rsplit_once(':') {
        Some((before, port)) if !before.ends_with(':') || before.starts_with('[') => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{text:?} has no valid port"))?,
        _ => DEFAULT_ETCD_PORT,
    };
    Ok(format!("{wanted}://{host}:{port}"))
}

fn parse_docker_host(text: &str) -> Result<String, String> {
    let text = text.trim();
    let supported = ["unix://", "tcp://", "http://"];
    match supported.iter().find(|scheme| text.starts_with(*scheme)) {
        Some(scheme) if text.len() > scheme.len() => Ok(text.to_owned()),
        _ => Err(format!(
            "{text:?} must be unix:///path/to/docker.sock, tcp://host:port or http://host:port"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("docker-etcd-register").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .expect("clap accepts")
            .into_config()
    }

    fn problem_of(args: &[&str]) -> String {
        config(args).expect_err("must be rejected").to_string()
    }

    #[test]
    fn defaults_with_only_a_host_ip() {
        let c = config(&["--host-ip", "10.0.0.5"]).unwrap();
        assert_eq!(c.host.as_str(), "/registered/10.0.0.5/");
        assert_eq!(c.etcd_endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(c.lease_ttl, Some(Duration::from_secs(30)));
        assert_eq!(c.resync, Some(Duration::from_secs(300)));
        assert_eq!(c.docker_host, "unix:///var/run/docker.sock");
        assert!(c.selection.required_labels.is_empty());
        assert!(
            !c.selection.require_healthy,
            "the original registered every container"
        );
    }

    #[test]
    fn require_healthy_is_a_switch() {
        let c = config(&["--host-ip", "10.0.0.5", "--require-healthy"]).unwrap();
        assert!(c.selection.require_healthy);
    }

    #[test]
    fn original_host_port_endpoints_get_http() {
        let c = config(&[
            "--host-ip",
            "10.0.0.5",
            "--etcd-endpoints",
            "10.0.0.1:4001, http://[::1]:2379,etcd.local",
        ])
        .unwrap();
        assert_eq!(
            c.etcd_endpoints,
            vec![
                "http://10.0.0.1:4001",
                "http://[::1]:2379",
                "http://etcd.local:2379"
            ]
        );
    }

    #[test]
    fn zero_disables_lease_and_resync() {
        let c = config(&["--host-ip", "10.0.0.5", "--ttl", "0", "--resync", "0"]).unwrap();
        assert_eq!(c.lease_ttl, None);
        assert_eq!(c.resync, None);
    }

    #[test]
    fn labels_are_parsed() {
        let c = config(&[
            "--host-ip",
            "10.0.0.5",
            "--require-label",
            "a=1,b",
            "--require-label",
            "c",
        ])
        .unwrap();
        let keys: Vec<_> = c
            .selection
            .required_labels
            .iter()
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn every_error_names_flag_and_variable() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&[], "--host-ip", "HOST_IP"),
            (&["--host-ip", "not-an-ip"], "--host-ip", "HOST_IP"),
            (&["--host-ip", "0.0.0.0"], "--host-ip", "HOST_IP"),
            (
                &["--host-ip", "10.0.0.5", "--etcd-endpoints", "http://"],
                "--etcd-endpoints",
                "ETCD_ENDPOINT",
            ),
            (
                &["--host-ip", "10.0.0.5", "--etcd-endpoints", "ftp://x:1"],
                "--etcd-endpoints",
                "ETCD_ENDPOINT",
            ),
            (
                &["--host-ip", "10.0.0.5", "--etcd-endpoints", "host:notaport"],
                "--etcd-endpoints",
                "ETCD_ENDPOINT",
            ),
            (
                &["--host-ip", "10.0.0.5", "--etcd-endpoints", "host:70000"],
                "--etcd-endpoints",
                "ETCD_ENDPOINT",
            ),
            (
                &["--host-ip", "10.0.0.5", "--etcd-endpoints", ","],
                "--etcd-endpoints",
                "ETCD_ENDPOINT",
            ),
            (
                &["--host-ip", "10.0.0.5", "--ttl", "abc"],
                "--ttl",
                "REGISTER_TTL",
            ),
            (
                &["--host-ip", "10.0.0.5", "--ttl", "-1"],
                "--ttl",
                "REGISTER_TTL",
            ),
            (
                &["--host-ip", "10.0.0.5", "--resync", "1.5"],
                "--resync",
                "REGISTER_RESYNC",
            ),
            (
                &[
                    "--host-ip",
                    "10.0.0.5",
                    "--docker-host",
                    "/var/run/docker.sock",
                ],
                "--docker-host",
                "DOCKER_HOST",
            ),
            (
                &["--host-ip", "10.0.0.5", "--require-label", "=x"],
                "--require-label",
                "REGISTER_REQUIRE_LABELS",
            ),
        ];
        for (args, flag, env) in cases {
            let problem = problem_of(args);
            assert!(
                problem.contains(flag) && problem.contains(env),
                "{args:?}: {problem}"
            );
            assert!(!problem.contains('\n'), "{args:?}: {problem}");
        }
    }
}
