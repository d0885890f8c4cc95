//! Which address reaches a container, by address mode (docs/records.md: Addresses):
//! the host's published ports (the default, the original's records), the
//! container's own address on a network with the ports it exposes, or, for
//! a container on the host's network, its exposed ports on the host's
//! address. Pure: the facts were parsed at the engine's edge.

use std::net::IpAddr;

use crate::container::{Container, ExposedPort, NetworkMode};
use crate::record::offerable;

/// The label that chooses a container's address mode, overriding
/// `--address-mode`: `published` or `network`.
pub const ADDRESS_MODE_LABEL: &str = "docker-etcd-register.address-mode";
/// The label that names the network whose address a container is
/// registered with, overriding `--network`.
pub const NETWORK_LABEL: &str = "docker-etcd-register.network";

/// How an agent (or a container, by label) is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AddressMode {
    /// Host-published ports, on `--host-ip` for a wildcard binding.
    #[default]
    Published,
    /// The container's own address on a network and its exposed ports;
    /// nothing needs publishing.
    Network(NetworkChoice),
}

/// Which network's address, in the network mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkChoice {
    /// `--network NAME`: the container's address on that network; a
    /// container not attached to it has no record.
    Named(String),
    /// No `--network`: the container's only network (one on several has no
    /// record: which one reaches it is the operator's choice).
    Only,
    /// `--network host`: containers on the host's network, their exposed
    /// ports on the host's address.
    Host,
}

impl AddressMode {
    /// `--address-mode` and `--network`, checked.
    pub fn from_flags(mode: &str, network: Option<&str>) -> Result<AddressMode, String> {
        let network = network.filter(|name| !name.is_empty());
        match (mode, network) {
            ("published", None) => Ok(AddressMode::Published),
            ("published", Some(_)) => Err("--network needs --address-mode network".into()),
            ("network", None) => Ok(AddressMode::Network(NetworkChoice::Only)),
            ("network", Some("host")) => Ok(AddressMode::Network(NetworkChoice::Host)),
            ("network", Some(name)) if is_network_name(name) => {
                Ok(AddressMode::Network(NetworkChoice::Named(name.to_owned())))
            }
            ("network", Some(name)) => Err(format!("--network {name:?} is not a network name")),
            (other, _) => Err(format!("{other:?} is neither published nor network")),
        }
    }

    /// The mode for `container`: the agent's, as its labels narrow it, and
    /// what was wrong with them (for a WARN). Labels never widen what the
    /// operator allowed (docs/records.md: Addresses): a container may always choose
    /// the published mode; it may name one of its networks only where the
    /// operator left that to each container (no `--network`); never the
    /// network mode on an agent in the published mode (container networks
    /// are not known to reach other hosts), nor the host's network on an
    /// agent that did not choose it (exposed ports are no proof of a
    /// listener, and the host's own ports are not the container's to
    /// offer). A label outside the grammar or beyond that leaves the
    /// agent's mode.
    pub fn for_container(&self, container: &Container) -> (AddressMode, Option<String>) {
        let label = |name: &str| container.labels.get(name).map(String::as_str);
        let refused = |why: String| (self.clone(), Some(why));
        let asks_network = match label(ADDRESS_MODE_LABEL) {
            None => false,
            Some("published") => return (AddressMode::Published, None),
            Some("network") => true,
            Some(_) => {
                return refused(format!(
                    "{ADDRESS_MODE_LABEL} is neither published nor network; \
                     the agent's mode applies"
                ))
            }
        };
        let named = match label(NETWORK_LABEL) {
            None => None,
            Some("host") => Some(NetworkChoice::Host),
            Some(name) if is_network_name(name) => Some(NetworkChoice::Named(name.to_owned())),
            Some(_) => {
                return refused(format!(
                    "{NETWORK_LABEL} is not a network name; the agent's mode applies"
                ))
            }
        };
        let AddressMode::Network(agents) = self else {
            // A network label alone leaves the published mode as it is.
            return match asks_network {
                false => (AddressMode::Published, None),
                true => refused(format!(
                    "{ADDRESS_MODE_LABEL}=network: the network mode is the operator's \
                     choice (--address-mode network); published instead"
                )),
            };
        };
        match (agents, named) {
            (_, None) => (self.clone(), None),
            (NetworkChoice::Host, Some(NetworkChoice::Host)) => (self.clone(), None),
            (NetworkChoice::Host, Some(_)) => refused(format!(
                "{NETWORK_LABEL}: this agent registers containers on the host's network \
                 only (--network host)"
            )),
            (_, Some(NetworkChoice::Host)) => refused(format!(
                "{NETWORK_LABEL}=host: the host's network is the operator's choice \
                 (--network host); the agent's network instead"
            )),
            // Which of its networks reaches it, where the operator left
            // that to each container.
            (NetworkChoice::Only, Some(choice)) => (AddressMode::Network(choice), None),
            (NetworkChoice::Named(operators), Some(NetworkChoice::Named(name)))
                if *operators == name =>
            {
                (self.clone(), None)
            }
            (NetworkChoice::Named(_), Some(_)) => refused(format!(
                "{NETWORK_LABEL}: the network is the operator's choice (--network); \
                 the agent's network instead"
            )),
        }
    }
}

/// A network name as the engines allow them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`,
/// at most 255 characters.
fn is_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The addresses and ports a container is reached on in the network mode
/// `choice`, each address with every exposed port; `host` (and `host6`)
/// for a container on the host's network. Empty when the container is not
/// on the chosen network, or has no address or exposed port there.
pub fn network_endpoints(
    container: &Container,
    choice: &NetworkChoice,
    host: IpAddr,
    host6: Option<IpAddr>,
) -> Vec<(IpAddr, ExposedPort)> {
    // An address no other host reaches (loopback, link-local, multicast)
    // is never offered, as in the published mode; one address, one
    // spelling.
    let addresses: Vec<IpAddr> = chosen_addresses(container, choice, host, host6)
        .into_iter()
        .map(|ip| ip.to_canonical())
        .filter(|ip| offerable(*ip, host))
        .collect();
    addresses
        .iter()
        .flat_map(|ip| container.exposed.iter().map(move |port| (*ip, *port)))
        .take(MAX_ENDPOINTS)
        .collect()
}

/// The addresses of `container` that the network mode `choice` looks at,
/// before any is judged: its addresses on the chosen network, or the
/// host's for a container on the host's network.
pub fn chosen_addresses(
    container: &Container,
    choice: &NetworkChoice,
    host: IpAddr,
    host6: Option<IpAddr>,
) -> Vec<IpAddr> {
    match (choice, container.network_mode) {
        (NetworkChoice::Host, NetworkMode::Host) => {
            [Some(host), host6].into_iter().flatten().collect()
        }
        (NetworkChoice::Host, _)
        | (_, NetworkMode::Host | NetworkMode::Shared | NetworkMode::None) => Vec::new(),
        (NetworkChoice::Named(name), NetworkMode::Own) => container
            .networks
            .iter()
            .filter(|a| a.network == *name)
            .flat_map(|a| a.addresses())
            .collect(),
        (NetworkChoice::Only, NetworkMode::Own) => match container.networks.as_slice() {
            [only] => only.addresses().collect(),
            _ => Vec::new(),
        },
    }
}

/// More endpoints than any record can carry (each takes more than 64 bytes
/// of JSON): a container exposing every port is refused as too large after
/// this much work, not after building all of them.
const MAX_ENDPOINTS: usize = crate::record::MAX_RECORD_BYTES / 64 + 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Attachment;

    fn on(networks: &[(&str, &str, &str)], exposed: &[&str]) -> Container {
        Container {
            networks: networks
                .iter()
                .map(|(n, v4, v6)| Attachment::from_engine(n, v4, v6))
                .collect(),
            exposed: exposed
                .iter()
                .map(|p| ExposedPort::from_engine(p).unwrap())
                .collect(),
            ..Container::default()
        }
    }

    fn ips(endpoints: &[(IpAddr, ExposedPort)]) -> Vec<String> {
        endpoints
            .iter()
            .map(|(ip, p)| format!("{ip} {}/{}", p.port, p.protocol.as_str()))
            .collect()
    }

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));

    #[test]
    fn the_named_network_gives_the_address_and_every_exposed_port() {
        let c = on(
            &[
                ("backend", "172.18.0.2", "fd00::2"),
                ("frontend", "172.19.0.3", ""),
            ],
            &["80/tcp", "53/udp"],
        );
        let named = NetworkChoice::Named("backend".into());
        assert_eq!(
            ips(&network_endpoints(&c, &named, HOST, None)),
            [
                "172.18.0.2 80/tcp",
                "172.18.0.2 53/udp",
                "fd00::2 80/tcp",
                "fd00::2 53/udp"
            ]
        );
        let frontend = NetworkChoice::Named("frontend".into());
        assert_eq!(
            ips(&network_endpoints(&c, &frontend, HOST, None)),
            ["172.19.0.3 80/tcp", "172.19.0.3 53/udp"]
        );
        let absent = NetworkChoice::Named("other".into());
        assert!(network_endpoints(&c, &absent, HOST, None).is_empty());
        // On two networks and none named: no guess.
        assert!(network_endpoints(&c, &NetworkChoice::Only, HOST, None).is_empty());
    }

    #[test]
    fn an_ipv6_only_container_is_reached_on_its_ipv6_address() {
        let c = on(&[("v6", "", "fd00:de::7")], &["80/tcp"]);
        assert_eq!(
            ips(&network_endpoints(&c, &NetworkChoice::Only, HOST, None)),
            ["fd00:de::7 80/tcp"]
        );
    }

    #[test]
    fn the_only_network_is_chosen_when_none_is_named() {
        let c = on(&[("bridge", "172.17.0.4", "")], &["8080/tcp"]);
        assert_eq!(
            ips(&network_endpoints(&c, &NetworkChoice::Only, HOST, None)),
            ["172.17.0.4 8080/tcp"]
        );
        let no_port = on(&[("bridge", "172.17.0.4", "")], &[]);
        assert!(network_endpoints(&no_port, &NetworkChoice::Only, HOST, None).is_empty());
        let no_address = on(&[("bridge", "", "")], &["80/tcp"]);
        assert!(network_endpoints(&no_address, &NetworkChoice::Only, HOST, None).is_empty());
    }

    #[test]
    fn a_host_network_container_is_reached_on_the_hosts_addresses_only_when_chosen() {
        let c = Container {
            network_mode: NetworkMode::Host,
            ..on(&[("host", "", "")], &["9100/tcp"])
        };
        let host6: IpAddr = "2001:db8::5".parse().unwrap();
        assert_eq!(
            ips(&network_endpoints(
                &c,
                &NetworkChoice::Host,
                HOST,
                Some(host6)
            )),
            ["10.0.0.5 9100/tcp", "2001:db8::5 9100/tcp"]
        );
        assert!(network_endpoints(&c, &NetworkChoice::Only, HOST, None).is_empty());
        let bridged = on(&[("bridge", "172.17.0.4", "")], &["80/tcp"]);
        assert!(network_endpoints(&bridged, &NetworkChoice::Host, HOST, None).is_empty());
        let shared = Container {
            network_mode: NetworkMode::Shared,
            ..bridged.clone()
        };
        assert!(network_endpoints(&shared, &NetworkChoice::Only, HOST, None).is_empty());
    }

    #[test]
    fn labels_narrow_the_agents_mode_and_never_widen_it() {
        let labelled = |pairs: &[(&str, &str)]| Container {
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Container::default()
        };
        let named = |name: &str| AddressMode::Network(NetworkChoice::Named(name.into()));
        let allowed = |agent: &AddressMode, labels: &[(&str, &str)]| {
            let (mode, refused) = agent.for_container(&labelled(labels));
            assert_eq!(refused, None, "{labels:?}");
            mode
        };
        let refused = |agent: &AddressMode, labels: &[(&str, &str)]| {
            let (mode, refused) = agent.for_container(&labelled(labels));
            assert!(refused.is_some(), "{labels:?}");
            assert_eq!(mode, *agent, "the agent's mode applies: {labels:?}");
        };
        // An agent on the operator's network: published, or that network;
        // never another one (the default bridge is on every host).
        let agent = named("backend");
        assert_eq!(allowed(&agent, &[]), agent);
        assert_eq!(
            allowed(&agent, &[(ADDRESS_MODE_LABEL, "published")]),
            AddressMode::Published
        );
        assert_eq!(allowed(&agent, &[(NETWORK_LABEL, "backend")]), agent);
        refused(&agent, &[(NETWORK_LABEL, "bridge")]);
        refused(
            &agent,
            &[(ADDRESS_MODE_LABEL, "network"), (NETWORK_LABEL, "frontend")],
        );
        // An agent that leaves the network to each container: the label
        // says which of its networks reaches it.
        let each = AddressMode::Network(NetworkChoice::Only);
        assert_eq!(
            allowed(&each, &[(NETWORK_LABEL, "frontend")]),
            named("frontend")
        );
        refused(&each, &[(NETWORK_LABEL, "host")]);
        // The host's network only where the operator chose it.
        refused(&agent, &[(NETWORK_LABEL, "host")]);
        let host = AddressMode::Network(NetworkChoice::Host);
        assert_eq!(allowed(&host, &[(NETWORK_LABEL, "host")]), host);
        refused(&host, &[(NETWORK_LABEL, "backend")]);
        // An agent in the published mode: the network mode is not the
        // container's to choose; a network label alone changes nothing.
        let published = AddressMode::Published;
        refused(&published, &[(ADDRESS_MODE_LABEL, "network")]);
        refused(
            &published,
            &[(ADDRESS_MODE_LABEL, "network"), (NETWORK_LABEL, "host")],
        );
        assert_eq!(
            allowed(&published, &[(NETWORK_LABEL, "backend")]),
            AddressMode::Published
        );
        // Outside the grammar: the agent's mode, and a complaint that does
        // not repeat the value (the rejection quotes it, cut).
        let huge = "n".repeat(100_000);
        for bad in [
            vec![(ADDRESS_MODE_LABEL, "NETWORK!")],
            vec![(ADDRESS_MODE_LABEL, huge.as_str())],
            vec![(ADDRESS_MODE_LABEL, "network"), (NETWORK_LABEL, "a b")],
            vec![(ADDRESS_MODE_LABEL, "network"), (NETWORK_LABEL, "-x")],
            vec![(NETWORK_LABEL, "x\n")],
            vec![
                (ADDRESS_MODE_LABEL, "network"),
                (NETWORK_LABEL, &huge[..256]),
            ],
        ] {
            refused(&agent, &bad);
            let (_, why) = agent.for_container(&labelled(&bad));
            assert!(why.unwrap().len() < 200);
        }
    }

    #[test]
    fn addresses_no_other_host_reaches_are_never_offered() {
        let c = on(
            &[
                ("a", "169.254.1.2", ""),
                ("b", "127.0.0.2", "::ffff:172.18.0.9"),
                ("c", "224.0.0.1", "fe80::1"),
            ],
            &["80/tcp"],
        );
        let at = |network: &str| {
            ips(&network_endpoints(
                &c,
                &NetworkChoice::Named(network.into()),
                HOST,
                None,
            ))
        };
        assert!(at("a").is_empty());
        // A mapped address in its one (IPv4) spelling; loopback not offered.
        assert_eq!(at("b"), ["172.18.0.9 80/tcp"]);
        assert!(at("c").is_empty());
    }

    #[test]
    fn a_container_exposing_every_port_is_too_large_after_bounded_work() {
        use crate::container::Selection;
        use crate::record::{rejections, HostPrefix};
        let prefix = HostPrefix::new("/registered", HOST);
        let all: Vec<String> = (1..=65535).map(|p| format!("{p}/tcp")).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let c = Container {
            id: "c".repeat(64),
            configured_image: "web:1".into(),
            image_id: format!("sha256:{}", "1".repeat(64)),
            running: true,
            ..on(&[("backend", "172.18.0.2", "fd00::2")], &all)
        };
        let choice = NetworkChoice::Named("backend".into());
        assert_eq!(
            network_endpoints(&c, &choice, HOST, None).len(),
            MAX_ENDPOINTS
        );
        let selection = Selection {
            address_mode: AddressMode::Network(choice),
            ..Selection::default()
        };
        assert_eq!(
            crate::record::desired(&c, &selection, &prefix),
            crate::record::Desired::Nothing
        );
        let found = rejections(&c, &prefix, &selection);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "ports");
    }

    #[test]
    fn the_flags_are_checked() {
        assert_eq!(
            AddressMode::from_flags("published", None),
            Ok(AddressMode::Published)
        );
        assert_eq!(
            AddressMode::from_flags("network", Some("backend")),
            Ok(AddressMode::Network(NetworkChoice::Named("backend".into())))
        );
        assert_eq!(
            AddressMode::from_flags("network", Some("host")),
            Ok(AddressMode::Network(NetworkChoice::Host))
        );
        assert_eq!(
            AddressMode::from_flags("network", Some("")),
            Ok(AddressMode::Network(NetworkChoice::Only))
        );
        assert!(AddressMode::from_flags("published", Some("backend")).is_err());
        assert!(AddressMode::from_flags("network", Some("a/b")).is_err());
        assert!(AddressMode::from_flags("Network", None).is_err());
    }

    #[test]
    fn a_network_mode_record_carries_the_containers_own_address_and_ports() {
        use crate::record::{record_in, HostPrefix};
        let prefix = HostPrefix::new("/registered", HOST);
        let c = Container {
            id: "c".repeat(64),
            configured_image: "web:1".into(),
            image_id: format!("sha256:{}", "1".repeat(64)),
            running: true,
            ..on(&[("backend", "172.18.0.2", "")], &["8080/tcp"])
        };
        let mode = AddressMode::Network(NetworkChoice::Named("backend".into()));
        let record = record_in(&c, &prefix, &mode).expect("a record");
        assert_eq!(record.key, format!("/registered/10.0.0.5/web:1/{}", c.id));
        assert_eq!(
            record.value,
            format!(
                r#"[{{"container":"{}","image":"web:1","ip":"172.18.0.2","public_port":"8080","private_port":"8080","port_type":"tcp"}}]"#,
                c.id
            )
        );
        // The published mode of the same container: it publishes nothing.
        assert_eq!(record_in(&c, &prefix, &AddressMode::Published), None);
    }

    #[test]
    fn the_ipv6_wildcard_is_the_hosts_ipv6_address_when_there_is_one() {
        use crate::container::{PortBinding, Selection};
        use crate::record::HostPrefix;
        let prefix = HostPrefix::new("/registered", HOST);
        let binding = |host_ip: &str| PortBinding {
            private_port: "80".into(),
            protocol: "tcp".into(),
            host_ip: host_ip.into(),
            host_port: "32768".into(),
        };
        let c = Container {
            id: "c".repeat(64),
            configured_image: "web:1".into(),
            image_id: format!("sha256:{}", "1".repeat(64)),
            running: true,
            bindings: vec![binding("0.0.0.0"), binding("::")],
            ..Container::default()
        };
        // Through `desired`, the agent's own path, which once lost
        // --host-ip6 on the way.
        let ips = |selection: &Selection| {
            let crate::record::Desired::Registered(record) =
                crate::record::desired(&c, selection, &prefix)
            else {
                panic!("a record");
            };
            crate::record::Endpoint::decode(record.value.as_bytes())
                .unwrap()
                .iter()
                .map(|e| e.ip.to_string())
                .collect::<Vec<_>>()
        };
        // Without --host-ip6 both wildcards are --host-ip: one binding, as
        // the records always were.
        assert_eq!(ips(&Selection::default()), ["10.0.0.5"]);
        let v6 = Selection {
            host_ip6: Some("2001:db8::5".parse().unwrap()),
            ..Selection::default()
        };
        assert_eq!(ips(&v6), ["10.0.0.5", "2001:db8::5"]);
    }

    #[test]
    fn a_bad_address_label_is_a_rejection() {
        use crate::record::{rejections, HostPrefix};
        let prefix = HostPrefix::new("/registered", HOST);
        let c = Container {
            id: "c".repeat(64),
            configured_image: "web:1".into(),
            image_id: format!("sha256:{}", "1".repeat(64)),
            labels: [(NETWORK_LABEL.to_owned(), "a b\n".to_owned())].into(),
            ..Container::default()
        };
        let found = rejections(&c, &prefix, &crate::container::Selection::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "address_label");
        assert!(
            !found[0].value.contains('\n'),
            "quoted: {:?}",
            found[0].value
        );
    }
}
