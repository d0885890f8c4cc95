//! The networking facts of an inspect (docs/records.md: Addresses): the network
//! mode, the attachments (`NetworkSettings.Networks` only: API 1.52 drops the
//! top-level `IPAddress` and `GlobalIPv6Address`) and the exposed ports, as
//! Docker and Podman's compatible API report them alike.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{EndpointSettings, PortMap};

use crate::container::{Attachment, ExposedPort, NetworkMode};

/// The attachments, by network name (the order of a name sort, so that a
/// record does not depend on a map's order).
pub(super) fn attachments(networks: Option<HashMap<String, EndpointSettings>>) -> Vec<Attachment> {
    let mut attachments: Vec<Attachment> = networks
        .unwrap_or_default()
        .into_iter()
        .map(|(network, endpoint)| {
            Attachment::from_engine(
                &network,
                endpoint.ip_address.as_deref().unwrap_or_default(),
                endpoint.global_ipv6_address.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    attachments.sort_by(|a, b| a.network.cmp(&b.network));
    attachments
}

/// The ports a container serves on: `Config.ExposedPorts` and every key of
/// `NetworkSettings.Ports` (a `-p` of a port the image does not expose),
/// each once, in order; what does not parse is left out.
pub(super) fn exposed(config: Option<&[String]>, ports: Option<&PortMap>) -> Vec<ExposedPort> {
    let declared = config.unwrap_or_default().iter();
    let mapped = ports.into_iter().flat_map(|ports| ports.keys());
    declared
        .chain(mapped)
        .filter_map(|text| ExposedPort::from_engine(text))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `HostConfig.NetworkMode`, absent as a network of its own.
pub(super) fn network_mode(text: Option<&str>) -> NetworkMode {
    text.map_or(NetworkMode::Own, NetworkMode::from_engine)
}
