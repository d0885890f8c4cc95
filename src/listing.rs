//! Pure: what `docker-etcd-register list` shows. Turns the keys and values
//! read from etcd, one at a time, into one row per published binding,
//! filters them by host and image, and renders them as a table or as JSON.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;
use tracing::warn;

use crate::image;
use crate::record::field::address_as_text;
use crate::record::{ContainerId, Name, PortNumber, Protocol, StoredBinding};

/// One published binding of one registered container, parsed (docs/security.md
/// "Trust boundary"): nothing in it can be other than what an agent writes.
/// Borrowed from the index that holds the record, so that listing or
/// rendering a hundred thousand records copies none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Row<'a> {
    /// The key's host segment: the `--host-ip` of the agent that wrote it.
    #[serde(serialize_with = "address_as_text")]
    pub host: IpAddr,
    /// The key's service segment, as the agent wrote it (`/` as `::`): the
    /// `docker-etcd-register.service` label, else the image.
    pub service: &'a Name,
    /// The record's image (`/` as `::`), whatever the service.
    pub image: &'a Name,
    /// The key's container segment, the full id.
    pub container: &'a ContainerId,
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
    pub key: &'a str,
}

impl<'a> Row<'a> {
    /// The row of one binding of the record at (host, service, container,
    /// key).
    pub fn of(
        (host, service, container, key): (IpAddr, &'a Name, &'a ContainerId, &'a str),
        binding: &'a StoredBinding,
    ) -> Self {
        Row {
            host,
            service,
            image: &binding.image,
            container,
            ip: binding.ip,
            public_port: binding.public_port,
            private_port: binding.private_port,
            port_type: binding.protocol,
            key,
        }
    }
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
    pub(crate) fn admits_host(&self, host_segment: &str) -> bool {
        self.host.is_none_or(|wanted| {
            host_segment
                .parse::<IpAddr>()
                .is_ok_and(|host| host.to_canonical() == wanted.to_canonical())
        })
    }

    pub(crate) fn admits_service(&self, service_segment: &str) -> bool {
        self.services.is_empty()
            || self
                .services
                .iter()
                .any(|wanted| wanted.trim().replace('/', "::") == service_segment)
    }

    pub(crate) fn admits_image(&self, image: &Name) -> bool {
        self.image
            .as_deref()
            .is_none_or(|wanted| image::segment_matches(image.as_str(), wanted))
    }
}

/// How many keys that are no records [`Rows`] names; the others are only
/// counted, so that a root full of foreign keys costs no memory.
pub(crate) const NAMED_UNREADABLE: usize = 10;

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
    /// Counts one more, named if it is among the first few.
    pub fn add(&mut self, unreadable: Unreadable) {
        if self.named.len() < NAMED_UNREADABLE {
            self.named.push(unreadable);
        }
        self.count += 1;
    }
}

/// WARNs naming the keys that are no records (the first few, then how many
/// more). A key is anyone's text: it is logged quoted and escaped, so that it
/// cannot end the line or send escape sequences to a terminal.
pub fn warn_unreadable(unreadable: &Unreadables) {
    for skipped in &unreadable.named {
        warn!(
            key = ?shown(&skipped.key),
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

/// How much of a key a log line shows: a key can be as long as etcd's
/// largest request (1.5 MiB by default).
const SHOWN_KEY_CHARS: usize = 200;

/// `key`, cut after [`SHOWN_KEY_CHARS`] characters, saying how long it was.
fn shown(key: &str) -> std::borrow::Cow<'_, str> {
    match key.char_indices().nth(SHOWN_KEY_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes)", &key[..cut], key.len()).into(),
        None => key.into(),
    }
}

/// A table with a header line, columns aligned; `(none)` when empty.
pub fn table<'a>(rows: impl IntoIterator<Item = Row<'a>>) -> String {
    const HEADER: [&str; 6] = ["HOST", "SERVICE", "IMAGE", "CONTAINER", "IP", "PORT"];
    let cells: Vec<[String; 6]> = rows
        .into_iter()
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
    if cells.is_empty() {
        text.push_str("(none)\n");
    }
    text
}

/// The rows as one compact JSON array (one line).
pub fn json<'a>(rows: impl IntoIterator<Item = Row<'a>>) -> String {
    let mut out = JsonRows::new(Vec::new());
    for row in rows {
        out.row(&row);
    }
    String::from_utf8(out.finish().unwrap_or_default()).unwrap_or_else(|_| "[]".to_owned())
}

/// One compact JSON array of rows written as they come, so that printing a
/// million rows holds none of them: `[`, the rows separated by `,`, `]`.
pub struct JsonRows<W: std::io::Write> {
    /// Where the text goes.
    out: W,
    /// Whether a row was written (the next one needs a `,`).
    any: bool,
    /// The first write that failed: the rest are not attempted.
    failed: Option<std::io::Error>,
}

impl<W: std::io::Write> JsonRows<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            any: false,
            failed: None,
        }
    }

    pub fn row(&mut self, row: &Row<'_>) {
        if self.failed.is_some() {
            return;
        }
        let open = if std::mem::replace(&mut self.any, true) {
            b","
        } else {
            b"["
        };
        let written = self
            .out
            .write_all(open)
            .and_then(|()| serde_json::to_writer(&mut self.out, row).map_err(Into::into));
        if let Err(error) = written {
            self.failed = Some(error);
        }
    }

    /// Closes the array (`[]` when no row came) and gives the writer back,
    /// or the first failed write.
    pub fn finish(mut self) -> std::io::Result<W> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let close: &[u8] = if self.any { b"]\n" } else { b"[]\n" };
        self.out.write_all(close)?;
        Ok(self.out)
    }
}

mod index;

pub use index::{admit, Admission, Index, Update};

#[cfg(test)]
mod tests;
