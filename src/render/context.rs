//! Pure: what a template sees. The rows read from etcd (one per published
//! port, `listing::Row`) become services sorted by name, each with its
//! backends and its ports; services seen earlier in the run stay, with no
//! backends (README "Load balancers: render").

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::template::ident;
use crate::listing::Row;

/// The whole context of one rendering. Nothing in it depends on time, so an
/// unchanged cluster renders identical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Context {
    /// Every service, sorted by name.
    pub services: Vec<Service>,
    /// The ports that more than one service claims, and who is left out:
    /// for render's log, not for templates.
    #[serde(skip)]
    pub contested: Vec<Contest>,
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
    /// earlier in the run stays, with no backends; a port that another
    /// service holds (see [`Catalog`]) is not here.
    pub ports: Vec<Port>,
}

/// One container port of a service and the bindings that reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// The port inside the containers, e.g. `80`.
    pub private_port: String,
    /// `tcp`, `udp` or `sctp`.
    pub port_type: String,
    /// The bindings of this port, sorted like [`Service::backends`], one per
    /// address: two records of one address (a container published on it
    /// twice, a record copied under another key) are one server.
    pub backends: Vec<Backend>,
}

/// One published binding: where a load balancer sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// A server name unique among the backends of its port, made of
    /// letters, digits and `_`: the container id's first 12 digits, the
    /// address (`ident`) and the port, e.g. `0123456789ab_10_2e0_2e0_2e1_32768`.
    pub name: String,
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
    /// The full container id.
    pub container: String,
    /// The record's image (`/` as `::`), which differs between the
    /// backends of a service during a rolling upgrade.
    pub image: String,
}

/// A container port that several services claim: a load balancer with one
/// frontend per port can give it to one of them only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contest {
    /// The container port and protocol, e.g. `80/tcp`.
    pub port: String,
    /// The service whose frontend it is.
    pub holder: String,
    /// The services left without a frontend on it, sorted.
    pub left_out: Vec<String>,
}

/// The services and ports seen during this run: a service whose last
/// backend went away is still rendered (with no servers) so that the load
/// balancer keeps its frontend, refusing instead of vanishing.
///
/// A port (number and protocol) is one frontend, so it belongs to one
/// service: of the services that claim it, one with backends on it before
/// one without, then the one seen first in this run, then by name (README
/// "Trust boundary": a container cannot take a port that a service already
/// serves, nor hold one after it is gone).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Service name → when it was first seen (a count of services) and its
    /// (private port, protocol) pairs ever seen.
    seen: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    /// The order services came in; within one reading, by name.
    order: usize,
    ports: BTreeSet<PortKey>,
}

/// A container port and its protocol (`("80", "tcp")`).
type PortKey = (String, String);

/// One service's claim on a port, ordered as claims win: with backends on
/// it (`false` sorts first), then seen first, then by name.
type Claim<'a> = (bool, usize, &'a str);

impl Catalog {
    /// The context of `rows` (any order); remembers their services.
    pub fn context(&mut self, rows: &[Row]) -> Context {
        let mut by_service: BTreeMap<&str, Vec<Backend>> = BTreeMap::new();
        for row in rows {
            by_service
                .entry(&row.service)
                .or_default()
                .push(backend(row));
        }
        for (name, backends) in &by_service {
            let next = self.seen.len();
            let seen = self.seen.entry((*name).to_owned()).or_insert(Seen {
                order: next,
                ..Seen::default()
            });
            for b in backends {
                seen.ports
                    .insert((b.private_port.clone(), b.port_type.clone()));
            }
        }
        for backends in by_service.values_mut() {
            backends.sort_by(compare_backends);
            backends.dedup();
        }
        let (holders, contested) = self.holders(&by_service);
        let services = self
            .seen
            .iter()
            .map(|(name, seen)| {
                let backends = by_service.remove(name.as_str()).unwrap_or_default();
                let mut ports: Vec<Port> = seen
                    .ports
                    .iter()
                    .filter(|port| holders.get(*port) == Some(&name.as_str()))
                    .map(|(private_port, port_type)| Port {
                        private_port: private_port.clone(),
                        port_type: port_type.clone(),
                        backends: one_per_address(
                            backends
                                .iter()
                                .filter(|b| {
                                    &b.private_port == private_port && &b.port_type == port_type
                                })
                                .cloned(),
                        ),
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
        Context {
            services,
            contested,
        }
    }

    /// Which service holds each port, and the ports that more than one claims.
    fn holders<'a>(
        &'a self,
        backends: &BTreeMap<&str, Vec<Backend>>,
    ) -> (BTreeMap<&'a PortKey, &'a str>, Vec<Contest>) {
        let mut claims: BTreeMap<&PortKey, Vec<Claim<'_>>> = BTreeMap::new();
        for (name, seen) in &self.seen {
            for port in &seen.ports {
                let serving = backends.get(name.as_str()).is_some_and(|all| {
                    all.iter()
                        .any(|b| b.private_port == port.0 && b.port_type == port.1)
                });
                // `false` sorts first: a claimant with backends wins.
                claims
                    .entry(port)
                    .or_default()
                    .push((!serving, seen.order, name.as_str()));
            }
        }
        let mut contested = Vec::new();
        let holders = claims
            .into_iter()
            .map(|(port, mut claimants)| {
                claimants.sort_unstable();
                let holder = claimants[0].2;
                if claimants.len() > 1 {
                    let mut left_out: Vec<String> =
                        claimants[1..].iter().map(|c| c.2.to_owned()).collect();
                    left_out.sort();
                    contested.push(Contest {
                        port: format!("{}/{}", port.0, port.1),
                        holder: holder.to_owned(),
                        left_out,
                    });
                }
                (port, holder)
            })
            .collect();
        (holders, contested)
    }
}

/// The first backend (in sorted order) of each address.
fn one_per_address(sorted: impl Iterator<Item = Backend>) -> Vec<Backend> {
    let mut addresses = BTreeSet::new();
    sorted
        .filter(|b| addresses.insert(b.address.clone()))
        .collect()
}

fn backend(row: &Row) -> Backend {
    let short_id = row.container.get(..12).unwrap_or(&row.container);
    Backend {
        name: format!("{short_id}_{}_{}", ident(&row.ip), row.public_port),
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
            row("10.0.0.1", "api:1", "b", "9001", "81", "tcp"),
        ]);
        let context = catalog.context(&[row("10.0.0.1", "api:1", "b", "9001", "81", "tcp")]);
        assert_eq!(
            summary(&context),
            [
                ("api:1".into(), vec!["81/tcp=9001".into()]),
                ("web:1".into(), vec!["80/tcp=".into()]),
            ]
        );
        assert!(context.services[1].backends.is_empty());
        // A fresh run knows only what is registered.
        let fresh = Catalog::default().context(&[]);
        assert!(fresh.services.is_empty());
    }

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn server_names_are_unique_per_port_and_one_address_is_one_server() {
        let a = id('a');
        let mut twice = row("10.0.0.1", "web", &a, "8080", "80", "tcp");
        twice.ip = "10.0.0.11".into();
        let rows = [
            row("10.0.0.1", "web", &a, "8080", "80", "tcp"),
            twice,
            // The same address under another image's key: one server.
            Row {
                image: "web:2".into(),
                ..row("10.0.0.1", "web", &a, "8080", "80", "tcp")
            },
            row("10.0.0.1", "web", &id('b'), "8080", "80", "tcp"),
        ];
        let context = Catalog::default().context(&rows);
        let names: Vec<&str> = context.services[0].ports[0]
            .backends
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "aaaaaaaaaaaa_10_2e0_2e0_2e1_8080",
                "aaaaaaaaaaaa_10_2e0_2e0_2e11_8080"
            ]
        );
    }

    #[test]
    fn a_port_claimed_by_two_services_is_the_first_ones_while_it_serves() {
        let web = row("10.0.0.1", "web", &id('a'), "8080", "80", "tcp");
        let intruder = row("10.0.0.2", "aaa", &id('b'), "8080", "80", "tcp");
        let mut catalog = Catalog::default();
        catalog.context(std::slice::from_ref(&web));
        let context = catalog.context(&[web.clone(), intruder.clone()]);
        assert_eq!(
            summary(&context),
            [
                ("aaa".into(), vec![]),
                ("web".into(), vec!["80/tcp=8080".into()])
            ]
        );
        assert_eq!(
            context.contested,
            [Contest {
                port: "80/tcp".into(),
                holder: "web".into(),
                left_out: vec!["aaa".into()],
            }]
        );
        // While web has no backend, the port serves the other; then web's again.
        let context = catalog.context(std::slice::from_ref(&intruder));
        assert_eq!(
            summary(&context)[0],
            ("aaa".into(), vec!["80/tcp=8080".into()])
        );
        let context = catalog.context(&[web, intruder]);
        assert_eq!(
            summary(&context)[1],
            ("web".into(), vec!["80/tcp=8080".into()])
        );
        // Gone, the other no longer holds it: web's frontend stays, empty.
        let context = catalog.context(&[]);
        assert_eq!(
            summary(&context),
            [
                ("aaa".into(), vec![]),
                ("web".into(), vec!["80/tcp=".into()])
            ]
        );
    }

    #[test]
    fn in_one_reading_the_first_name_holds_a_contested_port() {
        let context = Catalog::default().context(&[
            row("10.0.0.1", "web", &id('a'), "8080", "80", "tcp"),
            row("10.0.0.1", "api", &id('b'), "8081", "80", "tcp"),
        ]);
        assert_eq!(context.contested[0].holder, "api");
    }
}
