//! How a container is networked, as the engine reports it and as parsed at
//! the edge (docs/records.md: Addresses): its network mode, the networks it is
//! attached to with its addresses there, and the ports it exposes. Only the
//! engine adapter builds these; an address or port that does not parse is
//! left out there, so nothing here can hold a bad value.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::record::{PortNumber, Protocol};

/// `HostConfig.NetworkMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// Its own network namespace, on a bridge or user-defined network
    /// (`bridge`, `default`, a network's name or id).
    #[default]
    Own,
    /// The host's network (`--network host`): it publishes nothing, and
    /// serves on the host's addresses.
    Host,
    /// Another container's network namespace (`container:ID`, a Podman pod
    /// member): the owner of the namespace has the record.
    Shared,
    /// No network at all (`none`).
    None,
}

impl NetworkMode {
    /// The engine's text: `host`, `none`, `container:…`, anything else a
    /// network of its own.
    pub fn from_engine(text: &str) -> Self {
        match text {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            shared if shared.starts_with("container:") => NetworkMode::Shared,
            _ => NetworkMode::Own,
        }
    }
}

/// One network a container is attached to (`NetworkSettings.Networks`),
/// with its addresses there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The network's name, as `docker network ls` shows it.
    pub network: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Attachment {
    /// Its addresses, IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        [self.ipv4.map(Into::into), self.ipv6.map(Into::into)]
            .into_iter()
            .flatten()
    }

    /// The engine's fields, parsed: an empty or unparsable address is none.
    pub fn from_engine(network: &str, ipv4: &str, ipv6: &str) -> Self {
        Attachment {
            network: network.to_owned(),
            ipv4: ipv4
                .parse()
                .ok()
                .filter(|ip: &Ipv4Addr| !ip.is_unspecified()),
            ipv6: ipv6
                .parse()
                .ok()
                .filter(|ip: &Ipv6Addr| !ip.is_unspecified()),
        }
    }
}

/// A port the container serves on (`Config.ExposedPorts`, and the keys of
/// `NetworkSettings.Ports`, published or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExposedPort {
    pub port: PortNumber,
    pub protocol: Protocol,
}

impl ExposedPort {
    /// `"80/tcp"` (a port without a protocol is TCP); `None` for anything
    /// else.
    pub fn from_engine(text: &str) -> Option<Self> {
        let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
        Some(ExposedPort {
            port: PortNumber::parse(port)?,
            protocol: Protocol::parse(protocol)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_mode_is_read_from_the_engines_text() {
        assert_eq!(NetworkMode::from_engine("host"), NetworkMode::Host);
        assert_eq!(NetworkMode::from_engine("none"), NetworkMode::None);
        assert_eq!(
            NetworkMode::from_engine("container:abc"),
            NetworkMode::Shared
        );
        for own in ["bridge", "default", "backend", "", "Host"] {
            assert_eq!(NetworkMode::from_engine(own), NetworkMode::Own, "{own:?}");
        }
    }

    #[test]
    fn addresses_that_do_not_parse_are_none() {
        let a = Attachment::from_engine("backend", "172.18.0.2", "fd00::2");
        assert_eq!(a.ipv4, Some(Ipv4Addr::new(172, 18, 0, 2)));
        assert_eq!(a.ipv6, Some("fd00::2".parse().unwrap()));
        let empty = Attachment::from_engine("backend", "", "");
        assert_eq!((empty.ipv4, empty.ipv6), (None, None));
        let hostile = Attachment::from_engine("x", "172.18.0.2\n", "0.0.0.0");
        assert_eq!((hostile.ipv4, hostile.ipv6), (None, None));
        let unspecified = Attachment::from_engine("x", "0.0.0.0", "::");
        assert_eq!((unspecified.ipv4, unspecified.ipv6), (None, None));
    }

    #[test]
    fn exposed_ports_are_port_and_protocol() {
        let tcp80 = ExposedPort::from_engine("80/tcp").unwrap();
        assert_eq!(tcp80.port, PortNumber::parse("80").unwrap());
        assert_eq!(tcp80.protocol, Protocol::Tcp);
        assert_eq!(
            ExposedPort::from_engine("53"),
            ExposedPort::from_engine("53/tcp")
        );
        assert_eq!(
            ExposedPort::from_engine("53/udp").map(|p| p.protocol),
            Some(Protocol::Udp)
        );
        for bad in [
            "0/tcp",
            "65536/tcp",
            "80/icmp",
            "80/",
            "/tcp",
            "eighty/tcp",
            "",
        ] {
            assert_eq!(ExposedPort::from_engine(bad), None, "{bad:?}");
        }
    }
}
