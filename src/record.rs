//! From container facts to the record the agent wants in etcd (docs/records.md: "What is written").
//!
//! Pure: the same container always yields byte-identical keys and values, so
//! an unchanged container is never rewritten.

use std::cmp::Ordering;
use std::net::IpAddr;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::container::{Container, PortBinding, Selection, Verdict, Withheld};
use crate::image;
use address::AddressMode;

pub mod address;
pub mod field;
pub mod name;
pub mod stored;

pub use field::{ContainerId, PortNumber, Protocol};
pub use name::{Name, NameError};
pub use stored::{StoredBinding, StoredKey, StoredRecord};

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

    /// The host segment of any key under `root`, record or not (what a
    /// host filter judges before the key is known to be a record): what
    /// follows `root` up to the next `/` (all of it when there is none). A
    /// key not under `root` is taken whole, so its host is what precedes
    /// its first `/`.
    pub fn host_of(root: &str, key: &'a str) -> &'a str {
        let rest = key.strip_prefix(root).unwrap_or(key);
        rest.split_once('/').map_or(rest, |(host, _)| host)
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
    match (record_with(container, prefix, selection), verdict) {
        (None, _) => Desired::Nothing,
        (Some(_), Verdict::Withheld(reason)) => Desired::Withheld(reason),
        (Some(record), _) => Desired::Registered(record),
    }
}

/// The record a container should have, or `None` when it publishes nothing
/// that the record can carry (see [`rejections`] for what it cannot).
/// Whether the container is selected at all is [`desired`]'s question.
pub fn desired_record(container: &Container, prefix: &HostPrefix) -> Option<Record> {
    record_in(container, prefix, &AddressMode::Published)
}

/// The record a container should have in the address mode `mode`, without
/// an IPv6 host address.
pub fn record_in(container: &Container, prefix: &HostPrefix, mode: &AddressMode) -> Option<Record> {
    let selection = Selection {
        address_mode: mode.clone(),
        ..Selection::default()
    };
    record_with(container, prefix, &selection)
}

/// The record a container should have under `selection`'s address mode
/// (as its labels narrow it; see `AddressMode::for_container`) and host
/// addresses.
pub fn record_with(
    container: &Container,
    prefix: &HostPrefix,
    selection: &Selection,
) -> Option<Record> {
    let (mode, _) = selection.address_mode.for_container(container);
    let hosts = Hosts::of(prefix, selection);
    let (segment, value) = unlimited_record(container, &mode, hosts)?;
    (value.len() <= MAX_RECORD_BYTES).then(|| Record {
        key: prefix.key(segment.as_str(), &container.id),
        value,
    })
}

/// The key's service segment and the value of `container`'s record, of any
/// size.
fn unlimited_record(
    container: &Container,
    mode: &AddressMode,
    hosts: Hosts,
) -> Option<(Name, String)> {
    let image = image_name(container).ok()?;
    let mut endpoints: Vec<Endpoint> = match mode {
        AddressMode::Published => container
            .bindings
            .iter()
            .filter_map(|binding| published(binding, hosts).ok().flatten())
            .map(|published| Endpoint {
                container: Cow::Borrowed(&container.id),
                image: Cow::Borrowed(image.as_str()),
                ip: Cow::Owned(published.ip),
                public_port: Cow::Borrowed(&published.binding.host_port),
                private_port: Cow::Borrowed(&published.binding.private_port),
                port_type: Cow::Borrowed(&published.binding.protocol),
            })
            .collect(),
        // The container's own address serves its own ports: the public
        // port is the container port.
        AddressMode::Network(choice) => {
            address::network_endpoints(container, choice, hosts.v4, hosts.v6)
                .into_iter()
                .map(|(ip, port)| Endpoint {
                    container: Cow::Borrowed(&container.id),
                    image: Cow::Borrowed(image.as_str()),
                    ip: Cow::Owned(ip.to_string()),
                    public_port: Cow::Owned(port.port.to_string()),
                    private_port: Cow::Owned(port.port.to_string()),
                    port_type: Cow::Borrowed(port.protocol.as_str()),
                })
                .collect()
        }
    };
    if endpoints.is_empty() {
        return None;
    }
    endpoints.sort_by(compare_endpoints);
    endpoints.dedup();
    let value = Endpoint::encode(&endpoints);
    // The key names the service (docs/records.md: "Service names"), the value still
    // the real image.
    let segment = container.service().ok().flatten().unwrap_or(image);
    Some((segment, value))
}

/// The largest record value the agent writes: far below etcd's default
/// request limit (1.5 MiB), so that one container's owner, publishing a huge
/// port range, cannot make its host's writes fail; room for about 2,500
/// bindings.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

/// The image segment of a container (docs/records.md: "What is written"), in the
/// name grammar.
fn image_name(container: &Container) -> Result<Name, NameError> {
    Name::parse(&image::key_segment(
        &container.configured_image,
        &container.image_id,
    ))
}

/// The host's addresses a wildcard binding is reached on: `--host-ip`, and
/// `--host-ip6` for `::` if set.
#[derive(Debug, Clone, Copy)]
struct Hosts {
    v4: IpAddr,
    v6: Option<IpAddr>,
}

impl Hosts {
    /// The host's addresses: `--host-ip` (the prefix's) and `--host-ip6`.
    fn of(prefix: &HostPrefix, selection: &Selection) -> Hosts {
        Hosts {
            v4: prefix.host_ip(),
            v6: selection.host_ip6.map(IpAddr::V6),
        }
    }
}

/// A binding that the record carries, with the address it is reached on.
struct Published<'a> {
    binding: &'a PortBinding,
    ip: String,
}

/// Whether `binding` goes into the record: `Ok(None)` when it is not
/// published (no host port) or only on loopback while the host's address is
/// not (docs/security.md "Trust boundary": another host would reach its own loopback);
/// `Err` when the engine reported something that is no port binding.
fn published(binding: &PortBinding, hosts: Hosts) -> Result<Option<Published<'_>>, String> {
    let host_ip = hosts.v4;
    if binding.host_port.is_empty() {
        return Ok(None);
    }
    let checked = [
        (PortNumber::parse(&binding.host_port).is_some(), "host port"),
        (
            PortNumber::parse(&binding.private_port).is_some(),
            "container port",
        ),
        (Protocol::parse(&binding.protocol).is_some(), "protocol"),
    ];
    if let Some((_, what)) = checked.iter().find(|(ok, _)| !ok) {
        return Err(format!("its {what} is not one"));
    }
    // A wildcard (empty, `0.0.0.0`, `::`) is reached on the host's address.
    let ip = if binding.host_ip.is_empty() {
        host_ip
    } else {
        let ip: IpAddr = binding
            .host_ip
            .parse()
            .map_err(|_| "its host address is not an IP address".to_owned())?;
        if ip.is_ipv6() && ip.is_unspecified() && hosts.v6.is_some() {
            hosts.v6.unwrap_or(host_ip)
        } else if ip.to_canonical().is_unspecified() {
            host_ip
        } else if offerable(ip, host_ip) {
            // One address, one spelling: `::ffff:10.0.0.1` is `10.0.0.1`.
            ip.to_canonical()
        } else {
            return Ok(None);
        }
    };
    Ok(Some(Published {
        binding,
        ip: ip.to_string(),
    }))
}

/// Whether a binding on `ip` can be offered as reached through `host`
/// (docs/security.md "Trust boundary"): not loopback unless the host is loopback
/// (another host would reach its own), never the unspecified, a multicast,
/// the broadcast, a link-local (`169.254.169.254` is a cloud's metadata
/// service on every host) or a deprecated IPv4-compatible (`::127.0.0.1`)
/// address; IPv4 written as IPv6 (`::ffff:127.0.0.1`) is judged as IPv4.
pub fn offerable(ip: IpAddr, host: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let nowhere = match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            let ipv4_compatible = v6.segments()[..6] == [0; 6] && !v6.is_loopback();
            (first & 0xffc0) == 0xfe80 || ipv4_compatible
        }
    };
    !(nowhere
        || ip.is_unspecified()
        || ip.is_multicast()
        || (ip.is_loopback() && !host.to_canonical().is_loopback()))
}

/// Something a container's owner (or its engine) gave that its record
/// cannot carry, and what the agent does instead; for a WARN and a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Which input: `service_label` (`docker-etcd-register.service`),
    /// `image`, `address_label` (`docker-etcd-register.address-mode`,
    /// `docker-etcd-register.network`), `port` (one binding) or `ports`
    /// (all of them).
    pub field: &'static str,
    /// The offending value, quoted and escaped, at most 80 characters of it.
    pub value: String,
    /// Why, and what is done instead.
    pub reason: String,
}

/// Everything of `container` that its record cannot carry (docs/security.md "Trust
/// boundary"): a service label outside the name grammar (the image is the
/// service), an image outside it, bindings that are no port bindings, a
/// record over [`MAX_RECORD_BYTES`] (no record).
pub fn rejections(
    container: &Container,
    prefix: &HostPrefix,
    selection: &Selection,
) -> Vec<Rejection> {
    let hosts = Hosts::of(prefix, selection);
    let mut found = Vec::new();
    let mut reject = |field, value: &str, reason: String| {
        found.push(Rejection {
            field,
            value: quoted(value),
            reason,
        })
    };
    if let (Err(error), Some(label)) = (container.service(), container.service_label()) {
        reject(
            "service_label",
            label,
            format!("{error}: not a service name; the image names the service"),
        );
    }
    if let Err(error) = image_name(container) {
        reject(
            "image",
            &container.configured_image,
            format!("{error}: not an image name; no record"),
        );
    }
    let (mode, refused) = selection.address_mode.for_container(container);
    if let Some(why) = refused {
        let labels = [address::ADDRESS_MODE_LABEL, address::NETWORK_LABEL]
            .iter()
            .filter_map(|label| Some(format!("{label}={}", container.labels.get(*label)?)))
            .collect::<Vec<_>>()
            .join(" ");
        reject("address_label", &labels, why);
    }
    for binding in &container.bindings {
        if let Err(error) = published(binding, hosts) {
            let PortBinding {
                private_port,
                protocol,
                host_ip,
                host_port,
            } = binding;
            let text = format!("{host_ip}:{host_port}->{private_port}/{protocol}");
            reject("port", &text, format!("{error}; binding skipped"));
        }
    }
    if let AddressMode::Network(choice) = &mode {
        for address in address::chosen_addresses(container, choice, hosts.v4, hosts.v6) {
            if !offerable(address, hosts.v4) {
                reject(
                    "address",
                    &address.to_string(),
                    "no other host reaches it (loopback, link-local, multicast); skipped".into(),
                );
            }
        }
    }
    if let Some((_, value)) = unlimited_record(container, &mode, hosts) {
        if value.len() > MAX_RECORD_BYTES {
            // How many ports the mode reads: bindings, or exposed ports.
            let ports = match &mode {
                AddressMode::Published => container.bindings.len(),
                AddressMode::Network(_) => container.exposed.len(),
            };
            reject(
                "ports",
                &ports.to_string(),
                format!(
                    "a record of {} bytes or more, beyond {MAX_RECORD_BYTES}; no record",
                    value.len()
                ),
            );
        }
    }
    found
}

/// `text` for a log line: quoted, escaped, cut at 80 characters.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!("{cut:?}{more}")
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
