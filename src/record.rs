//! From container facts to the record the agent wants in etcd (README: "What is written").
//!
//! Pure: the same container always yields byte-identical keys and values, so
//! an unchanged container is never rewritten.

use std::cmp::Ordering;
use std::net::IpAddr;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::container::{Container, PortBinding, Selection, Verdict, Withheld};
use crate::image;

/// A key and the exact bytes the agent wants stored under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: String,
}

/// `{prefix}/{host_ip}/`: the only part of etcd this agent reads for
/// deletion or writes. The trailing `/` keeps `10.0.0.1` from matching
/// `10.0.0.10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPrefix {
    host_ip: IpAddr,
    /// The host segment of our keys, `host_ip` as text.
    host: String,
    /// The root of all keys, `/registered/`.
    root: String,
    /// `{root}{host}/`.
    path: String,
}

impl HostPrefix {
    /// `prefix` is the root of all keys (`/registered`); a missing leading
    /// `/` is added and trailing ones are dropped.
    pub fn new(prefix: &str, host_ip: IpAddr) -> Self {
        let root = root_path(prefix);
        let host = host_ip.to_string();
        let path = format!("{root}{host}/");
        Self {
            host_ip,
            host,
            root,
            path,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.path
    }

    pub fn host_ip(&self) -> IpAddr {
        self.host_ip
    }

    pub fn contains(&self, key: &str) -> bool {
        key.starts_with(&self.path)
    }

    /// One of this host's record keys, split into its segments; `None` for
    /// anything else under the prefix (junk someone wrote by hand).
    pub fn parse<'k>(&'k self, key: &'k str) -> Option<RecordKey<'k>> {
        RecordKey::parse(&self.root, key).filter(|k| k.host == self.host)
    }

    fn key(&self, service: &str, container_id: &str) -> String {
        RecordKey {
            root: &self.root,
            host: &self.host,
            service,
            container: container_id,
        }
        .to_string()
    }
}

/// The root of all keys, normalised: a leading `/`, no trailing ones, then
/// exactly one (`registered/` → `/registered/`, `/` → `/`).
pub fn root_path(prefix: &str) -> String {
    let root = prefix.trim_end_matches('/');
    let root = root.strip_prefix('/').unwrap_or(root);
    if root.is_empty() {
        "/".to_owned()
    } else {
        format!("/{root}/")
    }
}

/// A record's key, `{root}{host}/{service}/{container}`: the one definition of
/// the key layout, written by the agent and read by `list`, the tests and
/// the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey<'a> {
    /// The root of all keys, with its trailing `/` (`/registered/`).
    pub root: &'a str,
    /// The `--host-ip` of the agent that wrote it.
    pub host: &'a str,
    /// The service: the `docker-etcd-register.service` label, else the
    /// image (`/` as `::`, an image always tagged). The original layout's
    /// `{image}` segment.
    pub service: &'a str,
    /// The full container id.
    pub container: &'a str,
}

impl<'a> RecordKey<'a> {
    /// Splits a key under `root` (with its trailing `/`) into its segments;
    /// `None` when it is not exactly three segments below the root.
    pub fn parse(root: &'a str, key: &'a str) -> Option<Self> {
        let mut segments = key.strip_prefix(root)?.split('/');
        let (host, service, container) = (segments.next()?, segments.next()?, segments.next()?);
        if segments.next().is_some() || [host, service, container].contains(&"") {
            return None;
        }
        Some(Self {
            root,
            host,
            service,
            container,
        })
    }
}

impl std::fmt::Display for RecordKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            root,
            host,
            service,
            container,
        } = self;
        write!(f, "{root}{host}/{service}/{container}")
    }
}

/// One object of a record's value, a JSON array of them: every field a
/// string, in this order (the wire order). The one definition of the value,
/// serialized by the agent and read by `list`, the tests and the benchmark;
/// borrowed where it can be, so that building and reading records copies
/// little.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint<'a> {
    #[serde(borrow)]
    pub container: Cow<'a, str>,
    #[serde(borrow)]
    pub image: Cow<'a, str>,
    /// The binding's address; a wildcard binding is the host's `--host-ip`.
    #[serde(borrow)]
    pub ip: Cow<'a, str>,
    #[serde(borrow)]
    pub public_port: Cow<'a, str>,
    #[serde(borrow)]
    pub private_port: Cow<'a, str>,
    /// `tcp`, `udp` or `sctp`.
    #[serde(borrow)]
    pub port_type: Cow<'a, str>,
}

impl<'a> Endpoint<'a> {
    /// The exact bytes of a record's value: compact JSON.
    pub fn encode(endpoints: &[Endpoint]) -> String {
        serde_json::to_string(endpoints).unwrap_or_default()
    }

    /// A record's value, read back.
    pub fn decode(value: &'a [u8]) -> Result<Vec<Endpoint<'a>>, serde_json::Error> {
        serde_json::from_slice(value)
    }
}

/// What the agent wants in etcd for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    Registered(Record),
    /// It would be registered but for its health.
    Withheld(Withheld),
    /// No record: not selected, or nothing published.
    Nothing,
}

/// Applies the selection (running, labels, ignore label, health), then builds
/// the record.
pub fn desired(container: &Container, selection: &Selection, prefix: &HostPrefix) -> Desired {
    let verdict = container.verdict(selection);
    if verdict == Verdict::NotSelected {
        return Desired::Nothing;
    }
    match (desired_record(container, prefix), verdict) {
        (None, _) => Desired::Nothing,
        (Some(_), Verdict::Withheld(reason)) => Desired::Withheld(reason),
        (Some(record), _) => Desired::Registered(record),
    }
}

/// The record a container should have, or `None` when it publishes nothing.
/// Whether the container is selected at all is [`desired`]'s question.
pub fn desired_record(container: &Container, prefix: &HostPrefix) -> Option<Record> {
    let image = image::key_segment(&container.configured_image, &container.image_id);
    // The key names the service (README: "Service names"), the value still
    // the real image.
    let service = container.service_segment();
    let segment = service.as_deref().unwrap_or(&image);
    let mut endpoints: Vec<Endpoint> = container
        .bindings
        .iter()
        .filter(|b| !b.host_port.is_empty())
        .map(|b| endpoint(container, &image, b, prefix.host_ip()))
        .collect();
    if endpoints.is_empty() {
        return None;
    }
    endpoints.sort_by(compare_endpoints);
    endpoints.dedup();
    Some(Record {
        key: prefix.key(segment, &container.id),
        value: Endpoint::encode(&endpoints),
    })
}

fn endpoint<'a>(
    container: &'a Container,
    image: &'a str,
    binding: &'a PortBinding,
    host_ip: IpAddr,
) -> Endpoint<'a> {
    Endpoint {
        container: Cow::Borrowed(&container.id),
        image: Cow::Borrowed(image),
        ip: Cow::Owned(published_ip(&binding.host_ip, host_ip)),
        public_port: Cow::Borrowed(&binding.host_port),
        private_port: Cow::Borrowed(&binding.private_port),
        port_type: Cow::Borrowed(&binding.protocol),
    }
}

/// A wildcard binding is reachable on the host's own address.
fn published_ip(binding_ip: &str, host_ip: IpAddr) -> String {
    let is_wildcard = binding_ip.is_empty()
        || binding_ip
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
    if is_wildcard {
        host_ip.to_string()
    } else {
        binding_ip.to_owned()
    }
}

fn compare_endpoints(a: &Endpoint, b: &Endpoint) -> Ordering {
    SortKey::of(&a.private_port)
        .cmp(&SortKey::of(&b.private_port))
        .then_with(|| a.port_type.cmp(&b.port_type))
        .then_with(|| SortKey::of(&a.ip).cmp(&SortKey::of(&b.ip)))
        .then_with(|| SortKey::of(&a.public_port).cmp(&SortKey::of(&b.public_port)))
}

/// Numbers and addresses order by value, anything else after them as text.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'a> {
    Number(u64),
    Address(IpAddr),
    Text(&'a str),
}

impl<'a> SortKey<'a> {
    fn of(text: &'a str) -> Self {
        if let Ok(n) = text.parse() {
            SortKey::Number(n)
        } else if let Ok(ip) = text.parse() {
            SortKey::Address(ip)
        } else {
            SortKey::Text(text)
        }
    }
}

#[cfg(test)]
mod tests;
