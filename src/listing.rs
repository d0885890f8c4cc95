//! Pure: what `docker-etcd-register list` shows. Turns the keys and values
//! read from etcd, one at a time, into one row per published binding,
//! filters them by host and image, and renders them as a table or as JSON.

use std::fmt::Write as _;

use serde::Serialize;
use tracing::warn;

use std::net::IpAddr;

use crate::image;
use crate::record::{name, offerable, Endpoint, Name, RecordKey};

/// One published binding of one registered container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The key's host segment: the `--host-ip` of the agent that wrote it.
    pub host: String,
    /// The key's service segment, as the agent wrote it (`/` as `::`): the
    /// `docker-etcd-register.service` label, else the image.
    pub service: String,
    /// The record's image (`/` as `::`), whatever the service.
    pub image: String,
    /// The key's container segment, the full id.
    pub container: String,
    /// The binding's address, as load balancers use it.
    pub ip: String,
    /// The binding's port on the host.
    pub public_port: String,
    /// The container's port it forwards to.
    pub private_port: String,
    /// `tcp`, `udp` or `sctp`.
    pub port_type: String,
    /// The record's key, for `etcdctl` and scripts.
    pub key: String,
}

/// A key under the root that is not a record this agent writes (say, one an
/// operator put there by hand); `list` names it instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The key, so that the operator can look at it.
    pub key: String,
    /// Why it is no record.
    pub problem: &'static str,
}

/// Which rows to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub host: Option<String>,
    /// The image, in any familiar form (`list --image`).
    pub image: Option<String>,
    /// The services, exactly as their labels name them (`list --service`,
    /// `render --service`, repeatable): any of them; none means every one.
    pub services: Vec<String>,
}

impl Filter {
    fn admits_host(&self, host: &str) -> bool {
        self.host.as_deref().is_none_or(|wanted| wanted == host)
    }

    fn admits_service(&self, service_segment: &str) -> bool {
        self.services.is_empty()
            || self
                .services
                .iter()
                .any(|wanted| wanted.trim().replace('/', "::") == service_segment)
    }

    fn admits_image(&self, image_segment: &str) -> bool {
        self.image
            .as_deref()
            .is_none_or(|wanted| image::segment_matches(image_segment, wanted))
    }
}

/// How many keys that are no records [`Rows`] names; the others are only
/// counted, so that a root full of foreign keys costs no memory.
const NAMED_UNREADABLE: usize = 10;

/// The keys under the root that are no records: the first few by name, and
/// how many there are in all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unreadables {
    /// The first [`NAMED_UNREADABLE`] of them, in key order.
    pub named: Vec<Unreadable>,
    /// All of them, named or not.
    pub count: usize,
}

impl Unreadables {
    fn add(&mut self, unreadable: Unreadable) {
        if self.named.len() < NAMED_UNREADABLE {
            self.named.push(unreadable);
        }
        self.count += 1;
    }
}

/// The rows of the records under a root (`/registered/`, with the trailing
/// `/`) that a filter admits, built one key-value at a time as the pages of
/// a read arrive: it keeps the rows it will print and nothing else.
pub struct Rows<'a> {
    /// Stripped from every key to find its host, image and container.
    root: &'a str,
    /// Decides which records become rows.
    filter: &'a Filter,
    /// The rows so far, in the order the keys came.
    rows: Vec<Row>,
    /// The keys so far that are no records.
    unreadable: Unreadables,
}

impl<'a> Rows<'a> {
    pub fn new(root: &'a str, filter: &'a Filter) -> Self {
        Self {
            root,
            filter,
            rows: Vec::new(),
            unreadable: Unreadables::default(),
        }
    }

    /// Takes one key and its value.
    pub fn add(&mut self, key: &str, value: &[u8]) {
        let unreadable_because = |problem| Unreadable {
            key: key.to_owned(),
            problem,
        };
        let host = key
            .strip_prefix(self.root)
            .unwrap_or(key)
            .split('/')
            .next()
            .unwrap_or_default();
        if !self.filter.admits_host(host) {
            return;
        }
        let Some(record) = RecordKey::parse(self.root, key) else {
            self.unreadable.add(unreadable_because(
                "not {prefix}/{host}/{image}/{container}",
            ));
            return;
        };
        if !self.filter.admits_service(record.service) {
            return;
        }
        if let Err(problem) = check_key(&record) {
            self.unreadable.add(unreadable_because(problem));
            return;
        }
        let Ok(endpoints) = Endpoint::decode(value) else {
            self.unreadable.add(unreadable_because(
                "its value is not a JSON array of bindings",
            ));
            return;
        };
        if let Some(problem) = endpoints
            .iter()
            .find_map(|e| check_endpoint(&record, e).err())
        {
            self.unreadable.add(unreadable_because(problem));
            return;
        }
        let admitted = endpoints
            .into_iter()
            .filter(|e| self.filter.admits_image(&e.image));
        self.rows.extend(admitted.map(|e| Row {
            host: record.host.to_owned(),
            service: record.service.to_owned(),
            image: e.image.into_owned(),
            container: record.container.to_owned(),
            ip: e.ip.into_owned(),
            public_port: e.public_port.into_owned(),
            private_port: e.private_port.into_owned(),
            port_type: e.port_type.into_owned(),
            key: key.to_owned(),
        }));
    }

    /// The rows sorted by host, service, container, then as the record orders
    /// its bindings (etcd's key order differs where one segment extends
    /// another: `app:1/` sorts after `app:1.2/`); and the keys that are no
    /// records.
    pub fn finish(self) -> (Vec<Row>, Unreadables) {
        let mut rows = self.rows;
        // Stable: the bindings of one record keep the record's own order.
        rows.sort_by(|a, b| {
            (&a.host, &a.service, &a.container).cmp(&(&b.host, &b.service, &b.container))
        });
        (rows, self.unreadable)
    }
}

/// Whether a key's segments are what an agent writes (README "Trust
/// boundary"): whoever can write under the root can write anything, and
/// every consumer's configuration is made of these values.
fn check_key(record: &RecordKey) -> Result<(), &'static str> {
    if record.host.parse::<IpAddr>().is_err() {
        return Err("its host segment is not an IP address");
    }
    if Name::parse(record.service).is_err() {
        return Err("its service segment is not a service name");
    }
    if !name::is_container_id(record.container) {
        return Err("its container segment is not a container id");
    }
    Ok(())
}

/// Whether one binding of a record's value is what an agent writes.
fn check_endpoint(record: &RecordKey, endpoint: &Endpoint) -> Result<(), &'static str> {
    if endpoint.container != record.container {
        return Err("a binding names another container than its key");
    }
    if Name::parse(&endpoint.image).is_err() {
        return Err("a binding's image is not an image name");
    }
    let Ok(ip) = endpoint.ip.parse::<IpAddr>() else {
        return Err("a binding's ip is not an IP address");
    };
    if !record.host.parse().is_ok_and(|host| offerable(ip, host)) {
        return Err("a binding's ip is loopback, unspecified or multicast");
    }
    if name::parse_port(&endpoint.public_port).is_none()
        || name::parse_port(&endpoint.private_port).is_none()
    {
        return Err("a binding's port is not a port");
    }
    if !name::is_protocol(&endpoint.port_type) {
        return Err("a binding's port_type is not tcp, udp or sctp");
    }
    Ok(())
}

/// WARNs naming the keys that are no records (the first few, then how many
/// more). A key is anyone's text: it is logged quoted and escaped, so that it
/// cannot end the line or send escape sequences to a terminal.
pub fn warn_unreadable(unreadable: &Unreadables) {
    for skipped in &unreadable.named {
        warn!(
            key = ?skipped.key,
            problem = skipped.problem,
            "not a record; skipped"
        );
    }
    if unreadable.count > unreadable.named.len() {
        warn!(
            more = unreadable.count - unreadable.named.len(),
            total = unreadable.count,
            "more keys that are not records; skipped"
        );
    }
}

/// Length of a container id in the table, as `docker ps` shows it.
const SHORT_ID: usize = 12;

/// A table with a header line, columns aligned; `(none)` when empty.
pub fn table(rows: &[Row]) -> String {
    const HEADER: [&str; 6] = ["HOST", "SERVICE", "IMAGE", "CONTAINER", "IP", "PORT"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            [
                row.host.clone(),
                row.service.clone(),
                row.image.clone(),
                row.container.chars().take(SHORT_ID).collect(),
                row.ip.clone(),
                format!(
                    "{} -> {}/{}",
                    row.public_port, row.private_port, row.port_type
                ),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header = HEADER.map(str::to_owned);
    for line in std::iter::once(&header).chain(&cells) {
        let mut out = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    }
    if rows.is_empty() {
        text.push_str("(none)\n");
    }
    text
}

/// The rows as one compact JSON array (one line).
pub fn json(rows: &[Row]) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests;
