//! The agent on Podman's Docker-compatible API (rootful Podman 4.3,
//! `podman system service` on /run/podman/podman.sock, set up by
//! scripts/setup-podman.sh): every way a container stops removes its record
//! (stop, kill, `rm -f`, exit by itself, pause) and every way it comes back
//! restores it (start, restart, unpause); a wildcard binding (Podman's empty
//! HostIp) takes the host IP; local images keep Podman's `localhost/` name;
//! a pod is registered under its infra container, its members not at all;
//! `--require-healthy` follows `podman healthcheck run`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::podman::{podman, podman_host, podman_host_port, Pods};
use common::*;

/// The key segment and value image of `localhost/busybox:latest`.
const PODMAN_IMAGE_SEGMENT: &str = "localhost::busybox:latest";

/// A test's environment (its containers on Podman), its pods and an agent
/// on Podman.
struct PodmanTest {
    env: TestEnv,
    pods: Pods,
    _agent: Agent,
}

impl PodmanTest {
    fn start(name: &str, extra: &[&str]) -> PodmanTest {
        let env = TestEnv::on(Engine::Podman, name);
        let pods = Pods::new(env.label());
        let agent = env.start_podman_agent(&podman_host(), extra);
        PodmanTest {
            env,
            pods,
            _agent: agent,
        }
    }

    /// The one record of a container publishing `80/tcp` on loopback.
    fn loopback_80_record(&self, id: &str, image: &str) -> BTreeMap<String, String> {
        let public = podman_host_port(id, "80/tcp", "127.0.0.1");
        BTreeMap::from([(
            self.env.key(image, id),
            expected_value(id, image, &[("127.0.0.1", &public, "80", "tcp")]),
        )])
    }

    /// Runs a container publishing `80/tcp` on loopback and waits for its
    /// record; returns its id and record.
    fn registered_loopback_80(&self, args: &[&str]) -> (String, BTreeMap<String, String>) {
        let mut full = vec!["-p", "127.0.0.1::80"];
        full.extend_from_slice(args);
        let id = self.env.containers.run(&full);
        let record = self.loopback_80_record(&id, PODMAN_IMAGE_SEGMENT);
        self.env.wait_records(REACT, &record);
        (id, record)
    }

    fn wait_none(&self) {
        self.env.wait_records(REACT, &BTreeMap::new());
    }
}

#[test]
fn every_stop_path_removes_the_record_and_every_start_restores_it() {
    let test = PodmanTest::start("podman_stop_paths", &[]);
    let sleeper = ["localhost/busybox", "sleep", "1000"];
    let (id, _) = test.registered_loopback_80(&sleeper);

    podman(&["stop", "-t", "1", &id]);
    test.wait_none();
    podman(&["start", &id]);
    // A restarted container may get another host port.
    test.env
        .wait_records(REACT, &test.loopback_80_record(&id, PODMAN_IMAGE_SEGMENT));

    podman(&["pause", &id]);
    test.wait_none();
    podman(&["unpause", &id]);
    test.env
        .wait_records(REACT, &test.loopback_80_record(&id, PODMAN_IMAGE_SEGMENT));

    podman(&["kill", &id]);
    test.wait_none();
    podman(&["restart", "-t", "1", &id]);
    test.env
        .wait_records(REACT, &test.loopback_80_record(&id, PODMAN_IMAGE_SEGMENT));

    podman(&["rm", "-f", "-t", "0", &id]);
    test.wait_none();

    // Exits by itself, a little after its record was seen.
    let (_, _) = test.registered_loopback_80(&["localhost/busybox", "sleep", "3"]);
    test.wait_none();
}

#[test]
fn a_wildcard_binding_takes_the_host_ip_and_the_image_keeps_localhost() {
    let test = PodmanTest::start("podman_wildcard", &[]);
    // `busybox` resolves to the local `localhost/busybox:latest`, the name
    // Podman reports in Config.Image.
    let id = test
        .env
        .containers
        .run(&["-p", "80", "-p", "81/udp", "busybox", "sleep", "1000"]);
    let tcp = podman_host_port(&id, "80/tcp", "");
    let udp = podman_host_port(&id, "81/udp", "");
    let host_ip = test.env.host_ip.as_str();
    test.env.wait_records(
        REACT,
        &BTreeMap::from([(
            test.env.key(PODMAN_IMAGE_SEGMENT, &id),
            expected_value(
                &id,
                PODMAN_IMAGE_SEGMENT,
                &[(host_ip, &tcp, "80", "tcp"), (host_ip, &udp, "81", "udp")],
            ),
        )]),
    );
}

#[test]
fn a_pod_is_registered_under_its_infra_container_only() {
    let test = PodmanTest::start("podman_pod", &[]);
    let pod = test.pods.create(&["-p", "127.0.0.1::80"]);
    let member = test
        .env
        .containers
        .run(&["--pod", &pod, "localhost/busybox", "sleep", "1000"]);
    let infra = podman(&["pod", "inspect", "--format", "{{.InfraContainerID}}", &pod]);
    assert_ne!(infra, member);
    // The infra container runs Podman's pause image, `localhost/podman-pause:<version>`.
    let infra_image = podman(&["inspect", "--format", "{{.ImageName}}", &infra]).replace('/', "::");
    assert!(
        infra_image.starts_with("localhost::podman-pause:"),
        "{infra_image}"
    );
    test.env
        .wait_records(REACT, &test.loopback_80_record(&infra, &infra_image));

    // Stopping the member leaves the pod's port published: nothing changes.
    podman(&["stop", "-t", "0", &member]);
    std::thread::sleep(Duration::from_millis(500));
    test.env
        .wait_records(REACT, &test.loopback_80_record(&infra, &infra_image));

    podman(&["pod", "stop", "-t", "0", &pod]);
    test.wait_none();
}

#[test]
fn require_healthy_follows_podman_healthcheck_run() {
    let test = PodmanTest::start("podman_health", &["--require-healthy"]);
    // No systemd here: Podman runs no check by itself, only
    // `podman healthcheck run`. The check takes a second, so that its
    // health_status event (sent when the check starts) comes well before
    // its verdict.
    let checked = [
        "--health-cmd",
        "sleep 1; test -f /tmp/healthy",
        "--health-interval",
        "1h",
        "--health-retries",
        "1",
        "-p",
        "127.0.0.1::80",
        "localhost/busybox",
        "sleep",
        "1000",
    ];
    let id = test.env.containers.run(&checked);
    let record = test.loopback_80_record(&id, PODMAN_IMAGE_SEGMENT);
    // Starting: withheld.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(test.env.records().len(), 0, "registered while starting");

    podman(&["exec", &id, "touch", "/tmp/healthy"]);
    podman(&["healthcheck", "run", &id]);
    test.env.wait_records(Duration::from_secs(3), &record);

    podman(&["exec", &id, "rm", "/tmp/healthy"]);
    let failed = Command::new("podman")
        .args(["healthcheck", "run", &id])
        .output()
        .expect("run podman healthcheck run");
    assert!(
        !failed.status.success(),
        "the check passed without its file"
    );
    test.env
        .wait_records(Duration::from_secs(3), &BTreeMap::new());

    podman(&["exec", &id, "touch", "/tmp/healthy"]);
    podman(&["healthcheck", "run", &id]);
    test.env.wait_records(Duration::from_secs(3), &record);
}
