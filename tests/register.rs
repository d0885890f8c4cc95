//! Registration and deregistration driven by Docker events while the agent
//! runs: exact key and value of one and of several published ports, no key for
//! containers that publish nothing or lack a required label, removal on stop,
//! kill, `rm -f` and self-exit, and the image segment of the key. Every body
//! runs on Docker and on Podman (`docker::…`, `podman::…`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

on_each_engine!(
    registers_a_container_with_one_published_port,
    registers_several_ports_sorted_with_wildcards_collapsed,
    no_key_without_published_port_or_required_labels,
    deregisters_on_stop_kill_rm_and_exit,
    image_segment_of_the_key,
);

fn registers_a_container_with_one_published_port(engine: Engine) {
    let env = TestEnv::on(engine, "register_one");
    let _agent = env.start_agent(&[]);

    let id = env.run_loopback_80();
    let (key, value) = env.loopback_80_record(&id);
    env.wait_records(REACT, &BTreeMap::from([(key.clone(), value)]));

    // Default TTL is 30 s, so the key rides the agent's lease.
    let record = env.records()[&key].clone();
    assert_ne!(
        record.lease, 0,
        "with the default --ttl the key has a lease"
    );

    // An unchanged container is never rewritten.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(env.records()[&key], record, "the record was rewritten");
}

fn registers_several_ports_sorted_with_wildcards_collapsed(engine: Engine) {
    let env = TestEnv::on(engine, "register_many");
    let _agent = env.start_agent(&[]);

    // 90/tcp: an explicit and a wildcard binding; 90/udp and 8080/tcp: wildcard
    // only (Docker reports 0.0.0.0 and :: for each, Podman one binding with an
    // empty address); 81/udp: explicit only.
    let id = env.containers.run(&[
        "-p",
        "8080",
        "-p",
        "127.0.0.1::81/udp",
        "-p",
        "90/udp",
        "-p",
        "127.0.0.1::90",
        "-p",
        "90",
        env.image(),
        "sleep",
        "1000",
    ]);
    let h = env.host_ip.as_str();
    let p81u = env.host_port(&id, "81/udp", "127.0.0.1");
    let p90t_lo = env.host_port(&id, "90/tcp", "127.0.0.1");
    let p90t_any = env.host_port(&id, "90/tcp", "0.0.0.0");
    let p90u = env.host_port(&id, "90/udp", "0.0.0.0");
    let p8080 = env.host_port(&id, "8080/tcp", "0.0.0.0");
    let image = env.record_image();
    // Sorted by private port (as a number: 90 before 8080), protocol, ip,
    // public port; the host IP 127.a.b.1 (a >= 1) sorts after 127.0.0.1.
    let value = expected_value(
        &id,
        image,
        &[
            ("127.0.0.1", &p81u, "81", "udp"),
            ("127.0.0.1", &p90t_lo, "90", "tcp"),
            (h, &p90t_any, "90", "tcp"),
            (h, &p90u, "90", "udp"),
            (h, &p8080, "8080", "tcp"),
        ],
    );
    env.wait_records(REACT, &BTreeMap::from([(env.key(image, &id), value)]));
}

fn no_key_without_published_port_or_required_labels(engine: Engine) {
    let env = TestEnv::on(engine, "register_none");
    let _agent = env.start_agent(&["--require-label", "role", "--require-label", "tier=web"]);
    let c = &env.containers;
    let labels = ["--label", "role=frontend", "--label", "tier=web"];
    let with = |rest: &[&str]| -> Vec<String> {
        labels
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| c.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let image = env.image();

    // Publishes nothing.
    run(with(&[image, "sleep", "1000"]));
    // Exposes but does not publish.
    run(with(&["--expose", "80", image, "sleep", "1000"]));
    // Publishes, but lacks the `role` label.
    c.run(&[
        "--label",
        "tier=web",
        "-p",
        "127.0.0.1::80",
        image,
        "sleep",
        "1000",
    ]);
    // Publishes, but `tier` has the wrong value.
    c.run(&[
        "--label",
        "role=frontend",
        "--label",
        "tier=db",
        "-p",
        "127.0.0.1::80",
        image,
        "sleep",
        "1000",
    ]);
    // Started last, publishes and carries every required label.
    let id = run(with(&["-p", "127.0.0.1::80", image, "sleep", "1000"]));
    let expected = BTreeMap::from([env.loopback_80_record(&id)]);
    env.wait_records(REACT, &expected);
    std::thread::sleep(Duration::from_secs(1));
    env.wait_records(Duration::ZERO, &expected);
}

fn deregisters_on_stop_kill_rm_and_exit(engine: Engine) {
    let env = TestEnv::on(engine, "register_gone");
    let _agent = env.start_agent(&[]);
    let c = &env.containers;
    let image = env.record_image();
    let sleeper = ["-p", "127.0.0.1::80", env.image(), "sleep", "1000"];
    let stopped = c.run(&sleeper);
    let killed = c.run(&sleeper);
    let removed = c.run(&sleeper);
    // Exits by itself once /tmp/go exists.
    let exiting = c.run(&[
        "-p",
        "127.0.0.1::80",
        env.image(),
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 1; done",
    ]);

    let record = |id: &str| env.loopback_80_record(id);
    let mut expected: BTreeMap<String, String> = [&stopped, &killed, &removed, &exiting]
        .into_iter()
        .map(|id| record(id))
        .collect();
    env.wait_records(REACT, &expected);

    c.stop(&stopped);
    expected.remove(&env.key(image, &stopped));
    env.wait_records(REACT, &expected);

    c.kill(&killed);
    expected.remove(&env.key(image, &killed));
    env.wait_records(REACT, &expected);

    c.rm_f(&removed);
    expected.remove(&env.key(image, &removed));
    env.wait_records(REACT, &expected);

    env.cli(&["exec", &exiting, "touch", "/tmp/go"]);
    engine.wait_not_running(&exiting);
    expected.remove(&env.key(image, &exiting));
    env.wait_records(REACT, &expected);
    assert!(expected.is_empty());

    // Starting a stopped container registers it again, with its new port.
    env.cli(&["start", &stopped]);
    let again = record(&stopped);
    env.wait_records(REACT, &BTreeMap::from([again]));
    c.rm_f(&stopped);
    env.wait_records(REACT, &BTreeMap::new());
}

/// `(reference run, {image} the key must carry)` for the test image of
/// `engine`, tagged as `tags` beforehand; `full` is the image's id.
fn image_cases(engine: Engine, full: &str) -> Vec<(String, String)> {
    let hex = full.strip_prefix("sha256:").expect("sha256 image id");
    let short = &hex[..12];
    let cases: Vec<(&str, &str)> = match engine {
        Engine::Docker => vec![
            ("busybox", "busybox:latest"),
            ("busybox:latest", "busybox:latest"),
            ("docker.io/library/busybox", "busybox:latest"),
            ("docker.io/library/busybox:latest", "busybox:latest"),
            ("library/busybox", "busybox:latest"),
            (hex, full),
            (short, full),
            (full, full),
        ],
        // Podman reports the image's full name whatever was typed (a short
        // name, or an image id without `sha256:`); only `sha256:<id>` is kept.
        Engine::Podman => vec![
            ("busybox", "localhost::busybox:latest"),
            ("localhost/busybox", "localhost::busybox:latest"),
            ("localhost/busybox:latest", "localhost::busybox:latest"),
            (hex, "localhost::busybox:latest"),
            (short, "localhost::busybox:latest"),
            (full, full),
        ],
    };
    let both = [
        (
            "localhost:5000/team/app",
            "localhost:5000::team::app:latest",
        ),
        (
            "localhost:5000/team/app:latest",
            "localhost:5000::team::app:latest",
        ),
        ("quay.io/coreos/etcd:v3.5", "quay.io::coreos::etcd:v3.5"),
    ];
    cases
        .into_iter()
        .chain(both)
        .map(|(reference, image)| (reference.to_string(), image.to_string()))
        .collect()
}

fn image_segment_of_the_key(engine: Engine) {
    let _tags = TagGuard::tag_on(
        engine,
        &[
            "localhost:5000/team/app:latest".into(),
            "quay.io/coreos/etcd:v3.5".into(),
        ],
    );
    let env = TestEnv::on(engine, "register_image");
    let _agent = env.start_agent(&[]);

    let mut expected = BTreeMap::new();
    for (reference, image) in image_cases(engine, &engine.image_id(engine.image())) {
        let id = env
            .containers
            .run(&["-p", "127.0.0.1::80", &reference, "sleep", "1000"]);
        let public = env.host_port(&id, "80/tcp", "127.0.0.1");
        expected.insert(
            env.key(&image, &id),
            expected_value(&id, &image, &[("127.0.0.1", &public, "80", "tcp")]),
        );
    }
    env.wait_records(REACT, &expected);
}
