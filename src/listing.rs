//! Pure: what `docker-etcd-register list` shows. Turns the keys and values
//! read from etcd, one at a time, into one row per published binding,
//! filters them by host and image, and renders them as a table or as JSON.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;
use tracing::warn;

use crate::image;
use crate::record::field::address_as_text;
use crate::record::{ContainerId, Name, PortNumber, Protocol, RecordKey, StoredRecord};

/// One published binding of one registered container, parsed (README
/// "Trust boundary"): nothing in it can be other than what an agent writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The key's host segment: the `--host-ip` of the agent that wrote it.
    #[serde(serialize_with = "address_as_text")]
    pub host: IpAddr,
    /// The key's service segment, as the agent wrote it (`/` as `::`): the
    /// `docker-etcd-register.service` label, else the image.
    pub service: Name,
    /// The record's image (`/` as `::`), whatever the service.
    pub image: Name,
    /// The key's container segment, the full id.
    pub container: ContainerId,
    /// The binding's address, as load balancers use it.
    #[serde(serialize_with = "address_as_text")]
    pub ip: IpAddr,
    /// The binding's port on the host.
    pub public_port: PortNumber,
    /// The container's port it forwards to.
    pub private_port: PortNumber,
    /// `tcp`, `udp` or `sctp`.
    pub port_type: Protocol,
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
    /// The host (`list --host`).
    pub host: Option<IpAddr>,
    /// The image, in any familiar form (`list --image`).
    pub image: Option<String>,
    /// The services, exactly as their labels name them (`list --service`,
    /// `render --service`, repeatable): any of them; none means every one.
    pub services: Vec<String>,
}

impl Filter {
    fn admits_host(&self, host_segment: &str) -> bool {
        self.host.is_none_or(|wanted| {
            host_segment
                .parse::<IpAddr>()
                .is_ok_and(|host| host.to_canonical() == wanted.to_canonical())
        })
    }

    fn admits_service(&self, service_segment: &str) -> bool {
        self.services.is_empty()
            || self
                .services
                .iter()
                .any(|wanted| wanted.trim().replace('/', "::") == service_segment)
    }

    fn admits_image(&self, image: &Name) -> bool {
        self.image
            .as_deref()
            .is_none_or(|wanted| image::segment_matches(image.as_str(), wanted))
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
        let stored = match StoredRecord::parse(&record, value) {
            Ok(stored) => stored,
            Err(problem) => return self.unreadable.add(unreadable_because(problem)),
        };
        let admitted = stored
            .bindings
            .into_iter()
            .filter(|b| self.filter.admits_image(&b.image));
        self.rows.extend(admitted.map(|b| Row {
            host: stored.host,
            service: stored.service.clone(),
            image: b.image,
            container: stored.container.clone(),
            ip: b.ip,
            public_port: b.public_port,
            private_port: b.private_port,
            port_type: b.protocol,
            key: key.to_owned(),
        }));
    }

    /// The rows sorted by host (by address: `10.0.0.2` before `10.0.0.10`),
    /// service, container, then as the record orders
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

/// A table with a header line, columns aligned; `(none)` when empty.
pub fn table(rows: &[Row]) -> String {
    const HEADER: [&str; 6] = ["HOST", "SERVICE", "IMAGE", "CONTAINER", "IP", "PORT"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            [
                row.host.to_string(),
                row.service.to_string(),
                row.image.to_string(),
                row.container.short().to_owned(),
                row.ip.to_string(),
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
