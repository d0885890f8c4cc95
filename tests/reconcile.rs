//! Start-up reconcile: the host prefix is made equal to the running
//! containers — stale records deleted, missing and changed ones written,
//! correct ones left untouched — while other hosts' keys (including one whose
//! address has this host's as a string prefix) are never touched. With a lease,
//! records without it or on a foreign lease are rewritten in place. Both run
//! on Docker and on Podman (`docker::…`, `podman::…`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

on_each_engine!(
    startup_reconcile_without_lease,
    startup_reconcile_with_lease_rewrites_in_place,
);

const FAKE_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const FAKE_ID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// The value the agent must write for a container publishing `127.0.0.1::80`.
fn loopback_80(env: &TestEnv, id: &str) -> String {
    env.loopback_80_record(id).1
}

fn startup_reconcile_without_lease(engine: Engine) {
    let env = TestEnv::on(engine, "reconcile_plain");
    let ep = env.endpoint();
    let c = &env.containers;
    let h = env.host_ip.clone();
    // The image segment of this engine's records (Podman: `localhost::…`).
    let image = env.record_image();
    let loopback_80 = |id: &str| loopback_80(&env, id);

    let correct = env.run_loopback_80();
    let missing = c.run(&[
        "-p",
        "127.0.0.1::80",
        "-p",
        "90/udp",
        env.image(),
        "sleep",
        "1000",
    ]);
    let changed = env.run_loopback_80();
    let no_port = c.run(&[env.image(), "sleep", "1000"]);
    let exited = c.run(&["-p", "127.0.0.1::80", env.image(), "true"]);
    engine.wait_not_running(&exited);

    // This host: what the agent must clean up or keep.
    let stale_value = expected_value(FAKE_ID, image, &[("127.0.0.1", "1", "80", "tcp")]);
    put(&ep, &env.key(image, FAKE_ID), &stale_value, 0);
    put(
        &ep,
        &env.key("quay.io::coreos::etcd:v3.5", FAKE_ID2),
        "[]",
        0,
    );
    put(
        &ep,
        &env.key(image, &exited),
        &expected_value(&exited, image, &[("127.0.0.1", "2", "80", "tcp")]),
        0,
    );
    put(&ep, &env.key("other:latest", &correct), "[]", 0);
    put(&ep, &env.key(image, &no_port), "[]", 0);
    put(&ep, &env.key(image, &correct), &loopback_80(&correct), 0);
    put(
        &ep,
        &env.key(image, &changed),
        &expected_value(&changed, image, &[("127.0.0.1", "3", "80", "tcp")]),
        0,
    );

    // Other hosts and other prefixes: never touched.
    let colliding = format!("/registered/{h}0/{image}/");
    put(&ep, &format!("{colliding}{FAKE_ID}"), &stale_value, 0);
    put(&ep, &format!("{colliding}{correct}"), "[]", 0);
    put(&ep, &format!("/registered/{h}"), "bare", 0);
    put(
        &ep,
        &format!("/registered/127.0.0.2/{image}/{FAKE_ID}"),
        &stale_value,
        0,
    );
    put(&ep, &format!("/other/{h}/{image}/{FAKE_ID}"), "x", 0);

    let before = get_prefix(&ep, "/");
    let host_prefix = env.host_prefix();
    // Everything but the host's records and the agent's own host lock.
    let others = |all: &BTreeMap<String, Record>| -> BTreeMap<String, Record> {
        all.iter()
            .filter(|(k, _)| {
                !k.starts_with(&host_prefix) && !k.starts_with("/docker-etcd-register/")
            })
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    };
    let others_before = others(&before);
    assert_eq!(others_before.len(), 5);

    let _agent = env.start_agent(&["--ttl", "0"]);

    // The start-up reconcile is done when the agent says it is ready.
    let expected = BTreeMap::from([
        (env.key(image, &correct), loopback_80(&correct)),
        (
            env.key(image, &missing),
            expected_value(
                &missing,
                image,
                &[
                    (
                        "127.0.0.1",
                        &env.host_port(&missing, "80/tcp", "127.0.0.1"),
                        "80",
                        "tcp",
                    ),
                    (
                        &h,
                        &env.host_port(&missing, "90/udp", "0.0.0.0"),
                        "90",
                        "udp",
                    ),
                ],
            ),
        ),
        (env.key(image, &changed), loopback_80(&changed)),
    ]);
    env.wait_records(Duration::ZERO, &expected);

    let check = || {
        let after = get_prefix(&ep, "/");
        assert_eq!(
            others(&after),
            others_before,
            "keys of other hosts were touched"
        );
        let key = env.key(image, &correct);
        assert_eq!(
            after[&key], before[&key],
            "the correct record was rewritten"
        );
        let key = env.key(image, &changed);
        assert_eq!(
            after[&key].create_revision, before[&key].create_revision,
            "the changed record was deleted before being rewritten"
        );
        for (key, record) in after.iter().filter(|(k, _)| k.starts_with(&host_prefix)) {
            assert_eq!(record.lease, 0, "{key} has a lease although --ttl 0");
        }
    };
    check();
    std::thread::sleep(Duration::from_secs(1));
    env.wait_records(Duration::ZERO, &expected);
    check();
}

fn startup_reconcile_with_lease_rewrites_in_place(engine: Engine) {
    let env = TestEnv::on(engine, "reconcile_lease");
    let ep = env.endpoint();
    let image = env.record_image();
    let loopback_80 = |id: &str| loopback_80(&env, id);
    let plain = env.run_loopback_80();
    let foreign = env.run_loopback_80();

    // Correct values, one without lease, one on a lease of "a previous run".
    let foreign_lease = lease_grant(&ep, 60);
    put(&ep, &env.key(image, &plain), &loopback_80(&plain), 0);
    put(
        &ep,
        &env.key(image, &foreign),
        &loopback_80(&foreign),
        foreign_lease,
    );
    let before = env.records();

    let _agent = env.start_agent(&["--ttl", "5"]);
    let expected = BTreeMap::from([
        (env.key(image, &plain), loopback_80(&plain)),
        (env.key(image, &foreign), loopback_80(&foreign)),
    ]);
    env.wait_records(Duration::ZERO, &expected);

    let after = env.records();
    let lease = after[&env.key(image, &plain)].lease;
    assert_ne!(lease, 0, "record without lease not attached to the agent's");
    assert_ne!(lease, foreign_lease);
    for (key, record) in &after {
        assert_eq!(record.lease, lease, "{key}: all keys ride one lease");
        assert_eq!(
            record.create_revision, before[key].create_revision,
            "{key} was deleted and recreated instead of rewritten in place"
        );
        assert!(record.mod_revision > before[key].mod_revision);
    }

    // The lease is kept alive: the records outlive the TTL.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(env.records(), after, "records changed or expired");
}
