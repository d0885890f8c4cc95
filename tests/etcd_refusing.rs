//! etcd refusing writes for a while is etcd trouble, not a bad record: with
//! its space quota exceeded (NOSPACE alarm raised by junk keys outside the
//! agent's prefix) a new container stays unregistered, `/healthz` turns 503,
//! `connected{dependency="etcd"}` is 0 and the etcd error counter rises; once
//! an operator frees the space (delete, compact, defrag, `alarm disarm`) the
//! record lands within 5 s. A refusal that waiting cannot change, a record
//! beyond etcd's `--max-request-bytes`, stays an error of that one record:
//! the others are registered and `/healthz` stays 200, a delete planned
//! beside it is made, and it is not sent again and again. A stopped
//! container's record goes while etcd is out of space when etcd lets a
//! delete-only transaction through (3.4.22+, 3.5.7+), else within 5 s of the
//! space being freed.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::etcd_faults::*;
use common::relay_stall::FrozenEtcd;
use common::*;

/// Keys that fill the quota: outside the agent's prefix `/registered`.
const JUNK_PREFIX: &str = "/filler/";

fn with_port(env: &TestEnv) -> String {
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
}

fn start_agent_with_metrics(env: &TestEnv) -> (Agent, String) {
    let addr = metrics_addr();
    let agent = env.start_agent(&["--metrics-addr", &addr]);
    wait_healthz(&addr, 200, Duration::from_secs(5));
    (agent, addr)
}

#[test]
fn exceeded_space_quota_is_etcd_trouble_until_freed() {
    let env = TestEnv::with_etcd("refuse_nospace", Etcd::start_with_flags(&SMALL_QUOTA_FLAGS));
    let (mut agent, addr) = start_agent_with_metrics(&env);
    let kept = with_port(&env);
    env.wait_records(REACT, &env.expected_now());
    let errors_before = metrics(&addr)[ETCD_ERRORS];

    let junk_keys = fill_quota(&env.endpoint(), JUNK_PREFIX);
    eprintln!("NOSPACE after {junk_keys} junk keys");
    let late = with_port(&env);
    let started = Instant::now();
    let (_, body) = wait_healthz(&addr, 503, Duration::from_secs(6));
    eprintln!(
        "/healthz 503 {:?} after the container started: {body}",
        started.elapsed()
    );
    wait_metric(&addr, ETCD_CONNECTED, 0.0, Duration::from_secs(5));
    let errors = metrics(&addr)[ETCD_ERRORS];
    assert!(
        errors > errors_before,
        "{ETCD_ERRORS} did not rise: {errors_before} -> {errors}"
    );
    assert!(
        agent.wait_for_log("dependency unavailable", Duration::from_secs(2))
            && agent.count_log(&["dependency unavailable", "dependency=\"etcd\""]) >= 1,
        "no `dependency unavailable` WARN for etcd; stderr:\n{}",
        agent.lines().join("\n")
    );
    // Still refusing: nothing lands, the agent keeps retrying.
    thread::sleep(Duration::from_secs(2));
    assert!(!env.records().contains_key(&env.key(IMAGE, &late)));
    assert!(env.records().contains_key(&env.key(IMAGE, &kept)));
    assert_eq!(healthz(&addr).0, 503);
    assert!(alarms(&env.endpoint()).contains("NOSPACE"));
    agent.assert_running();

    let expected = env.expected_now();
    assert_eq!(expected.len(), 2);
    let disarmed = free_quota(&env.endpoint(), JUNK_PREFIX);
    let mut last = BTreeMap::new();
    let landed = wait_until(
        Duration::from_secs(5).saturating_sub(disarmed.elapsed()),
        || {
            last = env
                .records()
                .into_iter()
                .map(|(k, r)| (k, r.value))
                .collect();
            last == expected
        },
    );
    assert!(
        landed,
        "the record did not land within 5 s of the disarm ({:?})\nexpected:\n{expected:#?}\nlast seen:\n{last:#?}",
        disarmed.elapsed()
    );
    eprintln!("record landed {:?} after the disarm", disarmed.elapsed());
    wait_healthz(&addr, 200, Duration::from_secs(5));
    wait_metric(&addr, ETCD_CONNECTED, 1.0, Duration::from_secs(5));
    agent.assert_running();
}

/// Whether etcd, out of space, lets a transaction through that only
/// deletes (`key`). etcd 3.4.22+ and 3.5.7+ do (a request that adds nothing
/// passes the quota); 3.4.21 and older and 3.5.0-3.5.6 refuse it with
/// "database space exceeded" while the database is over the quota, as they
/// refuse a put (docs/etcd-versions.md).
fn delete_only_txn_passes(endpoint: &str, key: &str) -> bool {
    use etcd_client::{Txn, TxnOp};
    let mut c = rig::etcd::client(endpoint);
    let txn = Txn::new().and_then(vec![TxnOp::delete(key, None)]);
    match runtime().block_on(c.txn(txn)) {
        Ok(_) => true,
        Err(e) if e.to_string().contains(NOSPACE_MESSAGE) => false,
        Err(e) => panic!("delete-only txn of {key}: {e}"),
    }
}

#[test]
fn a_stopped_containers_record_goes_as_soon_as_etcd_lets_a_delete_through() {
    let env = TestEnv::with_etcd(
        "refuse_nospace_delete",
        Etcd::start_with_flags(&SMALL_QUOTA_FLAGS),
    );
    let (mut agent, _addr) = start_agent_with_metrics(&env);
    let kept = with_port(&env);
    let stopped = with_port(&env);
    env.wait_records(REACT, &env.expected_now());
    let stopped_key = env.key(IMAGE, &stopped);

    let junk_keys = fill_quota(&env.endpoint(), JUNK_PREFIX);
    let deletes_pass = delete_only_txn_passes(&env.endpoint(), &format!("{JUNK_PREFIX}0"));
    eprintln!("NOSPACE after {junk_keys} junk keys; a delete-only txn passes: {deletes_pass}");
    env.containers.rm_f(&stopped);
    if deletes_pass {
        // The agent's delete is such a transaction (fenced by the lock key):
        // the record goes while etcd still refuses every put.
        env.wait_gone(REACT, &stopped_key);
        assert!(alarms(&env.endpoint()).contains("NOSPACE"));
    } else {
        // Refused like a put: the agent retries until space is freed.
        thread::sleep(Duration::from_secs(3));
        assert!(env.records().contains_key(&stopped_key));
        assert!(
            agent.count_log(&["dependency unavailable", "dependency=\"etcd\""]) >= 1,
            "no `dependency unavailable` WARN for etcd; stderr:\n{}",
            agent.lines().join("\n")
        );
        let disarmed = free_quota(&env.endpoint(), JUNK_PREFIX);
        env.wait_gone(Duration::from_secs(5), &stopped_key);
        eprintln!("record deleted {:?} after the disarm", disarmed.elapsed());
    }
    assert!(env.records().contains_key(&env.key(IMAGE, &kept)));
    agent.assert_running();
}

#[test]
fn a_record_beyond_the_request_limit_stays_its_own_error() {
    let env = TestEnv::with_etcd(
        "refuse_too_large",
        Etcd::start_with_flags(&["--max-request-bytes", "4096"]),
    );
    let (mut agent, addr) = start_agent_with_metrics(&env);
    with_port(&env);
    env.wait_records(REACT, &env.expected_now());

    // 40 published ports: a value of about 6 KiB.
    let big = env
        .containers
        .run(&["-p", "127.0.0.1::8000-8039", "busybox", "sleep", "1000"]);
    let big_key = env.key(IMAGE, &big);
    let mut expected = env.expected_now();
    let big_value = expected
        .remove(&big_key)
        .expect("the big container's record");
    assert!(
        big_value.len() > 4096,
        "the big record has only {} bytes",
        big_value.len()
    );
    assert!(
        agent.wait_for_log("etcd refused this record", REACT),
        "no error for the record beyond the request limit; stderr:\n{}",
        agent.lines().join("\n")
    );
    assert!(agent.count_log(&[" ERROR ", "etcd refused this record"]) >= 1);

    with_port(&env);
    let expected_after = {
        let mut all = env.expected_now();
        all.remove(&big_key);
        all
    };
    assert_eq!(expected_after.len(), expected.len() + 1);
    env.wait_records(REACT, &expected_after);

    // Nothing about etcd being unwell: health and connection stay good.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        let (status, body) = healthz(&addr);
        assert_eq!(status, 200, "/healthz with a too-large record: {body}");
        assert_eq!(metrics(&addr)[ETCD_CONNECTED], 1.0);
        thread::sleep(Duration::from_millis(200));
    }
    assert!(!env.records().contains_key(&big_key));
    assert_eq!(
        agent.count_log(&["dependency unavailable", "dependency=\"etcd\""]),
        0,
        "a too-large record is not etcd trouble; stderr:\n{}",
        agent.lines().join("\n")
    );
    agent.assert_running();
}

#[test]
fn a_refused_record_holds_back_no_delete() {
    let env = TestEnv::with_etcd(
        "refuse_then_delete",
        Etcd::start_with_flags(&["--max-request-bytes", "4096"]),
    );
    let (mut agent, addr) = start_agent_with_metrics(&env);
    let small = with_port(&env);
    let small_key = env.key(IMAGE, &small);
    env.wait_key(REACT, &small_key);

    // Both changes wait for one reconcile: the too-large put and the delete.
    let frozen = FrozenEtcd::freeze(&env.etcd);
    env.containers.rm_f(&small);
    let big = env
        .containers
        .run(&["-p", "127.0.0.1::8000-8039", "busybox", "sleep", "1000"]);
    thread::sleep(Duration::from_secs(1));
    frozen.thaw();
    env.wait_gone(REACT, &small_key);
    assert!(
        agent.wait_for_log("etcd refused this record", REACT),
        "stderr:\n{}",
        agent.lines().join("\n")
    );
    assert!(!env.records().contains_key(&env.key(IMAGE, &big)));
    wait_healthz(&addr, 200, Duration::from_secs(10));

    // The refused record is not sent again and again.
    let refused = agent.count_log(&["etcd refused this record"]);
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        agent.count_log(&["etcd refused this record"]),
        refused,
        "stderr:\n{}",
        agent.lines().join("\n")
    );
    assert_eq!(healthz(&addr).0, 200);
    agent.assert_running();
}
