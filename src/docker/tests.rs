//! Unit tests of the Docker adapter's translations, on answers recorded from
//! dockerd 20.10 and Podman 4.3.

use super::*;
use crate::engine::EventKind;

const CONTAINER_ID: &str = "4a5202296e8cd40d576f422beefc5f36da420270e566d7c6b26fd5babb633467";
const NETWORK_ID: &str = "4daf07e404a4461687223b599970919f8a1f2af738dc29ebecec919df81aef7d";

/// An event as dockerd 20.10 sends it for a container.
fn container_message(action: &str) -> EventMessage {
    serde_json::from_value(serde_json::json!({
        "status": action, "id": CONTAINER_ID, "from": "busybox",
        "Type": "container", "Action": action,
        "Actor": {"ID": CONTAINER_ID, "Attributes": {"image": "busybox", "name": "web"}},
        "scope": "local", "time": 1795681119, "timeNano": 1795681119500339848_i64,
    }))
    .unwrap()
}

/// An event as dockerd 20.10 sends it for `docker network connect` /
/// `disconnect`: the actor is the network, the container an attribute.
fn network_message(action: &str) -> EventMessage {
    serde_json::from_value(serde_json::json!({
        "Type": "network", "Action": action,
        "Actor": {"ID": NETWORK_ID, "Attributes": {
            "container": CONTAINER_ID, "name": "bridge", "type": "bridge",
        }},
        "scope": "local", "time": 1795681119, "timeNano": 1795681119942006390_i64,
    }))
    .unwrap()
}

fn mapped(message: EventMessage) -> Option<(EventKind, &'static str)> {
    container_event(message, Dialect::Docker).map(|event| {
        assert_eq!(event.container_id, CONTAINER_ID);
        (event.kind(), event.action.as_str())
    })
}

#[test]
fn container_actions() {
    let cases = [
        ("start", EventKind::Started, "start"),
        ("pause", EventKind::Changed, "pause"),
        ("unpause", EventKind::Changed, "unpause"),
        ("die", EventKind::Stopped, "die"),
        ("destroy", EventKind::Stopped, "destroy"),
        (
            "health_status: healthy",
            EventKind::Changed,
            "health_status",
        ),
    ];
    for (action, kind, label) in cases {
        assert_eq!(
            mapped(container_message(action)),
            Some((kind, label)),
            "{action}"
        );
    }
    assert_eq!(mapped(container_message("create")), None);
}

#[test]
fn a_kill_names_its_signal_and_one_without_is_ignored() {
    // As dockerd 20.10 sends it for `docker stop` (then `docker kill`).
    let kill = |attributes: serde_json::Value| -> EventMessage {
        serde_json::from_value(serde_json::json!({
            "Type": "container", "Action": "kill",
            "Actor": {"ID": CONTAINER_ID, "Attributes": attributes},
            "time": 1795681119, "timeNano": 1795681119500339848_i64,
        }))
        .unwrap()
    };
    let term = serde_json::json!({"image": "busybox", "name": "web", "signal": "15"});
    assert_eq!(mapped(kill(term)), Some((EventKind::Signalled(15), "kill")));
    let hup = serde_json::json!({"signal": "1"});
    assert_eq!(mapped(kill(hup)), Some((EventKind::Signalled(1), "kill")));
    let none = serde_json::json!({"image": "busybox"});
    assert_eq!(mapped(kill(none)), None, "Podman's kill names no signal");
}

#[test]
fn network_connect_and_disconnect_reinspect_the_container_they_name() {
    assert_eq!(
        mapped(network_message("connect")),
        Some((EventKind::Changed, "connect"))
    );
    assert_eq!(
        mapped(network_message("disconnect")),
        Some((EventKind::Changed, "disconnect"))
    );
}

#[test]
fn other_network_events_are_not_about_a_container() {
    // A removed network's `destroy` passes the action filter.
    assert_eq!(
        container_event(network_message("destroy"), Dialect::Docker),
        None
    );
    let mut without_container = network_message("disconnect");
    without_container.actor.as_mut().unwrap().attributes = None;
    assert_eq!(container_event(without_container, Dialect::Docker), None);
}

#[test]
fn a_paused_container_is_running_and_paused() {
    let inspect = |running: bool, paused: bool| {
        let response = serde_json::from_value(serde_json::json!({
            "Id": CONTAINER_ID,
            "State": {"Status": "paused", "Running": running, "Paused": paused},
            "NetworkSettings": {"Ports": {
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}],
            }},
        }))
        .unwrap();
        container_from(response).unwrap()
    };
    let paused = inspect(true, true);
    assert!(paused.running && paused.paused);
    assert_eq!(paused.bindings.len(), 1);
    assert!(!inspect(true, false).paused);
}

/// An event as Podman 4.3's compat stream sends it (observed on
/// /run/podman/podman.sock): the actor is the container for network events
/// too, and a health event's verdict sits outside `Action`.
fn podman_message(typ: &str, action: &str) -> EventMessage {
    serde_json::from_value(serde_json::json!({
        "status": action, "id": CONTAINER_ID, "from": "localhost/busybox:latest",
        "Type": typ, "Action": action,
        "Actor": {"ID": CONTAINER_ID, "Attributes": {
            "containerExitCode": "0", "image": "localhost/busybox:latest",
            "name": "web", "podId": "",
        }},
        "scope": "local", "time": 1795690907, "timeNano": 1795690907256567995_i64,
        "HealthStatus": "starting",
    }))
    .unwrap()
}

fn podman_mapped(typ: &str, action: &str) -> Option<(EventKind, &'static str)> {
    container_event(podman_message(typ, action), Dialect::Podman).map(|event| {
        assert_eq!(event.container_id, CONTAINER_ID);
        (event.kind(), event.action.as_str())
    })
}

#[test]
fn podman_events_in_the_seams_words() {
    let cases = [
        ("container", "start", EventKind::Started, "start"),
        ("container", "die", EventKind::Stopped, "die"),
        ("container", "remove", EventKind::Stopped, "destroy"),
        ("container", "pause", EventKind::Changed, "pause"),
        (
            "container",
            "health_status",
            EventKind::Changed,
            "health_status",
        ),
        ("network", "connect", EventKind::Changed, "connect"),
        ("network", "disconnect", EventKind::Changed, "disconnect"),
    ];
    for (typ, action, kind, label) in cases {
        assert_eq!(podman_mapped(typ, action), Some((kind, label)), "{action}");
    }
    for ignored in ["cleanup", "init", "exec_died"] {
        assert_eq!(podman_mapped("container", ignored), None, "{ignored}");
    }
}

fn inspect(json: serde_json::Value) -> Container {
    container_from(serde_json::from_value(json).unwrap()).unwrap()
}

#[test]
fn a_pod_member_publishes_nothing_of_its_own() {
    let ports = serde_json::json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "39039"}]});
    let infra = inspect(serde_json::json!({
        "Id": CONTAINER_ID, "State": {"Running": true},
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Ports": ports},
    }));
    assert_eq!(infra.bindings.len(), 1);
    let member = inspect(serde_json::json!({
        "Id": CONTAINER_ID, "State": {"Running": true},
        "HostConfig": {"NetworkMode": format!("container:{NETWORK_ID}")},
        "NetworkSettings": {"Ports": ports},
    }));
    assert!(member.bindings.is_empty());
}

#[test]
fn podman_wildcard_binding_has_an_empty_host_ip() {
    let container = inspect(serde_json::json!({
        "Id": CONTAINER_ID, "State": {"Running": true},
        "NetworkSettings": {"Ports": {"81/tcp": [{"HostIp": "", "HostPort": "36117"}]}},
    }));
    assert_eq!(container.bindings[0].host_ip, "");
    assert_eq!(container.bindings[0].host_port, "36117");
}

#[test]
fn a_health_verdict_counts_once_stored_after_its_event() {
    let with_log = |end: &str| -> bollard::models::ContainerInspectResponse {
        serde_json::from_value(serde_json::json!({
            "Id": CONTAINER_ID,
            "State": {"Running": true, "Health": {"Status": "healthy", "FailingStreak": 0,
                "Log": [{"Start": "2026-11-26T11:01:47.2Z", "End": end, "ExitCode": 0}]}},
        }))
        .unwrap()
    };
    let announced = 1_795_690_907_256_567_995;
    assert!(health::verdict_stored(
        &with_log("2026-11-26T11:01:47.3Z"),
        announced
    ));
    assert!(!health::verdict_stored(
        &with_log("2026-11-26T11:01:47.1Z"),
        announced
    ));
    let no_log = serde_json::from_value(serde_json::json!({"Id": CONTAINER_ID})).unwrap();
    assert!(!health::verdict_stored(&no_log, announced));
}

#[test]
fn networks_addresses_and_exposed_ports_are_read_from_the_inspect() {
    use crate::container::{ExposedPort, NetworkMode};
    let container = inspect(serde_json::json!({
        "Id": CONTAINER_ID, "State": {"Running": true},
        "Config": {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "bogus": {}}},
        "HostConfig": {"NetworkMode": "backend"},
        "NetworkSettings": {
            // The top-level fields API 1.52 drops are never read.
            "IPAddress": "10.9.9.9",
            "Ports": {"8080/tcp": null, "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}]},
            "Networks": {
                "frontend": {"IPAddress": "172.19.0.3", "GlobalIPv6Address": ""},
                "backend": {"IPAddress": "172.18.0.2", "GlobalIPv6Address": "fd00::2"},
            },
        },
    }));
    assert_eq!(container.network_mode, NetworkMode::Own);
    let names: Vec<&str> = container
        .networks
        .iter()
        .map(|a| a.network.as_str())
        .collect();
    assert_eq!(names, ["backend", "frontend"]);
    assert_eq!(
        container.networks[0].ipv4,
        Some("172.18.0.2".parse().unwrap())
    );
    assert_eq!(container.networks[0].ipv6, Some("fd00::2".parse().unwrap()));
    assert_eq!(container.networks[1].ipv6, None);
    let exposed: Vec<ExposedPort> = ["53/udp", "80/tcp", "8080/tcp"]
        .iter()
        .map(|p| ExposedPort::from_engine(p).unwrap())
        .collect();
    let mut sorted = container.exposed.clone();
    sorted.sort();
    assert_eq!(container.exposed, sorted);
    assert_eq!(container.exposed.len(), 3);
    for port in exposed {
        assert!(container.exposed.contains(&port), "{port:?}");
    }
    let host = inspect(serde_json::json!({
        "Id": CONTAINER_ID, "State": {"Running": true},
        "HostConfig": {"NetworkMode": "host"},
        "NetworkSettings": {"Networks": {"host": {"IPAddress": ""}}},
    }));
    assert_eq!(host.network_mode, NetworkMode::Host);
    assert_eq!(host.networks[0].ipv4, None);
}
