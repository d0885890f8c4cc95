//! `--once` and `--dry-run`: one reconcile that exits 0 when the host prefix
//! is exact afterwards (plain keys, no lease; a second run writes nothing)
//! and non-zero when etcd or Docker cannot be reached; `--once --dry-run` as
//! a check that changes nothing and exits 1 while the prefix is not exact,
//! also beside a daemon agent whose records ride a lease; `--dry-run` as a
//! daemon that only logs what it would write and delete.

mod common;

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::*;

const FAKE_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Upper bound for a `--once` run.
const ONCE_WITHIN: Duration = Duration::from_secs(20);

fn with_port(env: &TestEnv) -> String {
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
}

/// A record under the host prefix that no container backs.
fn put_stale(env: &TestEnv) -> String {
    let key = env.key(IMAGE, FAKE_ID);
    let value = expected_value(FAKE_ID, IMAGE, &[(&env.host_ip, "1", "80", "tcp")]);
    put(&env.endpoint(), &key, &value, 0);
    key
}

/// A key of another host whose address has ours as a string prefix.
fn put_foreign(env: &TestEnv) -> String {
    let key = format!("/registered/{}0/{IMAGE}/{FAKE_ID}", env.host_ip);
    put(&env.endpoint(), &key, "[]", 0);
    key
}

/// Everything in etcd with its revisions, and the store's revision.
fn snapshot(env: &TestEnv) -> (BTreeMap<String, Record>, i64) {
    (get_prefix(&env.endpoint(), "/"), revision(&env.endpoint()))
}

/// Runs the agent with the test's arguments plus `extra` until it exits
/// (at most `ONCE_WITHIN`); returns its status, how long it took, and it.
fn run_once(env: &TestEnv, extra: &[&str]) -> (ExitStatus, Duration, Agent) {
    let mut args = env.agent_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let started = Instant::now();
    let mut agent = Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let status = agent.wait_exit(ONCE_WITHIN);
    let took = started.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "{extra:?} still running after {ONCE_WITHIN:?}; stderr:\n{}",
            agent.lines().join("\n")
        )
    });
    // Let the stderr reader catch up with the last lines.
    std::thread::sleep(Duration::from_millis(200));
    eprintln!("{extra:?}: {status} after {took:?}");
    (status, took, agent)
}

fn assert_code(status: ExitStatus, code: i32, agent: &Agent, what: &str) {
    assert_eq!(
        status.code(),
        Some(code),
        "{what}: exit status {status}; stderr:\n{}",
        agent.lines().join("\n")
    );
}

#[test]
fn once_makes_the_prefix_exact_with_plain_keys_and_is_idempotent() {
    let env = TestEnv::new("once_exact");
    let stale = put_stale(&env);
    let foreign = put_foreign(&env);
    let id = with_port(&env);
    env.containers.run(&["busybox", "sleep", "1000"]);
    let expected = env.expected_now();
    assert_eq!(expected.len(), 1);
    let (before, _) = snapshot(&env);

    let (status, _, agent) = run_once(&env, &["--once"]);
    assert_code(status, 0, &agent, "--once");
    env.wait_records(Duration::ZERO, &expected);
    let records = env.records();
    assert!(!records.contains_key(&stale));
    let record = records[&env.key(IMAGE, &id)].clone();
    assert_eq!(record.lease, 0, "--once writes plain keys: {record:?}");
    assert!(agent.count_log(&["unregistered", &stale]) == 1);
    assert!(agent.count_log(&["registered", &id]) >= 1);
    assert_eq!(
        get_prefix(&env.endpoint(), &foreign),
        before
            .iter()
            .filter(|(k, _)| **k == foreign)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect::<BTreeMap<_, _>>(),
        "another host's key was touched"
    );

    // Again: exact already, nothing is written.
    let (records_before, revision_before) = snapshot(&env);
    let (status, _, agent) = run_once(&env, &["--once"]);
    assert_code(status, 0, &agent, "second --once");
    let (records_after, revision_after) = snapshot(&env);
    assert_eq!(records_after, records_before, "the second run changed etcd");
    assert_eq!(
        revision_after, revision_before,
        "the second run wrote something"
    );
    assert_eq!(
        records_after[&env.key(IMAGE, &id)].mod_revision,
        record.mod_revision
    );
}

#[test]
fn once_exits_non_zero_when_etcd_or_docker_is_unreachable() {
    // Nothing listens on this etcd's port.
    let env = TestEnv::with_etcd("once_unreachable", Etcd::reserve());
    with_port(&env);
    let (status, took, agent) = run_once(&env, &["--once"]);
    assert!(
        !status.success(),
        "--once without etcd exited {status} after {took:?}; stderr:\n{}",
        agent.lines().join("\n")
    );
    assert_code(status, 1, &agent, "--once without etcd");
    assert_eq!(
        agent.count_log(&["reconcile failed", "dependency=\"etcd\""]),
        1,
        "--once must say why it failed; stderr:\n{}",
        agent.lines().join("\n")
    );

    // etcd is there, Docker is not.
    let env = TestEnv::new("once_no_docker");
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("docker.sock").display());
    let (status, took, agent) = run_once(&env, &["--once", "--docker-host", &socket]);
    assert!(
        !status.success(),
        "--once without Docker exited {status} after {took:?}; stderr:\n{}",
        agent.lines().join("\n")
    );
    assert_code(status, 1, &agent, "--once without Docker");
    assert_eq!(
        agent.count_log(&["reconcile failed", "dependency=\"docker\""]),
        1,
        "--once must say why it failed; stderr:\n{}",
        agent.lines().join("\n")
    );
    assert!(
        get_prefix(&env.endpoint(), "/").is_empty(),
        "something was written without Docker"
    );
}

#[test]
fn once_dry_run_reports_and_changes_nothing() {
    let env = TestEnv::new("once_dry_run");
    let stale = put_stale(&env);
    put_foreign(&env);
    let id = with_port(&env);
    let key = env.key(IMAGE, &id);
    let before = snapshot(&env);

    let (status, _, agent) = run_once(&env, &["--once", "--dry-run"]);
    assert_code(status, 1, &agent, "--once --dry-run, not exact");
    assert_eq!(snapshot(&env), before, "--dry-run changed etcd");
    assert_eq!(
        agent.count_log(&["would unregister (dry run)", &stale]),
        1,
        "stderr:\n{}",
        agent.lines().join("\n")
    );
    assert_eq!(
        agent.count_log(&["would register (dry run)", &key]),
        1,
        "stderr:\n{}",
        agent.lines().join("\n")
    );
    assert_eq!(agent.count_log(&[" registered "]), 0);
    assert_eq!(agent.count_log(&[" unregistered "]), 0);

    // Made exact by --once; then the check passes and still writes nothing.
    let (status, _, agent) = run_once(&env, &["--once"]);
    assert_code(status, 0, &agent, "--once");
    let exact = snapshot(&env);
    let (status, _, agent) = run_once(&env, &["--once", "--dry-run"]);
    assert_code(status, 0, &agent, "--once --dry-run, exact");
    assert_eq!(snapshot(&env), exact, "--dry-run changed etcd");
    assert_eq!(agent.count_log(&["(dry run)"]), 0);

    // Beside a daemon agent, whose records ride its lease: still exact.
    let mut daemon = env.start_agent(&[]);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    assert!(env.records().values().all(|r| r.lease != 0));
    let with_lease = snapshot(&env);
    let (status, _, agent) = run_once(&env, &["--once", "--dry-run"]);
    assert_code(status, 0, &agent, "--once --dry-run beside a daemon");
    assert_eq!(snapshot(&env), with_lease, "--dry-run changed etcd");
    daemon.assert_running();
}

#[test]
fn dry_run_daemon_logs_what_it_would_do_and_writes_nothing() {
    let env = TestEnv::new("dry_run_daemon");
    let stale = put_stale(&env);
    let before = snapshot(&env);
    let mut agent = env.start_agent(&["--dry-run"]);
    assert_eq!(
        agent.count_log(&["would unregister (dry run)", &stale]),
        1,
        "the start-up reconcile does not report the stale record; stderr:\n{}",
        agent.lines().join("\n")
    );

    let id = with_port(&env);
    let key = env.key(IMAGE, &id);
    assert!(
        wait_until(REACT, || agent
            .count_log(&["would register (dry run)", &key])
            > 0),
        "no `would register (dry run)` line for {key}; stderr:\n{}",
        agent.lines().join("\n")
    );
    env.containers.rm_f(&id);
    assert!(
        wait_until(REACT, || agent
            .count_log(&["would unregister (dry run)", &key])
            > 0),
        "no `would unregister (dry run)` line for {key}; stderr:\n{}",
        agent.lines().join("\n")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(snapshot(&env), before, "--dry-run changed etcd");
    assert_eq!(agent.count_log(&[" registered "]), 0);
    assert_eq!(agent.count_log(&[" unregistered "]), 0);

    let sent = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status {status:?}; stderr:\n{}",
        agent.lines().join("\n")
    );
    assert!(
        sent.elapsed() <= Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(snapshot(&env), before, "--dry-run changed etcd");
}

/// After maintenance: the daemon is stopped (it keeps its lock key for its
/// next run, no standby being in line), then `--once` reconciles at once
/// rather than refusing for the key's TTL.
#[test]
fn once_right_after_the_daemon_stopped_reconciles() {
    let env = TestEnv::new("once_after_stop");
    let mut daemon = env.start_agent(&[]);
    daemon.wait_ready();
    daemon.sigterm();
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        daemon.has_log("keeping the host lock"),
        "{}",
        daemon.lines().join("\n")
    );
    let id = with_port(&env);
    let (status, _, agent) = run_once(&env, &["--once"]);
    assert_code(status, 0, &agent, "--once after the daemon stopped");
    assert!(env.keys().contains(&env.key(IMAGE, &id)));
}
