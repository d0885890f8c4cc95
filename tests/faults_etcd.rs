//! etcd faults, each healed within 5 s of etcd being back (measured from the
//! moment etcd answers again): etcd stopped while containers start and stop,
//! then restarted on its data; etcd killed and replaced by an empty one on the
//! same port; the agent's lease revoked with `etcdctl` (with the default 30 s
//! TTL, so that expiry cannot be what heals it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const BACK_WITHIN: Duration = Duration::from_secs(5);

fn with_port(env: &TestEnv) -> String {
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
}

/// Waits until the host prefix is exactly `expected`, at most until
/// `healed + BACK_WITHIN`, and reports how long it took.
fn exact_within_5s_of(env: &TestEnv, healed: Instant, expected: &BTreeMap<String, String>) {
    let mut last = BTreeMap::new();
    let ok = wait_until(BACK_WITHIN.saturating_sub(healed.elapsed()), || {
        last = env
            .records()
            .into_iter()
            .map(|(k, r)| (k, r.value))
            .collect();
        &last == expected
    });
    assert!(
        ok,
        "etcd under {} not exact {:?} after the fault was healed\nexpected:\n{expected:#?}\nlast seen:\n{last:#?}",
        env.host_prefix(),
        healed.elapsed()
    );
    eprintln!("exact {:?} after the fault was healed", healed.elapsed());
}

/// The one lease every record rides on; it must be alive.
fn single_live_lease(env: &TestEnv) -> i64 {
    let leases: BTreeSet<i64> = env.records().values().map(|r| r.lease).collect();
    assert_eq!(leases.len(), 1, "all records ride one lease: {leases:?}");
    let lease = *leases.first().unwrap();
    assert_ne!(lease, 0, "records without a lease although --ttl 30");
    assert!(
        lease_ttl(&env.endpoint(), lease) > 0,
        "lease {lease:x} is not alive"
    );
    lease
}

fn etcd_outages(agent: &Agent) -> (usize, usize) {
    (
        agent.count_log(&["dependency unavailable", "dependency=\"etcd\""]),
        agent.count_log(&["dependency back", "dependency=\"etcd\""]),
    )
}

#[test]
fn etcd_stopped_while_containers_change_then_restarted() {
    let mut env = TestEnv::new("etcd_restart");
    let mut agent = env.start_agent(&[]);
    let c = &env.containers;
    let kept = with_port(&env);
    let stopped = with_port(&env);
    let removed = with_port(&env);
    env.wait_records(REACT, &env.expected_now());

    env.etcd.stop();
    let started = [with_port(&env), with_port(&env)];
    c.run(&["busybox", "sleep", "1000"]);
    c.stop(&stopped);
    c.rm_f(&removed);
    let expected = env.expected_now();
    for id in [&kept, &started[0], &started[1]] {
        assert!(expected.contains_key(&env.key(IMAGE, id)));
    }
    assert_eq!(expected.len(), 3);
    // Let the agent fail a few writes and back off.
    thread::sleep(Duration::from_secs(3));
    agent.assert_running();

    env.etcd.restart();
    let back = Instant::now();
    exact_within_5s_of(&env, back, &expected);
    single_live_lease(&env);

    // Still following Docker afterwards.
    let late = with_port(&env);
    env.containers.rm_f(&kept);
    let expected = env.expected_now();
    assert!(expected.contains_key(&env.key(IMAGE, &late)));
    env.wait_records(REACT, &expected);
    agent.assert_running();
    let (down, up) = etcd_outages(&agent);
    assert_eq!(
        (down, up),
        (1, 1),
        "one warning and one `dependency back` for the etcd outage; stderr:\n{}",
        agent.lines().join("\n")
    );
}

#[test]
fn etcd_replaced_by_an_empty_one_on_the_same_port() {
    let mut env = TestEnv::new("etcd_wiped");
    let mut agent = env.start_agent(&[]);
    let ids: Vec<String> = (0..3).map(|_| with_port(&env)).collect();
    env.wait_records(REACT, &env.expected_now());
    let old_lease = single_live_lease(&env);

    // Killed; while it is down one container goes and one comes.
    env.etcd.stop();
    env.containers.rm_f(&ids[0]);
    let started = with_port(&env);
    let expected = env.expected_now();
    assert_eq!(expected.len(), 3);
    assert!(expected.contains_key(&env.key(IMAGE, &started)));
    thread::sleep(Duration::from_secs(1));

    env.etcd.replace_with_empty();
    let back = Instant::now();
    exact_within_5s_of(&env, back, &expected);
    let lease = single_live_lease(&env);
    eprintln!("lease {old_lease:x} replaced by {lease:x}");
    agent.assert_running();

    let late = with_port(&env);
    let expected = env.expected_now();
    assert!(expected.contains_key(&env.key(IMAGE, &late)));
    env.wait_records(REACT, &expected);
}

#[test]
fn revoked_lease_is_replaced_and_every_record_rewritten() {
    let env = TestEnv::new("etcd_revoke");
    // Default --ttl 30: recovery cannot come from the lease expiring.
    let mut agent = env.start_agent(&[]);
    for _ in 0..3 {
        with_port(&env);
    }
    let expected = env.expected_now();
    assert_eq!(expected.len(), 3);
    env.wait_records(REACT, &expected);
    let old_lease = single_live_lease(&env);

    let out = etcdctl(
        &env.endpoint(),
        &["lease", "revoke", &format!("{old_lease:x}")],
    );
    let revoked = Instant::now();
    assert!(out.contains("revoked"), "etcdctl said: {out}");
    assert_eq!(lease_ttl(&env.endpoint(), old_lease), -1);

    exact_within_5s_of(&env, revoked, &expected);
    let lease = single_live_lease(&env);
    assert_ne!(lease, old_lease);
    agent.assert_running();

    // The new lease is kept alive like the old one, and events still apply.
    let late = with_port(&env);
    let expected = env.expected_now();
    assert!(expected.contains_key(&env.key(IMAGE, &late)));
    env.wait_records(REACT, &expected);
    assert_eq!(single_live_lease(&env), lease);
}
