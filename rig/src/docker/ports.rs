//! The published bindings of containers as their engine's `inspect` reports
//! them (`NetworkSettings.Ports`), the ground truth the records must match.

use std::collections::BTreeMap;

use super::Engine;

/// The IPv4 wildcard address a port published without an address binds.
const WILDCARD: &str = "0.0.0.0";

/// One published binding of a container as its engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// As the engine reports it: `0.0.0.0`, `::` or an address of the host.
    pub host_ip: String,
    /// The port on the host, a number as text.
    pub host_port: String,
    /// `80/tcp`
    pub port: String,
}

/// The bindings of one container's `NetworkSettings.Ports`.
fn parse_ports(ports: &serde_json::Value) -> Vec<Binding> {
    let mut out = Vec::new();
    for (port, list) in ports.as_object().into_iter().flatten() {
        for b in list.as_array().into_iter().flatten() {
            out.push(Binding {
                host_ip: b["HostIp"].as_str().unwrap_or_default().to_string(),
                host_port: b["HostPort"].as_str().unwrap_or_default().to_string(),
                port: port.clone(),
            });
        }
    }
    out
}

impl Engine {
    /// The published bindings of a container, per `inspect`.
    pub fn bindings(self, id: &str) -> Vec<Binding> {
        let json = self.cli_out(&["inspect", "--format", "{{json .NetworkSettings.Ports}}", id]);
        let ports: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{} inspect of {id}: {e}: {json}", self.cli()));
        parse_ports(&ports)
    }

    /// The bindings of many containers in one `inspect`: id -> bindings.
    pub fn bindings_of(self, ids: &[String]) -> BTreeMap<String, Vec<Binding>> {
        if ids.is_empty() {
            return BTreeMap::new();
        }
        let mut args = vec!["inspect"];
        args.extend(ids.iter().map(String::as_str));
        let json = self.cli_out(&args);
        let inspected: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{} inspect: {e}: {json}", self.cli()));
        inspected
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let id = c["Id"].as_str().expect("inspect has an Id").to_string();
                (id, parse_ports(&c["NetworkSettings"]["Ports"]))
            })
            .collect()
    }

    /// The host port published for `port` (`80/tcp`) on `host_ip`; asked
    /// for `0.0.0.0`, the IPv4 wildcard binding, which Podman reports with an
    /// empty `HostIp` (and without Docker's `::` twin).
    pub fn host_port(self, id: &str, port: &str, host_ip: &str) -> String {
        let all = self.bindings(id);
        let wildcard = |ip: &str| ip == WILDCARD || ip.is_empty();
        all.iter()
            .find(|b| {
                b.port == port
                    && (b.host_ip == host_ip || (host_ip == WILDCARD && wildcard(&b.host_ip)))
            })
            .unwrap_or_else(|| panic!("{id} has no binding {host_ip} -> {port}: {all:?}"))
            .host_port
            .clone()
    }
}

/// The published bindings of a container from `docker inspect`.
pub fn bindings(id: &str) -> Vec<Binding> {
    Engine::Docker.bindings(id)
}

/// The host port Docker published for `port` (`80/tcp`) on `host_ip`.
pub fn host_port(id: &str, port: &str, host_ip: &str) -> String {
    Engine::Docker.host_port(id, port, host_ip)
}
