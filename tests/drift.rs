//! Drift and restarts: a foreign delete or overwrite of one of the agent's
//! records is repaired within 1 s (periodic resync left at 300 s), while
//! foreign keys under another host's prefix and under `<HOST_IP>0` are left
//! alone; an agent restarted under 20 running containers never makes their
//! records flap (an independent watch sees no DELETE) and moves them onto its
//! new lease, while a container that died with no agent running is removed;
//! `--deregister-on-exit` (flag or environment) empties the host's prefix
//! before the process exits 0 within 2 s.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const FAKE_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const REPAIR_WITHIN: Duration = Duration::from_secs(1);

fn with_port(containers: &Containers) -> String {
    containers.run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
}

/// Waits at most `REPAIR_WITHIN` from `since` until `key` holds `value` on
/// `lease`; returns how long it took.
fn repaired(env: &TestEnv, since: Instant, key: &str, value: &str, lease: i64) -> Duration {
    let mut last = None;
    let ok = wait_until(REPAIR_WITHIN.saturating_sub(since.elapsed()), || {
        last = env.records().remove(key);
        last.as_ref()
            .is_some_and(|r| r.value == value && r.lease == lease)
    });
    let took = since.elapsed();
    assert!(
        ok,
        "{key} not repaired within {REPAIR_WITHIN:?} (after {took:?}): last seen {last:?}, want {value} on lease {lease:x}"
    );
    took
}

/// Keys of the records' root outside the host prefix, with their records
/// (the agent's own host lock lives outside the root, and comes and goes with
/// its lease).
fn foreign(env: &TestEnv) -> BTreeMap<String, Record> {
    let prefix = env.host_prefix();
    get_prefix(&env.endpoint(), "/registered/")
        .into_iter()
        .filter(|(k, _)| !k.starts_with(&prefix))
        .collect()
}

#[test]
fn foreign_delete_and_overwrite_are_repaired_within_a_second() {
    let env = TestEnv::new("drift_repair");
    let ep = env.endpoint();
    let h = &env.host_ip;
    let stale = expected_value(FAKE_ID, IMAGE, &[("127.0.0.1", "1", "80", "tcp")]);
    let other_host = format!("/registered/127.0.0.2/{IMAGE}/{FAKE_ID}");
    let longer_ip = format!("/registered/{h}0/{IMAGE}/{FAKE_ID}");
    put(&ep, &other_host, &stale, 0);
    let _agent = env.start_agent(&[]);

    let a = with_port(&env.containers);
    let b = with_port(&env.containers);
    let expected = env.expected_now();
    assert_eq!(expected.len(), 2);
    env.wait_records(REACT, &expected);
    let lease = env.records().values().next().unwrap().lease;
    assert_ne!(lease, 0);

    // Foreign keys written while the agent runs: another host's, and one under
    // an address that has ours as a string prefix.
    put(&ep, &longer_ip, &stale, 0);
    put(
        &ep,
        &format!("/registered/{h}0/{IMAGE}/{a}"),
        &expected[&env.key(IMAGE, &a)],
        0,
    );
    let foreign_before = foreign(&env);
    assert_eq!(foreign_before.len(), 3);

    // Deleted behind the agent's back.
    let key_a = env.key(IMAGE, &a);
    assert_eq!(delete(&ep, &key_a), 1);
    let took = repaired(&env, Instant::now(), &key_a, &expected[&key_a], lease);
    eprintln!("foreign delete repaired after {took:?}");

    // Overwritten behind its back, first without, then with another lease.
    let key_b = env.key(IMAGE, &b);
    put(&ep, &key_b, "garbage", 0);
    let took = repaired(&env, Instant::now(), &key_b, &expected[&key_b], lease);
    eprintln!("foreign overwrite repaired after {took:?}");
    let other_lease = lease_grant(&ep, 60);
    put(&ep, &key_b, &stale, other_lease);
    let took = repaired(&env, Instant::now(), &key_b, &expected[&key_b], lease);
    eprintln!("foreign overwrite on another lease repaired after {took:?}");

    // Repeated quickly, on both records at once.
    for round in 0..3 {
        let t = Instant::now();
        delete(&ep, &key_a);
        put(&ep, &key_b, "[]", 0);
        repaired(&env, t, &key_a, &expected[&key_a], lease);
        let took = repaired(&env, t, &key_b, &expected[&key_b], lease);
        eprintln!("round {round}: both repaired after {took:?}");
    }

    thread::sleep(Duration::from_secs(2));
    env.wait_records(Duration::ZERO, &expected);
    assert_eq!(
        foreign(&env),
        foreign_before,
        "keys outside {} were touched",
        env.host_prefix()
    );
}

#[test]
fn agent_restart_under_twenty_containers_makes_no_record_flap() {
    const LIVE: usize = 20;
    let env = TestEnv::new("drift_restart");
    let ep = env.endpoint();
    let mut old = env.start_agent(&[]);

    let ids = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::SeqCst) < LIVE {
                    let id = with_port(&env.containers);
                    ids.lock().unwrap().push(id);
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    let doomed = with_port(&env.containers);
    let before = env.expected_now();
    assert_eq!(before.len(), LIVE + 1);
    env.wait_records(SLOW, &before);
    let old_lease = env.records().values().next().unwrap().lease;
    assert_ne!(old_lease, 0);
    let live_keys: BTreeSet<String> = ids.iter().map(|id| env.key(IMAGE, id)).collect();
    let doomed_key = env.key(IMAGE, &doomed);

    let watch = Watch::prefix(&ep, &env.host_prefix());
    old.sigterm();
    let status = old.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "old agent: {status:?}"
    );
    // Without --deregister-on-exit the records are left to the lease.
    env.wait_records(Duration::ZERO, &before);

    // Dies while no agent runs.
    env.containers.kill(&doomed);
    wait_not_running(&doomed);

    let args = env.agent_args();
    let mut new = Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    new.wait_ready();
    let ready = Instant::now();
    thread::sleep(Duration::from_secs(2));

    let expected = env.expected_now();
    assert_eq!(
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        live_keys,
        "the 20 containers are still running"
    );
    env.wait_records(Duration::ZERO, &expected);
    let events = watch.events();
    let flapped: Vec<&WatchEvent> = events
        .iter()
        .filter(|e| e.delete && live_keys.contains(&e.key))
        .collect();
    assert!(
        flapped.is_empty(),
        "records of live containers were deleted during the restart (up to {:?} after ready): {flapped:#?}",
        ready.elapsed()
    );
    assert!(
        events.iter().any(|e| e.delete && e.key == doomed_key),
        "the record of the container that died while no agent ran was not deleted; events: {events:#?}"
    );

    // All on one new, live lease, which is not the old agent's.
    let records = env.records();
    let leases: BTreeSet<i64> = records.values().map(|r| r.lease).collect();
    assert_eq!(leases.len(), 1, "all records ride one lease: {leases:?}");
    let new_lease = *leases.first().unwrap();
    assert_ne!(new_lease, 0);
    assert_ne!(
        new_lease, old_lease,
        "records still on the old agent's lease"
    );
    assert!(lease_ttl(&ep, new_lease) > 0, "the new lease is not alive");
    for key in &live_keys {
        assert!(
            events
                .iter()
                .any(|e| !e.delete && &e.key == key && e.lease == new_lease),
            "{key} was not rewritten in place onto the new lease"
        );
    }
    watch.check();
    new.assert_running();
}

/// SIGTERM an agent that deregisters on exit; the host prefix must be empty
/// by the time it has exited, with code 0 within 2 s.
fn assert_deregisters_on_exit(env: &TestEnv, mut agent: Agent) {
    let ep = env.endpoint();
    for _ in 0..3 {
        with_port(&env.containers);
    }
    env.containers.run(&["busybox", "sleep", "1000"]);
    let expected = env.expected_now();
    assert_eq!(expected.len(), 3);
    env.wait_records(REACT, &expected);
    let other = format!("/registered/{}0/{IMAGE}/{FAKE_ID}", env.host_ip);
    put(&ep, &other, "[]", 0);
    let foreign_before = foreign(env);

    let sent = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(5));
    let took = sent.elapsed();
    let left = env.records();
    let status = status.unwrap_or_else(|| {
        panic!(
            "agent still running 5 s after SIGTERM; stderr:\n{}",
            agent.lines().join("\n")
        )
    });
    assert!(
        left.is_empty(),
        "records left after the agent exited ({status}, {took:?}): {left:#?}\nstderr:\n{}",
        agent.lines().join("\n")
    );
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(took <= Duration::from_secs(2), "took {took:?} to exit");
    assert_eq!(foreign(env), foreign_before, "foreign keys were touched");
    // The containers themselves are untouched.
    assert_eq!(env.expected_now(), expected);
}

#[test]
fn deregister_on_exit_empties_the_host_prefix_before_exiting() {
    let env = TestEnv::new("drift_deregister");
    let agent = env.start_agent(&["--deregister-on-exit"]);
    assert_deregisters_on_exit(&env, agent);
}

#[test]
fn deregister_on_exit_from_the_environment_without_lease() {
    let env = TestEnv::new("drift_deregister_env");
    // No lease to revoke: the records must be deleted one by one.
    let args = env.agent_args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--ttl", "0"]);
    let mut agent = Agent::spawn(&args, &[("REGISTER_DEREGISTER_ON_EXIT", "true")]);
    agent.wait_ready();
    assert_deregisters_on_exit(&env, agent);
}
