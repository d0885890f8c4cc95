//! Address modes (docs/records.md: Addresses), against the real engine: in the
//! network mode a container on a user-defined network is registered with
//! its own address there and its exposed port, nothing published.

mod common;

use common::lb::*;
use common::podman::podman_host;
use common::*;
use rig::docker::Engine;

/// A user-defined bridge network of one engine for one test, removed when
/// dropped (after the test's containers, which are declared after it).
struct Network(String, Engine);

impl Network {
    fn create(name: &str) -> Network {
        Network::create_on(Engine::Docker, name)
    }

    fn create_on(engine: Engine, name: &str) -> Network {
        Network::create_with(engine, name, &[])
    }

    fn create_with(engine: Engine, name: &str, extra: &[&str]) -> Network {
        let mut args = vec![
            "network",
            "create",
            "--label",
            "docker-etcd-register.test=1",
        ];
        args.extend_from_slice(extra);
        args.push(name);
        engine.cli_out(&args);
        Network(name.to_owned(), engine)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.1.try_cli(&["network", "rm", &self.0]);
    }
}

on_each_engine!(
    on_two_networks_the_named_one_is_chosen,
    a_dual_stack_container_is_registered_on_both_addresses,
    a_macvlan_container_is_registered_with_its_macvlan_address,
);

/// Docker only: Podman 4.3 keeps no exposed port of a container on the
/// host's network (its inspect reports none), so there is nothing to
/// register there (docs/records.md: Addresses).
#[test]
fn a_host_network_container_is_registered_on_the_host_ip_by_docker() {
    a_host_network_container_is_registered_on_the_host_ip(Engine::Docker);
}

/// A letter per engine, so that the two runs of one test name their
/// networks and links apart.
fn tag(engine: Engine) -> &'static str {
    match engine {
        Engine::Docker => "d",
        Engine::Podman => "p",
    }
}

/// A number per engine, so that the two runs of one test use subnets apart.
fn apart(engine: Engine) -> u32 {
    match engine {
        Engine::Docker => 0,
        Engine::Podman => 1,
    }
}

/// The container's address on `network`, per the engine's `inspect`.
fn address_on(engine: Engine, id: &str, network: &str) -> String {
    let template = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    engine.cli_out(&["inspect", "-f", &template, id])
}

/// A record of one TCP port on `ip`, as the network mode writes it.
fn one_port(id: &str, image: &str, ip: &str, port: u16) -> String {
    format!(
        r#"[{{"container":"{id}","image":"{image}","ip":"{ip}","public_port":"{port}","private_port":"{port}","port_type":"tcp"}}]"#
    )
}

fn on_two_networks_the_named_one_is_chosen(engine: Engine) {
    let pid = std::process::id();
    let (front, back) = (
        Network::create_on(engine, &format!("der-front-{}{pid}", tag(engine))),
        Network::create_on(engine, &format!("der-back-{}{pid}", tag(engine))),
    );
    let env = TestEnv::on(engine, "addresses_two");
    let _agent = env.start_agent(&["--address-mode", "network", "--network", &back.0]);
    let id = env.containers.run(&[
        "--network",
        &front.0,
        "--expose",
        "8080",
        env.image(),
        "sleep",
        "1000",
    ]);
    engine.cli_out(&["network", "connect", &back.0, &id]);
    let ip = address_on(engine, &id, &back.0);
    let record = env.wait_key(REACT, &env.key(env.record_image(), &id));
    assert_eq!(record.value, one_port(&id, env.record_image(), &ip, 8080));
    assert_ne!(ip, address_on(engine, &id, &front.0));
    // It leaves the chosen network: its record goes.
    engine.cli_out(&["network", "disconnect", &back.0, &id]);
    env.wait_gone(REACT, &env.key(env.record_image(), &id));
}

/// With `--network host`, a container on the host's network is registered
/// with its exposed ports on `--host-ip`.
fn a_host_network_container_is_registered_on_the_host_ip(engine: Engine) {
    let env = TestEnv::on(engine, "addresses_host");
    let _agent = env.start_agent(&["--address-mode", "network", "--network", "host"]);
    let port = rig::ports::next_run(1);
    let id = env.containers.run(&[
        "--network",
        "host",
        "--expose",
        &port.to_string(),
        env.image(),
        "sleep",
        "1000",
    ]);
    let record = env.wait_key(REACT, &env.key(env.record_image(), &id));
    assert_eq!(
        record.value,
        one_port(&id, env.record_image(), &env.host_ip, port)
    );
}

#[test]
fn the_network_mode_registers_the_containers_own_address_on_the_named_network() {
    let name = format!("der-{}", std::process::id());
    let network = Network::create(&name);
    let env = TestEnv::new("addresses_network");
    let _agent = env.start_agent(&["--address-mode", "network", "--network", &network.0]);
    let id = env.containers.run(&[
        "--network",
        &network.0,
        "--expose",
        "80",
        "busybox",
        "sleep",
        "1000",
    ]);
    let template = format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
        network.0
    );
    let ip = docker(&["inspect", "-f", &template, &id]);
    assert!(!ip.is_empty(), "no address on {}", network.0);
    let record = env.wait_key(REACT, &env.key(IMAGE, &id));
    let expected = format!(
        r#"[{{"container":"{id}","image":"{IMAGE}","ip":"{ip}","public_port":"80","private_port":"80","port_type":"tcp"}}]"#
    );
    assert_eq!(record.value, expected);
}

/// Podman's Docker-compatible inspect reports its networks the same way.
#[test]
fn the_network_mode_works_on_podman() {
    let name = format!("der-podman-{}", std::process::id());
    let network = Network::create_on(Engine::Podman, &name);
    let env = TestEnv::on(Engine::Podman, "addresses_podman");
    let _agent = env.start_podman_agent(
        &podman_host(),
        &["--address-mode", "network", "--network", &network.0],
    );
    let id = env.containers.run(&[
        "--network",
        &network.0,
        "--expose",
        "80",
        env.image(),
        "sleep",
        "1000",
    ]);
    let ip = address_on(Engine::Podman, &id, &network.0);
    assert!(!ip.is_empty(), "no address on {}", network.0);
    let record = env.wait_key(REACT, &env.key(env.record_image(), &id));
    assert_eq!(record.value, one_port(&id, env.record_image(), &ip, 80));
}

/// An IPv6-enabled user network: the container is registered on both of
/// its addresses there, the IPv6 one as plain text.
fn a_dual_stack_container_is_registered_on_both_addresses(engine: Engine) {
    let pid = std::process::id();
    let subnet = format!("fd00:de{}:{:x}::/64", apart(engine), pid & 0xffff);
    let name = format!("der-v6-{}{pid}", tag(engine));
    let network = Network::create_with(engine, &name, &["--ipv6", "--subnet", &subnet]);
    let env = TestEnv::on(engine, "addresses_ipv6");
    let _agent = env.start_agent(&["--address-mode", "network", "--network", &network.0]);
    let id = env.containers.run(&[
        "--network",
        &network.0,
        "--expose",
        "80",
        env.image(),
        "sleep",
        "1000",
    ]);
    let v4 = address_on(engine, &id, &network.0);
    let template = format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").GlobalIPv6Address}}}}",
        network.0
    );
    let v6 = engine.cli_out(&["inspect", "-f", &template, &id]);
    assert!(v6.contains(':'), "no IPv6 address: {v6:?}");
    let record = env.wait_key(REACT, &env.key(env.record_image(), &id));
    let endpoints: Vec<serde_json::Value> = serde_json::from_str(&record.value).unwrap();
    let ips: Vec<&str> = endpoints
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "{}", record.value);
    assert!(
        ips.contains(&v4.as_str()) && ips.contains(&v6.as_str()),
        "{ips:?} vs {v4} {v6}"
    );
}

/// An interface of its own for one test, a macvlan network's parent,
/// removed when dropped: a bridge with no port, which reaches nothing (a
/// `dummy` link would do, but not every kernel has that driver).
struct ParentLink(String);

impl ParentLink {
    fn create(name: &str) -> ParentLink {
        let run = |args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        run(&["link", "add", name, "type", "bridge"]);
        let link = ParentLink(name.to_owned());
        run(&["link", "set", name, "up"]);
        link
    }
}

impl Drop for ParentLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

/// A macvlan network on a parent of its own: the container is registered with
/// its macvlan address, which the engine's bridge knows nothing of.
fn a_macvlan_container_is_registered_with_its_macvlan_address(engine: Engine) {
    let pid = std::process::id();
    // Interface names are at most 15 bytes.
    let parent = ParentLink::create(&format!("der{}{pid:x}", tag(engine)));
    let subnet = format!(
        "10.{}.{}.0/24",
        200 + apart(engine) * 25 + (pid >> 8) % 25,
        pid % 256
    );
    let name = format!("der-macvlan-{}{pid}", tag(engine));
    let network = Network::create_with(
        engine,
        &name,
        &[
            "-d",
            "macvlan",
            "--subnet",
            &subnet,
            "-o",
            &format!("parent={}", parent.0),
        ],
    );
    let env = TestEnv::on(engine, "addresses_macvlan");
    let _agent = env.start_agent(&["--address-mode", "network", "--network", &network.0]);
    let id = env.containers.run(&[
        "--network",
        &network.0,
        "--expose",
        "80",
        env.image(),
        "sleep",
        "1000",
    ]);
    let ip = address_on(engine, &id, &network.0);
    let prefix = subnet.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "{ip} is not in {subnet}");
    let record = env.wait_key(REACT, &env.key(env.record_image(), &id));
    assert_eq!(record.value, one_port(&id, env.record_image(), &ip, 80));
}

/// End to end in the network mode: `render` feeds haproxy on the host from
/// the records, and haproxy reaches the backends on their own addresses
/// on a user-defined bridge network, nothing published.
#[test]
fn haproxy_serves_network_mode_backends_on_their_own_addresses() {
    let name = format!("der-lb-{}", std::process::id());
    let network = Network::create(&name);
    let env = TestEnv::new("addresses_haproxy");
    let _agent = env.start_agent(&["--address-mode", "network", "--network", &network.0]);
    let port = private_port();
    let script =
        format!("mkdir -p /www; hostname > /www/index.html; exec httpd -f -p {port} -h /www");
    let id = env.containers.run(&[
        "--network",
        &network.0,
        "--expose",
        &port.to_string(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    let ip = address_on(Engine::Docker, &id, &network.0);
    env.wait_key(REACT, &env.key(IMAGE, &id));

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let pidfile = dir.path().join("haproxy.pid");
    let _render = spawn_render(
        &env.endpoint(),
        &example("haproxy/haproxy.cfg.j2"),
        &out,
        &["--check", "haproxy -c -q -f {}"],
    );
    assert!(
        wait_until(REACT, || read(&out).contains(&format!("{ip}:{port}"))),
        "the file never named {ip}:{port}:\n{}",
        read(&out)
    );
    let _haproxy = haproxy(&out, &pidfile);
    assert!(
        wait_served_by(port, &hostname_of(&id), REACT).is_some(),
        "haproxy never served {id} at {ip}:{port}:\n{}",
        read(&out)
    );
}

/// Labels never widen the operator's choice (docs/records.md: Addresses): on an
/// agent in the published mode, a container asking for the network mode is
/// registered as published, with one WARN; a host-network container asking
/// for the host's network gets no record, however many ports it exposes.
#[test]
fn labels_never_widen_the_operators_mode() {
    let env = TestEnv::new("addresses_labels");
    let agent = env.start_agent(&[]);
    let exposed = rig::ports::next_run(1).to_string();
    let host_net = env.containers.run(&[
        "--network",
        "host",
        "--expose",
        &exposed,
        "--label",
        "docker-etcd-register.address-mode=network",
        "--label",
        "docker-etcd-register.network=host",
        "busybox",
        "sleep",
        "1000",
    ]);
    let published = env.containers.run(&[
        "-p",
        "80",
        "--label",
        "docker-etcd-register.address-mode=network",
        "busybox",
        "sleep",
        "1000",
    ]);
    let port = env.host_port(&published, "80/tcp", "0.0.0.0");
    let image = env.record_image();
    let record = env.wait_key(REACT, &env.key(image, &published));
    assert_eq!(
        record.value,
        expected_value(&published, image, &[(&env.host_ip, &port, "80", "tcp")])
    );
    // A WARN each (one per inspect: a container's network connect and its
    // start may be inspected apart); once the host-network container's is
    // out, its turn (and any write of it) is done.
    for id in [&published, &host_net] {
        assert!(
            wait_until(REACT, || agent.count_log(&["address_label", id.as_str()])
                >= 1),
            "{id}: {:#?}",
            agent.lines()
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !env.keys().iter().any(|key| key.ends_with(&host_net)),
        "{:?}",
        env.keys()
    );
}

/// `--host-ip6` replaces the `::` wildcard instead of folding it into
/// `--host-ip` (Podman reports a `[::]` binding as such; Debian's dockerd
/// without IPv6 publishes none).
#[test]
fn the_ipv6_wildcard_is_registered_on_host_ip6() {
    let env = TestEnv::on(Engine::Podman, "addresses_host_ip6");
    let _agent = env.start_podman_agent(&podman_host(), &["--host-ip6", "fd00:db8::5"]);
    let port = rig::ports::next_run(1).to_string();
    let id = env.containers.run(&[
        "-p",
        &format!("[::]:{port}:80"),
        env.image(),
        "sleep",
        "1000",
    ]);
    let image = env.record_image();
    let record = env.wait_key(REACT, &env.key(image, &id));
    assert_eq!(
        record.value,
        expected_value(&id, image, &[("fd00:db8::5", &port, "80", "tcp")])
    );
}
