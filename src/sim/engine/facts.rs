//! What an inspect reports of a simulated container.

use std::collections::BTreeMap;

use super::{Kind, SimContainer};
use crate::container::{Container, Health, PortBinding, IGNORE_LABEL};

/// What an inspect reports of a container now.
pub(super) fn facts(id: &str, c: &SimContainer) -> Container {
    let ports: &[u32] = match c.kind {
        Kind::Web | Kind::Checked | Kind::Ignored => &[80],
        Kind::Pair => &[80, 443],
        Kind::Silent => &[],
        Kind::Wide => &WIDE_PORTS,
    };
    let published = c.running && c.networked;
    let bindings = ports
        .iter()
        .filter(|_| published)
        .enumerate()
        .map(|(n, private)| PortBinding {
            private_port: private.to_string(),
            protocol: "tcp".into(),
            host_ip: "0.0.0.0".into(),
            // Always a port (1024-65023), as the engine reports them.
            host_port: (1024 + (c.host_port + 1000 * n as u32) % 64_000).to_string(),
        })
        .collect();
    let mut labels = BTreeMap::new();
    if c.kind == Kind::Ignored {
        labels.insert(IGNORE_LABEL.to_owned(), "true".to_owned());
    }
    Container {
        id: id.to_owned(),
        configured_image: format!("sim/{:?}:1", c.kind).to_ascii_lowercase(),
        image_id: format!("sha256:{:064x}", c.kind as u64 + 1),
        labels,
        running: c.running,
        paused: c.paused,
        health: match c.health {
            Health::NoCheck => Health::NoCheck,
            health if c.running => health,
            _ => Health::NoCheck,
        },
        bindings,
        network_mode: Default::default(),
        networks: Vec::new(),
        exposed: Vec::new(),
        stop_signal: None,
        stop_timeout: Default::default(),
    }
}

/// The private ports of a [`Kind::Wide`] container.
const WIDE_PORTS: [u32; 64] = {
    let mut ports = [0; 64];
    let mut i = 0;
    while i < 64 {
        ports[i] = 8000 + i as u32;
        i += 1;
    }
    ports
};
