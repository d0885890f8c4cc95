//! Pure: what `docker-etcd-register list` shows. Turns the keys and values
//! read from etcd, one at a time, into one row per published binding,
//! filters them by host and image, and renders them as a table or as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::image;
use crate::record::{Endpoint, RecordKey};

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
    /// The service, exactly as its label names it (`list --service`).
    pub service: Option<String>,
}

impl Filter {
    fn admits_host(&self, host: &str) -> bool {
        self.host.as_deref().is_none_or(|wanted| wanted == host)
    }

    fn admits_service(&self, service_segment: &str) -> bool {
        self.service
            .as_deref()
            .is_none_or(|wanted| wanted.trim().replace('/', "::") == service_segment)
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
        let Ok(endpoints) = Endpoint::decode(value) else {
            self.unreadable.add(unreadable_because(
                "its value is not a JSON array of bindings",
            ));
            return;
        };
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
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaa0000000000000000000000000000000000000000000000000000";
    const B: &str = "bbbbbbbbbbbb0000000000000000000000000000000000000000000000000000";

    fn value(container: &str, image: &str, bindings: &[(&str, &str, &str, &str)]) -> String {
        let objects: Vec<String> = bindings
            .iter()
            .map(|(ip, public, private, proto)| {
                format!(
                    r#"{{"container":"{container}","image":"{image}","ip":"{ip}","public_port":"{public}","private_port":"{private}","port_type":"{proto}"}}"#
                )
            })
            .collect();
        format!("[{}]", objects.join(","))
    }

    fn store() -> Vec<(String, Vec<u8>)> {
        vec![
            (
                format!("/registered/10.0.0.2/nginx:1.25/{B}"),
                value(B, "nginx:1.25", &[("10.0.0.2", "8080", "80", "tcp")]).into_bytes(),
            ),
            (
                format!("/registered/10.0.0.1/busybox:latest/{A}"),
                value(
                    A,
                    "busybox:latest",
                    &[
                        ("10.0.0.1", "32768", "80", "tcp"),
                        ("127.0.0.1", "32769", "53", "udp"),
                    ],
                )
                .into_bytes(),
            ),
            ("/registered/10.0.0.1/stray".into(), b"x".to_vec()),
            (
                format!("/registered/10.0.0.3/busybox:latest/{A}"),
                b"not json".to_vec(),
            ),
        ]
    }

    fn rows_of<'a>(
        records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        filter: &Filter,
    ) -> (Vec<Row>, Unreadables) {
        let mut rows = Rows::new("/registered/", filter);
        for (key, value) in records {
            rows.add(key, value);
        }
        rows.finish()
    }

    fn listed(filter: &Filter) -> (Vec<Row>, Unreadables) {
        let store = store();
        rows_of(
            store.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            filter,
        )
    }

    #[test]
    fn one_row_per_binding_sorted_by_host_and_unreadable_keys_named() {
        let (rows, unreadable) = listed(&Filter::default());
        let summary: Vec<(&str, &str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.host.as_str(),
                    r.image.as_str(),
                    r.public_port.as_str(),
                    r.ip.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("10.0.0.1", "busybox:latest", "32768", "10.0.0.1"),
                ("10.0.0.1", "busybox:latest", "32769", "127.0.0.1"),
                ("10.0.0.2", "nginx:1.25", "8080", "10.0.0.2"),
            ]
        );
        assert_eq!(rows[0].container, A);
        assert_eq!(rows[1].port_type, "udp");
        assert_eq!(rows[2].key, format!("/registered/10.0.0.2/nginx:1.25/{B}"));
        assert_eq!(unreadable.count, 2);
        let keys: Vec<&str> = unreadable.named.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/registered/10.0.0.1/stray".to_string(),
                format!("/registered/10.0.0.3/busybox:latest/{A}")
            ]
        );
    }

    #[test]
    fn filters_by_host_and_image() {
        let by_host = Filter {
            host: Some("10.0.0.2".into()),
            image: None,
            service: None,
        };
        let (rows, unreadable) = listed(&by_host);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].host, "10.0.0.2");
        assert_eq!(unreadable.count, 0, "other hosts' keys are not looked at");

        let by_image = Filter {
            host: None,
            image: Some("docker.io/library/busybox".into()),
            service: None,
        };
        let (rows, _) = listed(&by_image);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.image == "busybox:latest"));

        let both = Filter {
            host: Some("10.0.0.2".into()),
            image: Some("busybox".into()),
            service: None,
        };
        assert!(listed(&both).0.is_empty());
    }

    #[test]
    fn a_host_ip_that_extends_another_is_not_that_host() {
        let store = [(
            format!("/registered/10.0.0.10/busybox:latest/{A}"),
            value(A, "busybox:latest", &[("10.0.0.10", "1", "2", "tcp")]),
        )];
        let filter = Filter {
            host: Some("10.0.0.1".into()),
            image: None,
            service: None,
        };
        let (rows, _) = rows_of(
            store.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
            &filter,
        );
        assert!(rows.is_empty());
    }

    #[test]
    fn only_the_first_keys_that_are_no_records_are_named() {
        let junk: Vec<String> = (0..25)
            .map(|i| format!("/registered/h/junk{i:02}"))
            .collect();
        let (rows, unreadable) = rows_of(
            junk.iter().map(|k| (k.as_str(), b"x".as_slice())),
            &Filter::default(),
        );
        assert!(rows.is_empty());
        assert_eq!(unreadable.count, 25);
        let named: Vec<&str> = unreadable.named.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(named, junk[..NAMED_UNREADABLE]);
    }

    #[test]
    fn rows_sort_by_segment_where_key_order_differs() {
        let [short, long] = ["app:1", "app:1.2"].map(|image| {
            (
                format!("/registered/h/{image}/{A}"),
                value(A, image, &[("h", "1", "2", "tcp")]),
            )
        });
        // etcd's order: `app:1.2/` before `app:1/`.
        let store = [&long, &short];
        let (rows, _) = rows_of(
            store.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
            &Filter::default(),
        );
        let images: Vec<&str> = rows.iter().map(|r| r.image.as_str()).collect();
        assert_eq!(images, ["app:1", "app:1.2"]);
    }

    #[test]
    fn table_is_aligned_with_short_ids_and_arrows() {
        let (rows, _) = listed(&Filter::default());
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "HOST      SERVICE         IMAGE           CONTAINER     IP         PORT",
                "10.0.0.1  busybox:latest  busybox:latest  aaaaaaaaaaaa  10.0.0.1   32768 -> 80/tcp",
                "10.0.0.1  busybox:latest  busybox:latest  aaaaaaaaaaaa  127.0.0.1  32769 -> 53/udp",
                "10.0.0.2  nginx:1.25      nginx:1.25      bbbbbbbbbbbb  10.0.0.2   8080 -> 80/tcp",
            ]
        );
        assert_eq!(
            table(&[]),
            "HOST  SERVICE  IMAGE  CONTAINER  IP  PORT\n(none)\n"
        );
    }

    #[test]
    fn json_is_one_line_with_every_field() {
        let (rows, _) = listed(&Filter {
            host: Some("10.0.0.2".into()),
            ..Filter::default()
        });
        assert_eq!(
            json(&rows),
            format!(
                r#"[{{"host":"10.0.0.2","service":"nginx:1.25","image":"nginx:1.25","container":"{B}","ip":"10.0.0.2","public_port":"8080","private_port":"80","port_type":"tcp","key":"/registered/10.0.0.2/nginx:1.25/{B}"}}]"#
            )
        );
        assert_eq!(json(&[]), "[]");
    }
}
