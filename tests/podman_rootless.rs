//! The agent (as root) on rootless Podman's Docker-compatible API: the
//! service of the unprivileged user `der-rootless` on
//! /run/user/<uid>/podman/podman.sock, set up by scripts/setup-podman.sh.
//! A rootless container's published port is registered with the host port
//! that really answers (rootlessport, Podman's default, and slirp4netns's
//! own port handler), every way it stops removes its record, every restart
//! restores it, and the start-up reconcile finds containers that were
//! already running and drops records no container backs.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::rootless::RootlessPodman;
use common::*;

/// The key segment and value image of `localhost/busybox:latest`.
const PODMAN_IMAGE_SEGMENT: &str = "localhost::busybox:latest";

/// A container command that answers every TCP connection on `port` with
/// `hello-<port>` (busybox's nc serves one connection per run).
fn greeter(port: &str) -> String {
    format!("while true; do echo hello-{port} | nc -l -p {port}; done")
}

/// Reads what a greeter says on `ip:port`, retrying while the port
/// handler is not forwarding yet.
fn greeting(ip: &str, port: &str) -> String {
    let mut said = String::new();
    let heard = wait_until(Duration::from_secs(10), || {
        let Ok(mut stream) = TcpStream::connect((ip, port.parse::<u16>().expect("port"))) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set read timeout");
        said.clear();
        stream.read_to_string(&mut said).is_ok() && !said.is_empty()
    });
    assert!(heard, "nothing answered on {ip}:{port}");
    said.trim().to_string()
}

/// A test's environment, its rootless containers and, once started, an
/// agent on the rootless socket.
struct RootlessTest {
    env: TestEnv,
    rootless: RootlessPodman,
    agent: Option<Agent>,
}

impl RootlessTest {
    fn new(name: &str) -> RootlessTest {
        let env = TestEnv::new(name);
        let rootless = RootlessPodman::new(env.label());
        RootlessTest {
            env,
            rootless,
            agent: None,
        }
    }

    fn start_agent(&mut self) {
        let agent = self.env.start_podman_agent(&self.rootless.url, &[]);
        self.agent = Some(agent);
    }

    /// The one record of a container publishing `80/tcp` on loopback.
    fn loopback_80_record(&self, id: &str) -> BTreeMap<String, String> {
        let public = self.rootless.host_port(id, "80/tcp", "127.0.0.1");
        BTreeMap::from([(
            self.env.key(PODMAN_IMAGE_SEGMENT, id),
            expected_value(
                id,
                PODMAN_IMAGE_SEGMENT,
                &[("127.0.0.1", &public, "80", "tcp")],
            ),
        )])
    }

    fn wait_loopback_80(&self, id: &str) {
        self.env.wait_records(REACT, &self.loopback_80_record(id));
    }

    fn wait_none(&self) {
        self.env.wait_records(REACT, &BTreeMap::new());
    }
}

#[test]
fn a_rootless_port_is_registered_with_the_host_port_that_answers() {
    let mut test = RootlessTest::new("rootless_ports");
    test.start_agent();
    // Podman's default port handler (rootlessport): a wildcard and a
    // loopback binding.
    let default_handler = test.rootless.run(&[
        "-p",
        "80",
        "-p",
        "127.0.0.1::81",
        "localhost/busybox",
        "sh",
        "-c",
        &format!("{} & {}", greeter("80"), greeter("81")),
    ]);
    // slirp4netns forwarding the port itself.
    let slirp_handler = test.rootless.run(&[
        "--network",
        "slirp4netns:port_handler=slirp4netns",
        "-p",
        "127.0.0.1::80",
        "localhost/busybox",
        "sh",
        "-c",
        &greeter("80"),
    ]);
    // Rootless Podman reports a wildcard binding as rootful Podman does,
    // with an empty HostIp; the agent registers it under the host IP.
    let wildcard = test.rootless.host_port(&default_handler, "80/tcp", "");
    let loopback = test
        .rootless
        .host_port(&default_handler, "81/tcp", "127.0.0.1");
    let slirp = test
        .rootless
        .host_port(&slirp_handler, "80/tcp", "127.0.0.1");
    let host_ip = test.env.host_ip.clone();
    let mut expected = BTreeMap::from([(
        test.env.key(PODMAN_IMAGE_SEGMENT, &default_handler),
        expected_value(
            &default_handler,
            PODMAN_IMAGE_SEGMENT,
            &[
                (&host_ip, &wildcard, "80", "tcp"),
                ("127.0.0.1", &loopback, "81", "tcp"),
            ],
        ),
    )]);
    expected.extend(test.loopback_80_record(&slirp_handler));
    test.env.wait_records(REACT, &expected);

    // What a load balancer would do with the records: the registered
    // address and port reach the container. The test's host IP is a
    // loopback address, which the wildcard binding covers.
    assert_eq!(greeting(&host_ip, &wildcard), "hello-80");
    assert_eq!(greeting("127.0.0.1", &loopback), "hello-81");
    assert_eq!(greeting("127.0.0.1", &slirp), "hello-80");
}

#[test]
fn every_rootless_stop_path_removes_the_record_and_every_start_restores_it() {
    let mut test = RootlessTest::new("rootless_stop_paths");
    test.start_agent();
    let sleeper = ["-p", "127.0.0.1::80", "localhost/busybox", "sleep", "1000"];
    let id = test.rootless.run(&sleeper);
    test.wait_loopback_80(&id);

    test.rootless.podman(&["stop", "-t", "1", &id]);
    test.wait_none();
    test.rootless.podman(&["start", &id]);
    // A restarted container may get another host port.
    test.wait_loopback_80(&id);

    test.rootless.podman(&["kill", &id]);
    test.wait_none();
    test.rootless.podman(&["restart", "-t", "1", &id]);
    test.wait_loopback_80(&id);

    test.rootless.podman(&["rm", "-f", "-t", "0", &id]);
    test.wait_none();

    // Exits by itself, a little after its record was seen.
    let short = test
        .rootless
        .run(&["-p", "127.0.0.1::80", "localhost/busybox", "sleep", "3"]);
    test.wait_loopback_80(&short);
    test.wait_none();
}

#[test]
fn start_up_reconcile_registers_running_rootless_containers_and_drops_stale_records() {
    let mut test = RootlessTest::new("rootless_reconcile");
    let id = test
        .rootless
        .run(&["-p", "127.0.0.1::80", "localhost/busybox", "sleep", "1000"]);
    // A record of a container that is long gone, say from before a crash.
    let stale_id = "0".repeat(64);
    let stale_key = test.env.key(PODMAN_IMAGE_SEGMENT, &stale_id);
    let stale_value = expected_value(
        &stale_id,
        PODMAN_IMAGE_SEGMENT,
        &[("127.0.0.1", "40000", "80", "tcp")],
    );
    put(&test.env.endpoint(), &stale_key, &stale_value, 0);

    test.start_agent();
    // Ready means reconciled: exact at once, no waiting for events.
    let held: BTreeMap<String, String> = test
        .env
        .records()
        .into_iter()
        .map(|(key, record)| (key, record.value))
        .collect();
    assert_eq!(held, test.loopback_80_record(&id));
}
