//! Pure: what a template sees. The rows read from etcd (one per published
//! port, `listing::Row`) become services sorted by name, each with its
//! backends and its ports; services seen earlier in the run stay, with no
//! backends (README "Load balancers: render").

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::listing::Row;

/// The whole context of one rendering. Nothing in it depends on time, so an
/// unchanged cluster renders identical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Context {
    /// Every service, sorted by name.
    pub services: Vec<Service>,
}

/// The containers registered under one service (the key's middle segment:
/// the `docker-etcd-register.service` label, else the image), on any host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The key's service segment as stored (`/` as `::`), e.g. `web` or
    /// `quay.io::coreos::etcd:v3.5`; the `ident` filter makes it an
    /// identifier haproxy and nginx accept.
    pub name: String,
    /// Every published port of every container of the service, sorted.
    pub backends: Vec<Backend>,
    /// The service's container ports (private port and protocol), each with
    /// its backends: a template writes one frontend per port. A port seen
    /// earlier in the run stays, with no backends.
    pub ports: Vec<Port>,
}

/// One container port of a service and the bindings that reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// The port inside the containers, e.g. `80`.
    pub private_port: String,
    /// `tcp`, `udp` or `sctp`.
    pub port_type: String,
    /// The bindings of this port, sorted like [`Service::backends`].
    pub backends: Vec<Backend>,
}

/// One published binding: where a load balancer sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// The `--host-ip` of the agent that registered it.
    pub host: String,
    /// The binding's address.
    pub ip: String,
    /// The binding's port on the host: what traffic is sent to.
    pub public_port: String,
    /// `ip:public_port`, an IPv6 address in brackets: what haproxy's
    /// `server` and nginx's `server` take.
    pub address: String,
    /// The container's port it forwards to.
    pub private_port: String,
    /// `tcp`, `udp` or `sctp`.
    pub port_type: String,
    /// The full container id: unique, so a usable server name.
    pub container: String,
    /// The record's image (`/` as `::`), which differs between the
    /// backends of a service during a rolling upgrade.
    pub image: String,
}

/// The services and ports seen during this run: a service whose last
/// backend went away is still rendered (with no servers) so that the load
/// balancer keeps its frontend, refusing instead of vanishing.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Service name → its (private port, protocol) pairs ever seen.
    seen: BTreeMap<String, BTreeSet<(String, String)>>,
}

impl Catalog {
    /// The context of `rows` (any order); remembers their services.
    pub fn context(&mut self, rows: &[Row]) -> Context {
        let mut by_service: BTreeMap<&str, Vec<Backend>> = BTreeMap::new();
        for row in rows {
            self.seen
                .entry(row.service.clone())
                .or_default()
                .insert((row.private_port.clone(), row.port_type.clone()));
            by_service
                .entry(&row.service)
                .or_default()
                .push(backend(row));
        }
        let services = self
            .seen
            .iter()
            .map(|(name, ports)| {
                let mut backends = by_service.remove(name.as_str()).unwrap_or_default();
                backends.sort_by(compare_backends);
                backends.dedup();
                let mut ports: Vec<Port> = ports
                    .iter()
                    .map(|(private_port, port_type)| Port {
                        private_port: private_port.clone(),
                        port_type: port_type.clone(),
                        backends: backends
                            .iter()
                            .filter(|b| {
                                &b.private_port == private_port && &b.port_type == port_type
                            })
                            .cloned()
                            .collect(),
                    })
                    .collect();
                ports.sort_by(|a, b| {
                    number_first(&a.private_port, &b.private_port)
                        .then_with(|| a.port_type.cmp(&b.port_type))
                });
                Service {
                    name: name.clone(),
                    backends,
                    ports,
                }
            })
            .collect();
        Context { services }
    }
}

fn backend(row: &Row) -> Backend {
    Backend {
        host: row.host.clone(),
        ip: row.ip.clone(),
        public_port: row.public_port.clone(),
        address: address(&row.ip, &row.public_port),
        private_port: row.private_port.clone(),
        port_type: row.port_type.clone(),
        container: row.container.clone(),
        image: row.image.clone(),
    }
}

/// `ip:port`, `[ip]:port` for IPv6.
pub fn address(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Backends by host, ip, public port, private port, protocol, container
/// (ports by number): the order is the records', not etcd's key order.
fn compare_backends(a: &Backend, b: &Backend) -> Ordering {
    a.host
        .cmp(&b.host)
        .then_with(|| a.ip.cmp(&b.ip))
        .then_with(|| number_first(&a.public_port, &b.public_port))
        .then_with(|| number_first(&a.private_port, &b.private_port))
        .then_with(|| a.port_type.cmp(&b.port_type))
        .then_with(|| a.container.cmp(&b.container))
        .then_with(|| a.image.cmp(&b.image))
}

/// Numbers by value (`8080` after `443`), anything else after them as text.
fn number_first(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        host: &str,
        image: &str,
        container: &str,
        public: &str,
        private: &str,
        proto: &str,
    ) -> Row {
        Row {
            host: host.into(),
            service: image.into(),
            image: image.into(),
            container: container.into(),
            ip: host.into(),
            public_port: public.into(),
            private_port: private.into(),
            port_type: proto.into(),
            key: format!("/registered/{host}/{image}/{container}"),
        }
    }

    fn summary(context: &Context) -> Vec<(String, Vec<String>)> {
        context
            .services
            .iter()
            .map(|s| {
                let ports = s
                    .ports
                    .iter()
                    .map(|p| {
                        let servers: Vec<&str> =
                            p.backends.iter().map(|b| b.public_port.as_str()).collect();
                        format!("{}/{}={}", p.private_port, p.port_type, servers.join(","))
                    })
                    .collect();
                (s.name.clone(), ports)
            })
            .collect()
    }

    #[test]
    fn services_sorted_by_name_backends_by_host_ip_and_port_number() {
        let rows = [
            row("10.0.0.2", "web:1", "b", "9000", "80", "tcp"),
            row("10.0.0.1", "web:1", "a", "10000", "80", "tcp"),
            row("10.0.0.1", "web:1", "c", "9999", "80", "tcp"),
            row("10.0.0.1", "dns:1", "d", "53", "53", "udp"),
            row("10.0.0.1", "dns:1", "d", "8053", "53", "tcp"),
            row("10.0.0.1", "quay.io::a::b:2", "e", "81", "443", "tcp"),
        ];
        let context = Catalog::default().context(&rows);
        assert_eq!(
            summary(&context),
            [
                (
                    "dns:1".into(),
                    vec!["53/tcp=8053".into(), "53/udp=53".into()]
                ),
                ("quay.io::a::b:2".into(), vec!["443/tcp=81".into()]),
                ("web:1".into(), vec!["80/tcp=9999,10000,9000".into()]),
            ]
        );
        let web = &context.services[2];
        let hosts: Vec<&str> = web.backends.iter().map(|b| b.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.1", "10.0.0.2"]);
        assert_eq!(web.backends[0].address, "10.0.0.1:9999");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(address("fd00::1", "80"), "[fd00::1]:80");
        assert_eq!(address("10.0.0.1", "80"), "10.0.0.1:80");
    }

    #[test]
    fn the_order_of_the_rows_does_not_matter() {
        let mut rows = vec![
            row("10.0.0.2", "web:1", "b", "9000", "80", "tcp"),
            row("10.0.0.1", "web:1", "a", "10000", "8080", "tcp"),
            row("10.0.0.1", "api:1", "c", "9999", "80", "tcp"),
        ];
        let first = Catalog::default().context(&rows);
        rows.reverse();
        assert_eq!(Catalog::default().context(&rows), first);
    }

    #[test]
    fn a_service_whose_last_backend_went_away_stays_with_no_backends() {
        let mut catalog = Catalog::default();
        catalog.context(&[
            row("10.0.0.1", "web:1", "a", "9000", "80", "tcp"),
            row("10.0.0.1", "api:1", "b", "9001", "80", "tcp"),
        ]);
        let context = catalog.context(&[row("10.0.0.1", "api:1", "b", "9001", "80", "tcp")]);
        assert_eq!(
            summary(&context),
            [
                ("api:1".into(), vec!["80/tcp=9001".into()]),
                ("web:1".into(), vec!["80/tcp=".into()]),
            ]
        );
        assert!(context.services[1].backends.is_empty());
        // A fresh run knows only what is registered.
        let fresh = Catalog::default().context(&[]);
        assert!(fresh.services.is_empty());
    }
}
