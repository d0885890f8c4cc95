//! A record read back from etcd, parsed into what an agent writes (docs/security.md
//! "Trust boundary"): whoever can write under the root can write anything,
//! and every consumer's configuration is made of these values, so `list` and
//! `render` hold records only in this form. An address is kept in its
//! canonical form, so that one address has one spelling (`FD00::1` and
//! `fd00::1`, `::ffff:10.0.0.1` and `10.0.0.1` are one server).

use std::net::IpAddr;

use super::field::{ContainerId, PortNumber, Protocol};
use super::{offerable, Endpoint, Name, RecordKey};

/// One record: its key's segments and its bindings, each checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The key's host segment: the `--host-ip` of the agent that wrote it.
    pub host: IpAddr,
    /// The key's service segment.
    pub service: Name,
    /// The key's container segment, which every binding names too.
    pub container: ContainerId,
    /// The record's bindings, in its order.
    pub bindings: Vec<StoredBinding>,
}

/// One binding of a [`StoredRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBinding {
    /// The record's image (`/` as `::`).
    pub image: Name,
    /// Where it is reached: offerable through the record's host.
    pub ip: IpAddr,
    /// Its port on the host.
    pub public_port: PortNumber,
    /// The container's port it forwards to.
    pub private_port: PortNumber,
    pub protocol: Protocol,
}

/// A record's key segments, parsed: what a consumer can know of a record
/// from its key alone (a deletion carries no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The host segment, canonical.
    pub host: IpAddr,
    pub service: Name,
    pub container: ContainerId,
}

impl StoredKey {
    /// The segments of `key`, or why they are no record's.
    pub fn parse(key: &RecordKey) -> Result<Self, &'static str> {
        let host: IpAddr = key
            .host
            .parse()
            .map_err(|_| "its host segment is not an IP address")?;
        let service =
            Name::parse(key.service).map_err(|_| "its service segment is not a service name")?;
        let container = ContainerId::parse(key.container)
            .ok_or("its container segment is not a container id")?;
        Ok(Self {
            host: host.to_canonical(),
            service,
            container,
        })
    }
}

impl StoredRecord {
    /// The record of `key` and its `value`, or why it is none (for a WARN
    /// that names the key).
    pub fn parse(key: &RecordKey, value: &[u8]) -> Result<Self, &'static str> {
        let StoredKey {
            host,
            service,
            container,
        } = StoredKey::parse(key)?;
        let endpoints =
            Endpoint::decode(value).map_err(|_| "its value is not a JSON array of bindings")?;
        let bindings = endpoints
            .iter()
            .map(|endpoint| binding(host, &container, endpoint))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            host,
            service,
            container,
            bindings,
        })
    }
}

/// One binding of a record's value, if it is what an agent writes.
fn binding(
    host: IpAddr,
    container: &ContainerId,
    endpoint: &Endpoint,
) -> Result<StoredBinding, &'static str> {
    if endpoint.container != container.as_str() {
        return Err("a binding names another container than its key");
    }
    let image =
        Name::parse(&endpoint.image).map_err(|_| "a binding's image is not an image name")?;
    let ip: IpAddr = endpoint
        .ip
        .parse()
        .map_err(|_| "a binding's ip is not an IP address")?;
    if !offerable(ip, host) {
        return Err("a binding's ip is loopback, unspecified or multicast");
    }
    let port = |text: &str| PortNumber::parse(text).ok_or("a binding's port is not a port");
    Ok(StoredBinding {
        image,
        ip: ip.to_canonical(),
        public_port: port(&endpoint.public_port)?,
        private_port: port(&endpoint.private_port)?,
        protocol: Protocol::parse(&endpoint.port_type)
            .ok_or("a binding's port_type is not tcp, udp or sctp")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/registered/";

    fn parse(key: &str, value: &str) -> Result<StoredRecord, &'static str> {
        StoredRecord::parse(&RecordKey::parse(ROOT, key).unwrap(), value.as_bytes())
    }

    fn value(ip: &str, public: &str, container: &str) -> String {
        format!(
            r#"[{{"container":"{container}","image":"web:1","ip":"{ip}","public_port":"{public}","private_port":"80","port_type":"tcp"}}]"#
        )
    }

    #[test]
    fn one_address_has_one_spelling() {
        let id = "a".repeat(64);
        for (host, ip, canonical_host, canonical_ip) in [
            ("10.0.0.1", "::ffff:10.0.0.1", "10.0.0.1", "10.0.0.1"),
            ("FD00::1", "FD00:0:0::2", "fd00::1", "fd00::2"),
            ("::ffff:10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"),
        ] {
            let key = format!("{ROOT}{host}/web/{id}");
            let record = parse(&key, &value(ip, "8080", &id)).unwrap();
            assert_eq!(record.host.to_string(), canonical_host);
            assert_eq!(record.bindings[0].ip.to_string(), canonical_ip);
        }
    }

    #[test]
    fn anything_an_agent_does_not_write_is_no_record() {
        let id = "a".repeat(64);
        let key = format!("{ROOT}10.0.0.1/web/{id}");
        let good = value("10.0.0.1", "8080", &id);
        assert!(parse(&key, &good).is_ok());
        let cases = [
            (format!("{ROOT}host/web/{id}"), good.clone()),
            (format!("{ROOT}10.0.0.1/we%0Ab/{id}"), good.clone()),
            (format!("{ROOT}10.0.0.1/web/{}", &id[..12]), good.clone()),
            (key.clone(), value("10.0.0.1", "8080", &"b".repeat(64))),
            (key.clone(), value("127.0.0.1", "8080", &id)),
            (key.clone(), value("::ffff:127.0.0.1", "8080", &id)),
            (key.clone(), value("0.0.0.0", "8080", &id)),
            (key.clone(), value("10.0.0.1", "080", &id)),
            (key.clone(), value("10.0.0.1", "0", &id)),
            (key.clone(), good.replace("tcp", "TCP")),
            (key.clone(), good.replace("web:1", "web\n1")),
            (key.clone(), "{}".to_owned()),
        ];
        for (key, value) in cases {
            assert!(parse(&key, &value).is_err(), "{key} {value}");
        }
    }
}
