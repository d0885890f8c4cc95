//! The records an agent must hold, in the agent's own record format
//! (`record::RecordKey`, `record::Endpoint`), computed from what the engine
//! says.

use std::collections::{BTreeMap, BTreeSet};

use docker_etcd_register::record::{Endpoint, RecordKey};

use super::{Engine, IMAGE};

/// The exact value the agent must write: a compact JSON array with one object
/// per binding `(ip, public_port, private_port, port_type)`, in the given
/// order, in the record format the agent itself defines (`record::Endpoint`,
/// whose exact bytes its unit tests pin down).
pub fn expected_value(id: &str, image: &str, bindings: &[(&str, &str, &str, &str)]) -> String {
    let endpoints: Vec<Endpoint> = bindings
        .iter()
        .map(|(ip, public, private, proto)| Endpoint {
            container: (*id).into(),
            image: image.into(),
            ip: (*ip).into(),
            public_port: (*public).into(),
            private_port: (*private).into(),
            port_type: (*proto).into(),
        })
        .collect();
    Endpoint::encode(&endpoints)
}

/// The key of a record under the default root `/registered/`.
pub fn record_key(host_ip: &str, image: &str, id: &str) -> String {
    RecordKey {
        root: "/registered/",
        host: host_ip,
        service: image,
        container: id,
    }
    .to_string()
}

/// [`expected_records_on`] Docker.
pub fn expected_records(host_ip: &str, label: &str) -> BTreeMap<String, String> {
    expected_records_on(Engine::Docker, host_ip, label)
}

/// The `{image}` of a container of the test image, from its `Config.Image`.
fn record_image(engine: Engine, configured: &str) -> &'static str {
    match (engine, configured) {
        (Engine::Docker, "busybox" | "busybox:latest") => IMAGE,
        (Engine::Podman, "localhost/busybox" | "localhost/busybox:latest") => engine.record_image(),
        (_, other) => panic!(
            "expected_records knows only {} on {}, not {other}",
            engine.image(),
            engine.name()
        ),
    }
}

/// The exact records an agent with host IP `host_ip`, prefix `/registered`
/// and `--require-label <label>` must hold now, computed from the engine: one
/// per running container carrying the label and publishing a port, its value
/// sorted and with wildcards collapsed as README.md ("What is written") says.
/// The containers must have been started from the engine's test image
/// (`Engine::image`).
pub fn expected_records_on(engine: Engine, host_ip: &str, label: &str) -> BTreeMap<String, String> {
    let cli = |args: &[&str]| engine.cli_out(args);
    let filter = format!("label={label}");
    let ids: Vec<String> = cli(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &filter,
        "--filter",
        "status=running",
    ])
    .lines()
    .map(str::to_string)
    .collect();
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let mut args = vec!["inspect"];
    args.extend(ids.iter().map(String::as_str));
    let inspected: serde_json::Value = serde_json::from_str(&cli(&args)).unwrap();
    let mut expected = BTreeMap::new();
    for container in inspected.as_array().expect("docker inspect array") {
        let id = container["Id"].as_str().expect("Id");
        if container["State"]["Running"] != serde_json::Value::Bool(true) {
            continue;
        }
        let image = record_image(
            engine,
            container["Config"]["Image"].as_str().expect("Config.Image"),
        );
        // (private port, protocol, ip, public port)
        let mut objects: BTreeSet<(u32, String, String, u32)> = BTreeSet::new();
        let ports = &container["NetworkSettings"]["Ports"];
        for (port, list) in ports.as_object().into_iter().flatten() {
            let (private, proto) = port.split_once('/').expect("port/proto");
            for b in list.as_array().into_iter().flatten() {
                let ip = b["HostIp"].as_str().unwrap_or_default();
                let ip = match ip {
                    "" | "0.0.0.0" | "::" => host_ip,
                    ip => ip,
                };
                let public = b["HostPort"].as_str().expect("HostPort");
                objects.insert((
                    private.parse().unwrap(),
                    proto.to_string(),
                    ip.to_string(),
                    public.parse().unwrap(),
                ));
            }
        }
        if objects.is_empty() {
            continue;
        }
        let strings: Vec<(String, String, String, String)> = objects
            .into_iter()
            .map(|(private, proto, ip, public)| {
                (ip, public.to_string(), private.to_string(), proto)
            })
            .collect();
        let bindings: Vec<(&str, &str, &str, &str)> = strings
            .iter()
            .map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str()))
            .collect();
        expected.insert(
            record_key(host_ip, image, id),
            expected_value(id, image, &bindings),
        );
    }
    expected
}
