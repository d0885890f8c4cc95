//! The trust boundary at the load balancer (docs/security.md "Trust boundary": ports
//! of a load balancer), on the real path: what one container publishes
//! never gives haproxy two servers of one name, and a container of another
//! service cannot take a frontend port that a service serves; `render
//! --service` renders only the services named (every file checked by a
//! real `haproxy -c`); a name spelled as another one's identifier is a
//! section of its own, and `--frontend-port` makes only the operator's
//! ports frontends. A label of megabytes costs its container only the
//! label, and `list` names a hostile key escaped, never printing it raw.

mod common;

use common::lb::*;
use common::*;

const HAPROXY: &str = "haproxy/haproxy.cfg.j2";
const HAPROXY_CHECK: &str = "haproxy -c -q -f {}";

#[test]
fn one_port_on_two_addresses_is_two_servers_that_haproxy_accepts() {
    let env = TestEnv::new("trust_two_addresses");
    let _agent = env.start_agent(&[]);
    let port = private_port().to_string();
    let public = test_port().to_string();
    // One host port on two loopback addresses, as `-p 192.0.2.10:8080:80
    // -p 192.0.2.11:8080:80` on a host with two addresses.
    let id = env.containers.run(&[
        "-l",
        "docker-etcd-register.service=web",
        "-p",
        &format!("127.0.0.1:{public}:{port}"),
        "-p",
        &format!("127.0.0.2:{public}:{port}"),
        "busybox",
        "sleep",
        "1000",
    ]);
    env.wait_key(REACT, &env.key("web", &id));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let mut render = spawn_render(
        &env.endpoint(),
        &example(HAPROXY),
        &out,
        &["--check", HAPROXY_CHECK, "--once", "--service", "web"],
    );
    let status = render.wait_exit(SLOW).expect("render --once did not exit");
    assert!(status.success(), "{:?}", render.lines());
    let text = read(&out);
    for ip in ["127.0.0.1", "127.0.0.2"] {
        assert!(text.contains(&format!(" {ip}:{public} ")), "{text}");
    }
    assert_eq!(servers(&out), 2, "{text}");
}

#[test]
fn another_service_cannot_take_a_served_port_and_render_service_names_them() {
    let env = TestEnv::new("trust_port_claim");
    let _agent = env.start_agent(&[]);
    let port = private_port().to_string();
    let publish = format!("127.0.0.1::{port}");
    let run = |service: &str| {
        let label = format!("docker-etcd-register.service={service}");
        let id = env
            .containers
            .run(&["-l", &label, "-p", &publish, "busybox", "sleep", "1000"]);
        let public = env.host_port(&id, &format!("{port}/tcp"), "127.0.0.1");
        env.wait_key(REACT, &env.key(service, &id));
        public
    };
    let web = run("trust-web");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let mut render = spawn_render(
        &env.endpoint(),
        &example(HAPROXY),
        &out,
        &["--check", HAPROXY_CHECK, "--debounce", "0"],
    );
    assert!(
        wait_until(SLOW, || read(&out).contains(&format!("127.0.0.1:{web} "))),
        "{:?}",
        render.lines()
    );
    // A name that sorts first: in one reading it would hold the port.
    let intruder = run("aaa-intruder");
    assert!(
        render.wait_for_log("several services claim one port", SLOW),
        "{:?}",
        render.lines()
    );
    let text = read(&out);
    assert!(!text.contains(&format!(":{intruder} ")), "{text}");
    assert_eq!(
        text.matches(&format!(":{port}\n")).count(),
        1,
        "one frontend on the port:\n{text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{web} ")), "{text}");
    drop(render);

    // Only the services named, whatever else is registered.
    let once = dir.path().join("named.cfg");
    let mut named = spawn_render(
        &env.endpoint(),
        &example(HAPROXY),
        &once,
        &["--check", HAPROXY_CHECK, "--once", "--service", "trust-web"],
    );
    let status = named.wait_exit(SLOW).expect("render --once did not exit");
    assert!(status.success(), "{:?}", named.lines());
    let text = read(&once);
    assert!(!text.contains("intruder"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{web} ")), "{text}");
}

/// A label spelled as `ident` writes another service's name gives a section
/// of its own: haproxy accepts the file with both.
#[test]
fn a_name_spelled_as_another_ones_identifier_is_a_section_of_its_own() {
    let env = TestEnv::new("trust_ident");
    let _agent = env.start_agent(&[]);
    let mut ports = Vec::new();
    for service in ["web.v1", "web_2ev1"] {
        let port = private_port().to_string();
        let label = format!("docker-etcd-register.service={service}");
        let publish = format!("127.0.0.1::{port}");
        let id = env
            .containers
            .run(&["-l", &label, "-p", &publish, "busybox", "sleep", "1000"]);
        env.wait_key(REACT, &env.key(service, &id));
        ports.push(port);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let mut render = spawn_render(
        &env.endpoint(),
        &example(HAPROXY),
        &out,
        &[
            "--check",
            HAPROXY_CHECK,
            "--once",
            "--service",
            "web.v1",
            "--service",
            "web_2ev1",
        ],
    );
    let status = render.wait_exit(SLOW).expect("render --once did not exit");
    assert!(status.success(), "{:?}", render.lines());
    let text = read(&out);
    for section in [
        format!("listen web_2ev1_{}\n", ports[0]),
        format!("listen web_5f2ev1_{}\n", ports[1]),
    ] {
        assert!(text.contains(&section), "{section:?} in\n{text}");
    }
}

#[test]
fn only_the_operators_ports_become_frontends() {
    let env = TestEnv::new("trust_frontend_ports");
    let _agent = env.start_agent(&[]);
    let port = private_port().to_string();
    // Container port 22: a frontend on it would be a bind the load
    // balancer's own sshd already holds.
    let id = env.containers.run(&[
        "-l",
        "docker-etcd-register.service=gitea",
        "-p",
        &format!("127.0.0.1::{port}"),
        "-p",
        "127.0.0.1::22",
        "busybox",
        "sleep",
        "1000",
    ]);
    env.wait_key(REACT, &env.key("gitea", &id));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let mut render = spawn_render(
        &env.endpoint(),
        &example(HAPROXY),
        &out,
        &[
            "--check",
            HAPROXY_CHECK,
            "--once",
            "--service",
            "gitea",
            "--frontend-port",
            &format!("80,{port}"),
        ],
    );
    let status = render.wait_exit(SLOW).expect("render --once did not exit");
    assert!(status.success(), "{:?}", render.lines());
    let text = read(&out);
    assert!(text.contains(&format!("listen gitea_{port}\n")), "{text}");
    assert!(!text.contains(":22\n"), "{text}");
    assert!(
        render.wait_for_log("outside --frontend-port", SLOW),
        "{:?}",
        render.lines()
    );
}

#[test]
fn a_label_of_megabytes_costs_only_its_container_the_label() {
    let env = TestEnv::new("trust_huge_label");
    let mut agent = env.start_agent(&[]);
    // Beyond what a command line or a label file takes: the API, as any
    // client of the engine can.
    let (test_key, test_value) = env.label().split_once('=').unwrap();
    let body = serde_json::json!({
        "Image": IMAGE,
        "Cmd": ["sleep", "1000"],
        "Labels": {
            test_key: test_value,
            "docker-etcd-register.service": "w".repeat(2_500_000),
        },
        "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {"PortBindings": {"80/tcp": [
            {"HostIp": "127.0.0.1", "HostPort": test_port().to_string()}
        ]}},
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let request = dir.path().join("create.json");
    std::fs::write(&request, body.to_string()).unwrap();
    let created = std::process::Command::new("curl")
        .args(["-sf", "--unix-socket", DOCKER_SOCKET])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", request.display()))
        .arg("http://localhost/containers/create")
        .output()
        .expect("curl");
    assert!(created.status.success(), "{created:?}");
    let answer: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = answer["Id"].as_str().expect("an id").to_owned();
    docker(&["start", &id]);
    let (key, value) = env.loopback_80_record(&id);
    assert_eq!(env.wait_key(REACT, &key).value, value, "under its image");
    assert!(agent.wait_for_log("container input outside the grammar", REACT));
    // The agent goes on: the next container is registered at once.
    let next = env.run_loopback_80();
    let (key, value) = env.loopback_80_record(&next);
    assert_eq!(env.wait_key(REACT, &key).value, value);
    agent.assert_running();
}

#[test]
fn list_names_a_hostile_key_escaped_and_prints_only_records() {
    let env = TestEnv::new("trust_list_escape");
    let _agent = env.start_agent(&[]);
    let id = env.run_loopback_80();
    let (key, value) = env.loopback_80_record(&id);
    env.wait_key(REACT, &key);
    let hostile = format!("/registered/127.0.0.1/web\u{1b}[2J\nfake row/{id}");
    put(&env.endpoint(), &hostile, &value, 0);
    let out = list(&env.endpoint(), &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'));
    assert!(!stdout.contains("fake row"), "{stdout}");
    assert!(stdout.contains(&id[..12]), "{stdout}");
    assert!(
        stderr.contains(r"web\u{1b}[2J\nfake row"),
        "the key, escaped: {stderr}"
    );
}
