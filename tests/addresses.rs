//! Address modes (README: Addresses), against the real engine: in the
//! network mode a container on a user-defined network is registered with
//! its own address there and its exposed port, nothing published.

mod common;

use common::*;

/// A user-defined bridge network for one test, removed when dropped (after
/// the test's containers, which are declared after it).
struct Network(String);

impl Network {
    fn create(name: &str) -> Network {
        docker(&[
            "network",
            "create",
            "--label",
            "docker-etcd-register.test=1",
            name,
        ]);
        Network(name.to_owned())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = rig::docker::Engine::Docker.try_cli(&["network", "rm", &self.0]);
    }
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
