//! Pure: what a template sees. The rows read from etcd (one per published
//! port, `listing::Row`) become services sorted by name, each with its
//! backends and its ports; services seen earlier in the run stay, with no
//! backends (docs/render.md "Load balancers: render").

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use super::frontends::FrontendPorts;
use super::template::write_ident;
use crate::listing::Row;
use crate::record::{ContainerId, Name, PortNumber, Protocol};

/// The whole context of one rendering. Nothing in it depends on time, so an
/// unchanged cluster renders identical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Every service, sorted by name.
    pub services: Vec<Service>,
    /// The ports that more than one service claims, and who is left out:
    /// for render's log, not for templates.
    pub contested: Vec<Contest>,
    /// The container ports outside `--frontend-port` that records claim,
    /// sorted: for render's log.
    pub refused: Vec<Refused>,
}

/// A container port of a service that may not be a frontend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refused {
    pub service: String,
    /// The container port and protocol, e.g. `22/tcp`.
    pub port: String,
}

/// The containers registered under one service (the key's middle segment:
/// the `docker-etcd-register.service` label, else the image), on any host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The key's service segment as stored (`/` as `::`), e.g. `web` or
    /// `quay.io::coreos::etcd:v3.5`; the `ident` filter makes it an
    /// identifier haproxy and nginx accept.
    pub name: Name,
    /// Every published port of every container of the service, sorted.
    pub backends: Vec<Backend>,
    /// The service's container ports (private port and protocol), each with
    /// its backends: a template writes one frontend per port. A port seen
    /// earlier in the run stays, with no backends; a port that another
    /// service holds (see [`Catalog`]) is not here.
    pub ports: Vec<Port>,
}

/// One container port of a service and the bindings that reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The port inside the containers, e.g. `80`.
    pub private_port: PortNumber,
    /// `tcp`, `udp` or `sctp`.
    pub port_type: Protocol,
    /// The bindings of this port, sorted like [`Service::backends`], one per
    /// address: two records of one address (a container published on it
    /// twice, a record copied under another key) are one server.
    pub backends: Vec<Backend>,
}

/// One published binding: where a load balancer sends traffic. Compact (no
/// text of its own): a rendering of a hundred thousand records holds two of
/// these per binding, and the template reads its `name` and `address`,
/// made when asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The `--host-ip` of the agent that registered it.
    pub host: IpAddr,
    /// The binding's address.
    pub ip: IpAddr,
    /// The binding's port on the host: what traffic is sent to.
    pub public_port: PortNumber,
    /// The container's port it forwards to.
    pub private_port: PortNumber,
    /// `tcp`, `udp` or `sctp`.
    pub port_type: Protocol,
    /// The full container id.
    pub container: ContainerId,
    /// The record's image (`/` as `::`), which differs between the
    /// backends of a service during a rolling upgrade.
    pub image: Name,
}

impl Backend {
    /// A server name unique among the backends of its port, made of
    /// letters, digits and `_`: the container id's first 12 digits, the
    /// address (`ident`) and the port, e.g. `0123456789ab_10_2e0_2e0_2e1_32768`.
    pub fn name(&self) -> String {
        let mut name = String::new();
        self.write_name(&mut name);
        name
    }

    /// Writes [`Backend::name`] into `out`.
    pub fn write_name(&self, out: &mut impl fmt::Write) {
        let mut ip = Buffer::<48>::default();
        let _ = write!(ip, "{}", self.ip);
        let _ = write!(out, "{}_", self.container.short());
        write_ident(out, ip.as_str());
        let _ = write!(out, "_{}", self.public_port);
    }

    /// `ip:public_port`, an IPv6 address in brackets: what haproxy's
    /// `server` and nginx's `server` take.
    pub fn address(&self) -> String {
        address(self.ip, self.public_port)
    }
}

/// Text written on the stack, for the parts of a name that are built for
/// each backend of each rendering: no allocation. Holds at most `N` bytes
/// (more is an error of the writer, never a partial character).
#[derive(Debug)]
pub struct Buffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Buffer<N> {
    fn default() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Buffer<N> {
    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Write for Buffer<N> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
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
/// one without, then the one seen first in this run, then by name (docs/security.md
/// "Trust boundary": a container cannot take a port that a service already
/// serves, nor hold one after it is gone).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Service name → when it was first seen (a count of services) and its
    /// (private port, protocol) pairs ever seen that may be frontends.
    seen: BTreeMap<Name, Seen>,
    /// Which container ports may be frontends; the others are never
    /// remembered nor given a [`Port`].
    frontends: FrontendPorts,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    /// The order services came in; within one reading, by name.
    order: usize,
    ports: BTreeSet<PortKey>,
}

/// A container port and its protocol (`80/tcp`).
type PortKey = (PortNumber, Protocol);

/// One service's claim on a port, ordered as claims win: with backends on
/// it (`false` sorts first), then seen first, then by name.
type Claim<'a> = (bool, usize, &'a Name);

impl Catalog {
    /// A catalog of no services, whose frontends are `frontends`.
    pub fn new(frontends: FrontendPorts) -> Self {
        Self {
            seen: BTreeMap::new(),
            frontends,
        }
    }

    /// The context of `rows` (any order); remembers their services.
    pub fn context<'a>(&mut self, rows: impl IntoIterator<Item = Row<'a>>) -> Context {
        // Hashed while gathering (a lookup per row), sorted once after.
        let mut gathered: HashMap<&Name, Vec<Backend>> = HashMap::new();
        for row in rows {
            gathered.entry(row.service).or_default().push(backend(&row));
        }
        let mut by_service: BTreeMap<&Name, Vec<Backend>> = gathered.into_iter().collect();
        let mut refused = BTreeSet::new();
        for (name, backends) in &mut by_service {
            // Distinct backends never compare equal: no need for a stable sort.
            backends.sort_unstable_by(compare_backends);
            backends.dedup();
            let next = self.seen.len();
            let seen = self.seen.entry((*name).clone()).or_insert(Seen {
                order: next,
                ..Seen::default()
            });
            for (private_port, protocol) in backends.iter().map(port_key) {
                if self.frontends.admits(private_port) {
                    seen.ports.insert((private_port, protocol));
                } else {
                    refused.insert(Refused {
                        service: name.to_string(),
                        port: format!("{private_port}/{protocol}"),
                    });
                }
            }
        }
        let (holders, contested) = self.holders(&by_service);
        let services = self
            .seen
            .iter()
            .map(|(name, seen)| {
                let backends = by_service.remove(name).unwrap_or_default();
                // One pass over the backends, whatever the number of ports.
                let mut of_port: BTreeMap<PortKey, Vec<Backend>> = BTreeMap::new();
                for b in &backends {
                    of_port.entry(port_key(b)).or_default().push(b.clone());
                }
                let ports = seen
                    .ports
                    .iter()
                    .filter(|port| holders.get(*port) == Some(&name))
                    .map(|&(private_port, port_type)| Port {
                        private_port,
                        port_type,
                        backends: one_per_address(
                            of_port
                                .remove(&(private_port, port_type))
                                .unwrap_or_default(),
                        ),
                    })
                    .collect();
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
            refused: refused.into_iter().collect(),
        }
    }

    /// Which service holds each port, and the ports that more than one claims.
    fn holders<'a>(
        &'a self,
        backends: &BTreeMap<&Name, Vec<Backend>>,
    ) -> (BTreeMap<&'a PortKey, &'a Name>, Vec<Contest>) {
        let mut claims: BTreeMap<&PortKey, Vec<Claim<'_>>> = BTreeMap::new();
        for (name, seen) in &self.seen {
            let serving: BTreeSet<PortKey> = backends
                .get(name)
                .map(|all| all.iter().map(port_key).collect())
                .unwrap_or_default();
            for port in &seen.ports {
                // `false` sorts first: a claimant with backends wins.
                claims
                    .entry(port)
                    .or_default()
                    .push((!serving.contains(port), seen.order, name));
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
                        claimants[1..].iter().map(|c| c.2.to_string()).collect();
                    left_out.sort();
                    contested.push(Contest {
                        port: format!("{}/{}", port.0, port.1),
                        holder: holder.to_string(),
                        left_out,
                    });
                }
                (port, holder)
            })
            .collect();
        (holders, contested)
    }
}

fn port_key(backend: &Backend) -> PortKey {
    (backend.private_port, backend.port_type)
}

/// The first backend (in sorted order) of each address.
fn one_per_address(sorted: Vec<Backend>) -> Vec<Backend> {
    let mut addresses = HashSet::with_capacity(sorted.len());
    sorted
        .into_iter()
        .filter(|b| addresses.insert((b.ip, b.public_port)))
        .collect()
}

fn backend(row: &Row) -> Backend {
    Backend {
        host: row.host,
        ip: row.ip,
        public_port: row.public_port,
        private_port: row.private_port,
        port_type: row.port_type,
        container: row.container.clone(),
        image: row.image.clone(),
    }
}

/// `ip:port`, `[ip]:port` for IPv6.
pub fn address(ip: IpAddr, port: PortNumber) -> String {
    Address(ip, port).to_string()
}

/// `ip:port`, `[ip]:port` for IPv6, written where it is wanted.
pub struct Address(pub IpAddr, pub PortNumber);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.1),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.1),
        }
    }
}

/// Backends by host, ip, public port, private port, protocol, container:
/// the order is the records', not etcd's key order.
fn compare_backends(a: &Backend, b: &Backend) -> Ordering {
    (
        a.host,
        a.ip,
        a.public_port,
        a.private_port,
        a.port_type,
        &a.container,
        &a.image,
    )
        .cmp(&(
            b.host,
            b.ip,
            b.public_port,
            b.private_port,
            b.port_type,
            &b.container,
            &b.image,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row of `container` (an id, or one hex digit to make one of).
    fn row(
        host: &str,
        image: &str,
        container: &str,
        public: &str,
        private: &str,
        proto: &str,
    ) -> Row<'static> {
        let container = ContainerId::parse(container)
            .or_else(|| ContainerId::parse(&container.repeat(64)))
            .unwrap();
        // Leaked: a row borrows its names from the index that holds them.
        let name: &'static Name = Box::leak(Box::new(Name::parse(image).unwrap()));
        let key = format!("/registered/{host}/{image}/{container}");
        Row {
            host: host.parse().unwrap(),
            service: name,
            image: name,
            key: Box::leak(key.into_boxed_str()),
            container: Box::leak(Box::new(container)),
            ip: host.parse().unwrap(),
            public_port: PortNumber::parse(public).unwrap(),
            private_port: PortNumber::parse(private).unwrap(),
            port_type: Protocol::parse(proto).unwrap(),
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
                        let servers: Vec<String> = p
                            .backends
                            .iter()
                            .map(|b| b.public_port.to_string())
                            .collect();
                        format!("{}/{}={}", p.private_port, p.port_type, servers.join(","))
                    })
                    .collect();
                (s.name.to_string(), ports)
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
        let context = Catalog::default().context(rows);
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
        let hosts: Vec<String> = web.backends.iter().map(|b| b.host.to_string()).collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.1", "10.0.0.2"]);
        assert_eq!(web.backends[0].address(), "10.0.0.1:9999");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let port = PortNumber::parse("80").unwrap();
        assert_eq!(address("fd00::1".parse().unwrap(), port), "[fd00::1]:80");
        assert_eq!(address("10.0.0.1".parse().unwrap(), port), "10.0.0.1:80");
    }

    #[test]
    fn the_order_of_the_rows_does_not_matter() {
        let mut rows = vec![
            row("10.0.0.2", "web:1", "b", "9000", "80", "tcp"),
            row("10.0.0.1", "web:1", "a", "10000", "8080", "tcp"),
            row("10.0.0.1", "api:1", "c", "9999", "80", "tcp"),
        ];
        let first = Catalog::default().context(rows.clone());
        rows.reverse();
        assert_eq!(Catalog::default().context(rows.clone()), first);
    }

    #[test]
    fn a_service_whose_last_backend_went_away_stays_with_no_backends() {
        let mut catalog = Catalog::default();
        catalog.context([
            row("10.0.0.1", "web:1", "a", "9000", "80", "tcp"),
            row("10.0.0.1", "api:1", "b", "9001", "81", "tcp"),
        ]);
        let context = catalog.context([row("10.0.0.1", "api:1", "b", "9001", "81", "tcp")]);
        assert_eq!(
            summary(&context),
            [
                ("api:1".into(), vec!["81/tcp=9001".into()]),
                ("web:1".into(), vec!["80/tcp=".into()]),
            ]
        );
        assert!(context.services[1].backends.is_empty());
        // A fresh run knows only what is registered.
        let fresh = Catalog::default().context([]);
        assert!(fresh.services.is_empty());
    }

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn server_names_are_unique_per_port_and_one_address_is_one_server() {
        let a = id('a');
        let mut twice = row("10.0.0.1", "web", &a, "8080", "80", "tcp");
        twice.ip = "10.0.0.11".parse().unwrap();
        let rows = [
            row("10.0.0.1", "web", &a, "8080", "80", "tcp"),
            twice,
            // The same address under another image's key: one server.
            Row {
                image: Box::leak(Box::new(Name::parse("web:2").unwrap())),
                ..row("10.0.0.1", "web", &a, "8080", "80", "tcp")
            },
            row("10.0.0.1", "web", &id('b'), "8080", "80", "tcp"),
        ];
        let context = Catalog::default().context(rows);
        let names: Vec<String> = context.services[0].ports[0]
            .backends
            .iter()
            .map(|b| b.name())
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
        catalog.context([web]);
        let context = catalog.context([web, intruder]);
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
        let context = catalog.context([intruder]);
        assert_eq!(
            summary(&context)[0],
            ("aaa".into(), vec!["80/tcp=8080".into()])
        );
        let context = catalog.context([web, intruder]);
        assert_eq!(
            summary(&context)[1],
            ("web".into(), vec!["80/tcp=8080".into()])
        );
        // Gone, the other no longer holds it: web's frontend stays, empty.
        let context = catalog.context([]);
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
        let context = Catalog::default().context([
            row("10.0.0.1", "web", &id('a'), "8080", "80", "tcp"),
            row("10.0.0.1", "api", &id('b'), "8081", "80", "tcp"),
        ]);
        assert_eq!(context.contested[0].holder, "api");
    }

    #[test]
    fn only_the_operators_ports_become_frontends() {
        let frontends = FrontendPorts::parse(&["80", "8000-8999"]).unwrap();
        let mut catalog = Catalog::new(frontends);
        let context = catalog.context([
            row("10.0.0.1", "web", &id('a'), "8080", "80", "tcp"),
            row("10.0.0.1", "web", &id('a'), "8081", "8443", "tcp"),
            row("10.0.0.1", "gitea", &id('b'), "2222", "22", "tcp"),
        ]);
        assert_eq!(
            summary(&context),
            [
                ("gitea".into(), vec![]),
                (
                    "web".into(),
                    vec!["80/tcp=8080".into(), "8443/tcp=8081".into()]
                ),
            ]
        );
        // Its backends are still the service's, for templates that list them.
        assert_eq!(context.services[0].backends.len(), 1);
        assert_eq!(
            context.refused,
            [Refused {
                service: "gitea".into(),
                port: "22/tcp".into()
            }]
        );
    }
}
