//! From container facts to the record the agent wants in etcd (SPEC §2).
//!
//! Pure: the same container always yields byte-identical keys and values, so
//! an unchanged container is never rewritten.

use std::cmp::Ordering;
use std::net::IpAddr;

use serde::Serialize;

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
    path: String,
}

impl HostPrefix {
    /// `prefix` is the root of all keys (`/registered`); a missing leading
    /// `/` is added and trailing ones are dropped.
    pub fn new(prefix: &str, host_ip: IpAddr) -> Self {
        let path = format!("{}{host_ip}/", root_path(prefix));
        Self { host_ip, path }
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

    fn key(&self, image: &str, container_id: &str) -> String {
        format!("{}{image}/{container_id}", self.path)
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

/// The container id a key under our prefix belongs to: its last segment.
pub fn container_id_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// One object of the value array; field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Endpoint<'a> {
    container: &'a str,
    image: &'a str,
    ip: String,
    public_port: &'a str,
    private_port: &'a str,
    port_type: &'a str,
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
    let value = serde_json::to_string(&endpoints).ok()?;
    Some(Record {
        key: prefix.key(&image, &container.id),
        value,
    })
}

fn endpoint<'a>(
    container: &'a Container,
    image: &'a str,
    binding: &'a PortBinding,
    host_ip: IpAddr,
) -> Endpoint<'a> {
    Endpoint {
        container: &container.id,
        image,
        ip: published_ip(&binding.host_ip, host_ip),
        public_port: &binding.host_port,
        private_port: &binding.private_port,
        port_type: &binding.protocol,
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
    SortKey::of(a.private_port)
        .cmp(&SortKey::of(b.private_port))
        .then_with(|| a.port_type.cmp(b.port_type))
        .then_with(|| SortKey::of(&a.ip).cmp(&SortKey::of(&b.ip)))
        .then_with(|| SortKey::of(a.public_port).cmp(&SortKey::of(b.public_port)))
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
mod tests {
    use super::*;

    const ID: &str = "ddd2d3a0758780a8d7ea792c79379d44ede446805c0e79034bee3ad6999e0fa7";
    const IMAGE_ID: &str =
        "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741";

    fn host() -> HostPrefix {
        HostPrefix::new("/registered", "10.100.100.100".parse().unwrap())
    }

    fn binding(private: &str, proto: &str, ip: &str, public: &str) -> PortBinding {
        PortBinding {
            private_port: private.into(),
            protocol: proto.into(),
            host_ip: ip.into(),
            host_port: public.into(),
        }
    }

    fn busybox(bindings: Vec<PortBinding>) -> Container {
        Container {
            id: ID.into(),
            configured_image: "busybox".into(),
            image_id: IMAGE_ID.into(),
            running: true,
            bindings,
            ..Container::default()
        }
    }

    #[test]
    fn the_original_readme_record() {
        let record = desired_record(
            &busybox(vec![binding("80", "tcp", "10.100.100.100", "49153")]),
            &host(),
        )
        .unwrap();
        assert_eq!(
            record.key,
            format!("/registered/10.100.100.100/busybox:latest/{ID}")
        );
        assert_eq!(
            record.value,
            format!(
                r#"[{{"container":"{ID}","image":"busybox:latest","ip":"10.100.100.100","public_port":"49153","private_port":"80","port_type":"tcp"}}]"#
            )
        );
    }

    #[test]
    fn wildcards_become_the_host_ip_and_collapse() {
        let record = desired_record(
            &busybox(vec![
                binding("80", "tcp", "0.0.0.0", "49153"),
                binding("80", "tcp", "::", "49153"),
                binding("80", "tcp", "", "49153"),
            ]),
            &host(),
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&record.value).unwrap();
        assert_eq!(value.as_array().unwrap().len(), 1);
        assert_eq!(value[0]["ip"], "10.100.100.100");
    }

    #[test]
    fn order_is_by_private_port_protocol_ip_public_port_numerically() {
        let shuffled = vec![
            binding("9000", "tcp", "0.0.0.0", "1"),
            binding("80", "udp", "0.0.0.0", "5"),
            binding("80", "tcp", "127.0.0.1", "10"),
            binding("80", "tcp", "127.0.0.1", "9"),
            binding("80", "tcp", "10.0.0.2", "7"),
            binding("443", "tcp", "0.0.0.0", "3"),
        ];
        let mut reversed = shuffled.clone();
        reversed.reverse();
        let a = desired_record(&busybox(shuffled), &host()).unwrap();
        let b = desired_record(&busybox(reversed), &host()).unwrap();
        assert_eq!(a, b);
        let value: serde_json::Value = serde_json::from_str(&a.value).unwrap();
        let order: Vec<(String, String, String, String)> = value
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let field = |name: &str| e[name].as_str().unwrap().to_string();
                (
                    field("private_port"),
                    field("port_type"),
                    field("ip"),
                    field("public_port"),
                )
            })
            .collect();
        let expected = [
            ("80", "tcp", "10.0.0.2", "7"),
            ("80", "tcp", "127.0.0.1", "9"),
            ("80", "tcp", "127.0.0.1", "10"),
            ("80", "udp", "10.100.100.100", "5"),
            ("443", "tcp", "10.100.100.100", "3"),
            ("9000", "tcp", "10.100.100.100", "1"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
            .collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn nothing_published_means_no_record() {
        assert_eq!(desired_record(&busybox(vec![]), &host()), None);
        // Exposed but not published: Docker reports the port without a host port.
        assert_eq!(
            desired_record(&busybox(vec![binding("80", "tcp", "", "")]), &host()),
            None
        );
    }

    #[test]
    fn host_prefix_is_normalised_and_never_matches_a_longer_ip() {
        let ip = "10.0.0.1".parse().unwrap();
        for root in ["/registered", "registered", "/registered/", "registered//"] {
            assert_eq!(HostPrefix::new(root, ip).as_str(), "/registered/10.0.0.1/");
        }
        assert_eq!(HostPrefix::new("/", ip).as_str(), "/10.0.0.1/");
        assert_eq!(HostPrefix::new("/a/b", ip).as_str(), "/a/b/10.0.0.1/");
        let ours = HostPrefix::new("/registered", ip);
        assert!(ours.contains("/registered/10.0.0.1/busybox:latest/x"));
        assert!(!ours.contains("/registered/10.0.0.10/busybox:latest/x"));
    }

    #[test]
    fn ipv6_host_ip_in_key_and_value() {
        let prefix = HostPrefix::new("/registered", "fd00::1".parse().unwrap());
        let record =
            desired_record(&busybox(vec![binding("80", "tcp", "::", "1")]), &prefix).unwrap();
        assert!(record
            .key
            .starts_with("/registered/fd00::1/busybox:latest/"));
        assert!(record.value.contains(r#""ip":"fd00::1""#));
    }

    #[test]
    fn container_id_is_the_last_key_segment() {
        assert_eq!(
            container_id_of(&format!("/registered/1.2.3.4/busybox:latest/{ID}")),
            ID
        );
        assert_eq!(container_id_of("plain"), "plain");
    }

    #[test]
    fn desired_applies_the_selection_before_the_record() {
        use crate::container::{Health, IGNORE_LABEL};
        let published = vec![binding("80", "tcp", "", "49153")];
        let healthy_only = Selection {
            require_healthy: true,
            ..Selection::default()
        };
        let plain = busybox(published.clone());
        let record = desired_record(&plain, &host()).unwrap();
        assert_eq!(
            desired(&plain, &Selection::default(), &host()),
            Desired::Registered(record.clone())
        );
        assert_eq!(
            desired(&plain, &healthy_only, &host()),
            Desired::Registered(record.clone()),
            "no HEALTHCHECK: registered as before"
        );

        let starting = Container {
            health: Health::Starting,
            ..busybox(published.clone())
        };
        assert_eq!(
            desired(&starting, &healthy_only, &host()),
            Desired::Withheld(Withheld::Starting)
        );
        assert_eq!(
            desired(&starting, &Selection::default(), &host()),
            Desired::Registered(record.clone())
        );
        let unhealthy = Container {
            health: Health::Unhealthy,
            ..busybox(published.clone())
        };
        assert_eq!(
            desired(&unhealthy, &healthy_only, &host()),
            Desired::Withheld(Withheld::Unhealthy)
        );
        let healthy = Container {
            health: Health::Healthy,
            ..busybox(published.clone())
        };
        assert_eq!(
            desired(&healthy, &healthy_only, &host()),
            Desired::Registered(record)
        );

        // Nothing published: nothing withheld either.
        let unpublished = Container {
            health: Health::Unhealthy,
            ..busybox(Vec::new())
        };
        assert_eq!(
            desired(&unpublished, &healthy_only, &host()),
            Desired::Nothing
        );

        let ignored = Container {
            labels: [(IGNORE_LABEL.to_string(), "true".to_string())].into(),
            ..busybox(published)
        };
        assert_eq!(
            desired(&ignored, &Selection::default(), &host()),
            Desired::Nothing
        );
    }
}
