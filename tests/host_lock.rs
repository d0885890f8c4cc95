//! One agent per host: agents for the same host IP, etcd and prefix campaign
//! in etcd's election API under `/docker-etcd-register/agents{prefix}/{host}`
//! and only the holder writes. A second agent stands by (one WARN naming the
//! holder, `/healthz` 503 `standby`, `host_lock_held 0`) and writes nothing;
//! it takes over when the holder exits (records rewritten in place onto its
//! lease within 2 s, no DELETE seen), when the holder is killed (a standby
//! on the same machine sees its process gone and takes over at once, in
//! place), and with `--ttl 0` (the lock rides on a 10 s lease of its own).
//! Independently of the lock, a foreign writer that keeps overwriting a
//! record is repaired with backoff, not in a tight loop.

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use common::etcd_faults::*;
use common::*;

const STANDBY_WARNING: &str = "another agent holds this host";
const HOLDING: &str = "holding this host";

fn with_port(env: &TestEnv) -> String {
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
}

/// An agent of `env` with `--metrics-addr` and `extra`; not waited for.
fn spawn_agent(env: &TestEnv, metrics_addr: &str, extra: &[&str]) -> Agent {
    let mut args = env.agent_args();
    args.extend(["--metrics-addr".to_string(), metrics_addr.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

fn election(env: &TestEnv) -> String {
    election_name("/registered", &env.host_ip)
}

/// The single lease every record rides on.
fn records_lease(env: &TestEnv) -> i64 {
    let leases: BTreeSet<i64> = env.records().values().map(|r| r.lease).collect();
    assert_eq!(leases.len(), 1, "all records ride one lease: {leases:?}");
    *leases.first().unwrap()
}

/// Waits until `agent`'s candidate key is in the election and returns its
/// lease; checks key name and value.
fn candidate_lease(env: &TestEnv, agent: &Agent) -> i64 {
    let election = election(env);
    let pid = serde_json::Value::from(agent.pid());
    let mut seen = Default::default();
    let mut found = None;
    wait_until(Duration::from_secs(10), || {
        seen = candidates(&env.endpoint(), &election);
        found = seen.iter().find_map(|(key, record)| {
            let value: serde_json::Value = serde_json::from_str(&record.value).ok()?;
            (value["pid"] == pid).then(|| (key.clone(), record.clone(), value))
        });
        found.is_some()
    });
    let Some((key, record, value)) = found else {
        panic!(
            "no candidate key of agent pid {pid} under {election}/; candidates:\n{seen:#?}\nagent stderr:\n{}",
            agent.lines().join("\n")
        );
    };
    assert_ne!(record.lease, 0, "candidate key {key} rides on no lease");
    assert_eq!(key, format!("{election}/{:x}", record.lease));
    assert_eq!(value["hostname"], hostname(), "value of {key}: {value}");
    assert_eq!(value["pid"], agent.pid(), "value of {key}: {value}");
    assert_eq!(
        value["host_ip"],
        env.host_ip.as_str(),
        "value of {key}: {value}"
    );
    assert_eq!(
        value["prefix"],
        env.host_prefix(),
        "value of {key}: {value}"
    );
    let engine = value["engine"].as_str().unwrap_or_default();
    assert!(
        engine.starts_with("docker:"),
        "the engine of {key}: {value}"
    );
    assert!(value["started"].as_u64().is_some_and(|t| t > 0), "{value}");
    assert!(
        value["boot_id"].as_str().is_some_and(|b| !b.is_empty()),
        "{value}"
    );
    record.lease
}

/// Waits for the standby warning and checks it names the holder, once.
fn assert_stands_by(standby: &mut Agent, holder: &Agent, holder_lease: i64, addr: &str) {
    assert!(
        standby.wait_for_log(STANDBY_WARNING, Duration::from_secs(20)),
        "the second agent did not warn `{STANDBY_WARNING}`; stderr:\n{}",
        standby.lines().join("\n")
    );
    let lines: Vec<String> = standby
        .lines()
        .into_iter()
        .filter(|l| l.contains(STANDBY_WARNING))
        .collect();
    let line = &lines[0];
    assert!(line.contains(" WARN "), "not a WARN: {line}");
    assert!(has_field(line, "holder_hostname", &hostname()), "{line}");
    assert!(
        has_field(line, "holder_pid", &holder.pid().to_string()),
        "{line}"
    );
    assert!(
        has_field(line, "holder_lease", &holder_lease.to_string()),
        "holder_lease must be decimal {holder_lease}: {line}"
    );
    let (status, body) = wait_healthz(addr, 503, Duration::from_secs(5));
    assert!(
        body.contains("standby"),
        "/healthz of the standby: {body:?}"
    );
    wait_metric(addr, HOST_LOCK_HELD, 0.0, Duration::from_secs(5));
    assert_eq!(status, 503);
}

fn assert_warned_once(standby: &Agent) {
    assert_eq!(
        standby.count_log(&[STANDBY_WARNING]),
        1,
        "the standby warning must come exactly once; stderr:\n{}",
        standby.lines().join("\n")
    );
}

#[test]
fn standby_takes_over_in_place_when_the_holder_exits() {
    let env = TestEnv::new("lock_handover");
    let (addr_a, addr_b) = (metrics_addr(), metrics_addr());
    let mut holder = spawn_agent(&env, &addr_a, &[]);
    holder.wait_ready();
    with_port(&env);
    with_port(&env);
    env.wait_records(REACT, &env.expected_now());
    let old_lease = records_lease(&env);
    assert_eq!(
        candidate_lease(&env, &holder),
        old_lease,
        "the holder campaigns on the lease its records ride on"
    );
    wait_metric(&addr_a, HOST_LOCK_HELD, 1.0, Duration::from_secs(5));

    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());
    let mut standby = spawn_agent(&env, &addr_b, &[]);
    assert_stands_by(&mut standby, &holder, old_lease, &addr_b);
    let new_lease = candidate_lease(&env, &standby);
    assert_ne!(new_lease, old_lease);
    assert_eq!(candidates(&env.endpoint(), &election(&env)).len(), 2);

    // A container started now is the holder's to register, not the standby's.
    with_port(&env);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    thread::sleep(Duration::from_secs(2));
    for event in watch.events() {
        assert!(
            !event.delete && event.lease == old_lease,
            "only the holder writes while the other stands by: {event:?}"
        );
    }
    assert_warned_once(&standby);
    assert_eq!(healthz(&addr_a).0, 200);

    holder.sigterm();
    assert!(
        holder.wait_exit(Duration::from_secs(10)).is_some(),
        "the holder did not exit on SIGTERM"
    );
    let exited = Instant::now();
    let mut last = Default::default();
    let moved = wait_until(Duration::from_secs(2), || {
        last = env.records();
        last.len() == expected.len()
            && last
                .iter()
                .all(|(k, r)| r.lease == new_lease && expected.get(k) == Some(&r.value))
    });
    assert!(
        moved,
        "not every record rides on the standby's lease {new_lease:x} within 2 s of the holder's exit ({:?}):\n{last:#?}\nstandby stderr:\n{}",
        exited.elapsed(),
        standby.lines().join("\n")
    );
    eprintln!(
        "records moved {:?} after the holder exited",
        exited.elapsed()
    );
    assert!(
        standby.count_log(&[" INFO ", HOLDING]) >= 1,
        "no INFO `{HOLDING}`; stderr:\n{}",
        standby.lines().join("\n")
    );
    let left: Vec<String> = candidates(&env.endpoint(), &election(&env))
        .into_keys()
        .collect();
    assert_eq!(
        left,
        vec![format!("{}/{new_lease:x}", election(&env))],
        "the holder resigned at exit"
    );

    // The old lease may go now: nothing of the live containers rides on it.
    revoke_if_alive(&env.endpoint(), old_lease);
    thread::sleep(Duration::from_secs(1));
    env.wait_records(REACT, &expected);
    let deletes: Vec<WatchEvent> = watch.events().into_iter().filter(|e| e.delete).collect();
    assert!(
        deletes.is_empty(),
        "a live container's key vanished: {deletes:?}"
    );
    wait_healthz(&addr_b, 200, Duration::from_secs(5));
    wait_metric(&addr_b, HOST_LOCK_HELD, 1.0, Duration::from_secs(5));
    assert_warned_once(&standby);
    standby.assert_running();
}

/// A standby beside the holder on this machine looks at the holder's
/// process once a second (the process table, nothing asked of etcd): when
/// it is killed, the standby takes over at once and moves the records onto
/// its lease in place, rather than waiting out the dead holder's lease.
#[test]
fn a_standby_on_the_same_machine_takes_over_at_once_when_the_holder_is_killed() {
    let env = TestEnv::new("lock_killed");
    let (addr_a, addr_b) = (metrics_addr(), metrics_addr());
    let mut holder = spawn_agent(&env, &addr_a, &["--ttl", "10"]);
    holder.wait_ready();
    with_port(&env);
    with_port(&env);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let old_lease = records_lease(&env);
    assert_eq!(candidate_lease(&env, &holder), old_lease);

    let mut standby = spawn_agent(&env, &addr_b, &["--ttl", "10"]);
    assert_stands_by(&mut standby, &holder, old_lease, &addr_b);
    let new_lease = candidate_lease(&env, &standby);

    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());
    holder.sigkill();
    let killed = Instant::now();
    holder.wait_exit(Duration::from_secs(5));
    let mut last = Default::default();
    let back = wait_until(Duration::from_secs(3), || {
        last = env.records();
        last.len() == expected.len()
            && last
                .iter()
                .all(|(k, r)| r.lease == new_lease && expected.get(k) == Some(&r.value))
    });
    assert!(
        back,
        "the records are not on the standby's lease {new_lease:x} within 3 s of the kill ({:?}), long before the TTL of 10 s:\n{last:#?}\nstandby stderr:\n{}",
        killed.elapsed(),
        standby.lines().join("\n")
    );
    eprintln!("records back {:?} after the kill", killed.elapsed());
    assert!(standby.has_log("the holder's process on this machine has ended"));
    let deletes: Vec<WatchEvent> = watch.events().into_iter().filter(|e| e.delete).collect();
    assert!(deletes.is_empty(), "records deleted: {deletes:?}");
    assert!(standby.count_log(&[" INFO ", HOLDING]) >= 1);
    wait_healthz(&addr_b, 200, Duration::from_secs(5));

    // The new holder follows Docker.
    with_port(&env);
    env.wait_records(REACT, &env.expected_now());
    assert_eq!(records_lease(&env), new_lease);
}

#[test]
fn with_ttl_0_the_lock_rides_on_a_lease_of_its_own() {
    let env = TestEnv::new("lock_ttl0");
    let (addr_a, addr_b) = (metrics_addr(), metrics_addr());
    let mut holder = spawn_agent(&env, &addr_a, &["--ttl", "0"]);
    holder.wait_ready();
    with_port(&env);
    with_port(&env);
    env.wait_records(REACT, &env.expected_now());
    assert_eq!(records_lease(&env), 0, "--ttl 0 records carry no lease");
    let lock_lease = candidate_lease(&env, &holder);
    let (granted, keys) =
        lease_info(&env.endpoint(), lock_lease).expect("the lock's lease is alive");
    assert_eq!(granted, 10, "the lock's lease TTL with --ttl 0");
    assert_eq!(
        keys,
        vec![format!("{}/{lock_lease:x}", election(&env))],
        "the lock's lease carries nothing else"
    );

    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());
    let mut standby = spawn_agent(&env, &addr_b, &["--ttl", "0"]);
    assert_stands_by(&mut standby, &holder, lock_lease, &addr_b);

    holder.sigkill();
    let killed = Instant::now();
    let holds = standby.wait_for_log(HOLDING, Duration::from_secs(10 + 2));
    assert!(
        holds,
        "the standby does not hold the host within 10 + 2 s of the kill ({:?}); stderr:\n{}",
        killed.elapsed(),
        standby.lines().join("\n")
    );
    eprintln!("standby holds {:?} after the kill", killed.elapsed());
    wait_healthz(&addr_b, 200, Duration::from_secs(5));

    with_port(&env);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    assert_eq!(records_lease(&env), 0);
    let deletes: Vec<WatchEvent> = watch.events().into_iter().filter(|e| e.delete).collect();
    assert!(
        deletes.is_empty(),
        "--ttl 0 records were deleted: {deletes:?}"
    );
}

#[test]
fn a_write_storm_is_repaired_with_backoff() {
    let env = TestEnv::new("lock_storm");
    let metrics_addr = format!("127.0.0.1:{}", test_port());
    let mut agent = env.start_agent(&["--metrics-addr", &metrics_addr]);
    let id = with_port(&env);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let key = env.key(IMAGE, &id);
    let right = expected[&key].clone();

    let watch = Watch::prefix(&env.endpoint(), &key);
    let (first, last) = overwrite_repeatedly(
        &env.endpoint(),
        &key,
        Duration::from_millis(20),
        Duration::from_secs(10),
    );
    let stopped = Instant::now();
    // Count only once the watch has delivered everything up to the last junk.
    let caught_up = wait_until(Duration::from_secs(5), || {
        watch.events().iter().any(|e| e.revision >= last)
    });
    assert!(caught_up, "the independent watch never saw revision {last}");
    let repairs = watch
        .events()
        .into_iter()
        .filter(|e| !e.delete && e.value == right && (first..=last).contains(&e.revision))
        .count();
    eprintln!("{repairs} repairs during the storm");
    assert!(
        (1..=20).contains(&repairs),
        "the agent repaired {repairs} times during 10 s of foreign writes (1 to 20 expected)"
    );
    env.wait_records(
        Duration::from_secs(12).saturating_sub(stopped.elapsed()),
        &expected,
    );
    eprintln!(
        "right again {:?} after the writer stopped",
        stopped.elapsed()
    );
    let warned = agent
        .warnings()
        .iter()
        .any(|l| l.contains(" WARN ") && l.contains("keeps being changed by someone else"));
    assert!(
        warned,
        "no WARN `keeps being changed by someone else`; stderr:\n{}",
        agent.lines().join("\n")
    );
    // What an alert on repair storms counts.
    let counted = metrics(&metrics_addr)["docker_etcd_register_repairs_total"];
    assert!(
        counted >= repairs as f64,
        "repairs_total {counted}, {repairs} repairs seen"
    );
    agent.assert_running();
}

/// A standby waits for the holder with one candidate key and costs etcd no
/// revision while nothing changes (its campaign has no request timeout that
/// would withdraw the key and make it write it again every few seconds).
#[test]
fn a_standby_writes_nothing_while_nothing_changes() {
    let env = TestEnv::new("lock_quiet_standby");
    let (addr_a, addr_b) = (metrics_addr(), metrics_addr());
    let mut holder = spawn_agent(&env, &addr_a, &[]);
    holder.wait_ready();
    with_port(&env);
    env.wait_records(REACT, &env.expected_now());
    let holder_lease = records_lease(&env);
    let mut standby = spawn_agent(&env, &addr_b, &[]);
    assert_stands_by(&mut standby, &holder, holder_lease, &addr_b);
    candidate_lease(&env, &standby);

    let before = revision(&env.endpoint());
    let keys_before = candidates(&env.endpoint(), &election(&env));
    // Longer than two request timeouts of the client (5 s each).
    thread::sleep(Duration::from_secs(12));
    assert_eq!(
        revision(&env.endpoint()),
        before,
        "etcd's revision moved while nothing changed; candidates now:\n{:#?}\nstandby stderr:\n{}",
        candidates(&env.endpoint(), &election(&env)),
        standby.lines().join("\n")
    );
    assert_eq!(candidates(&env.endpoint(), &election(&env)), keys_before);
    assert_warned_once(&standby);
    assert_eq!(healthz(&addr_a).0, 200);
    holder.assert_running();
    standby.assert_running();
}
