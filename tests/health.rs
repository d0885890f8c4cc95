//! Health-aware and selective registration against real HEALTHCHECKs: with
//! `--require-healthy` a container is registered only while Docker reports it
//! healthy (starting → none, healthy → registered, unhealthy → removed, healthy
//! again → back), also for containers found at start-up; the
//! `docker-etcd-register.ignore=true` label opts a container out, also beside
//! `--require-label`, and removes its stale record at start-up; without
//! `--require-healthy` health changes nothing.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// How soon after Docker reports a health change the record must follow.
const FOLLOW_HEALTH: Duration = Duration::from_secs(1);

/// The file whose presence makes the test containers healthy.
const HEALTHY_FILE: &str = "/tmp/healthy";

/// How the test containers' HEALTHCHECK starts out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    /// The check passes from the start (the file is created before `sleep`).
    Passing,
    /// The check fails, and failures count at once: unhealthy after one probe.
    Failing,
    /// The check fails, but within a start period of 1000 s: `starting`
    /// until it passes once.
    Pending,
}

/// Starts a container publishing one port, with a HEALTHCHECK that tests
/// for `HEALTHY_FILE` every 100 ms.
fn run_checked(env: &TestEnv, check: Check, extra: &[&str]) -> String {
    let mut args = vec![
        "--health-cmd",
        "test -f /tmp/healthy",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "2s",
        "--health-retries",
        "1",
    ];
    if check == Check::Pending {
        args.extend(["--health-start-period", "1000s"]);
    }
    args.extend_from_slice(extra);
    let script = match check {
        Check::Passing => "touch /tmp/healthy && exec sleep 1000",
        Check::Failing | Check::Pending => "exec sleep 1000",
    };
    args.extend(["-p", "127.0.0.1::80", "busybox", "sh", "-c", script]);
    env.containers.run(&args)
}

/// A container publishing one port, without HEALTHCHECK.
fn run_unchecked(env: &TestEnv, extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend(["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    env.containers.run(&args)
}

/// Docker's health status of a container (`starting`, `healthy`, ...).
fn health(id: &str) -> String {
    docker(&["inspect", "--format", "{{.State.Health.Status}}", id])
}

/// Waits until Docker reports `status`; the moment it was seen.
fn wait_health(id: &str, status: &str) -> Instant {
    let mut last = String::new();
    let ok = wait_until(SLOW, || {
        last = health(id);
        last == status
    });
    assert!(ok, "container {id} did not become {status}; it is {last}");
    Instant::now()
}

fn make_healthy(id: &str) {
    docker(&["exec", id, "touch", HEALTHY_FILE]);
}

fn make_unhealthy(id: &str) {
    docker(&["exec", id, "rm", "-f", HEALTHY_FILE]);
}

/// The exact record of a container publishing `127.0.0.1::80`.
fn record_of(env: &TestEnv, id: &str) -> (String, String) {
    let public = host_port(id, "80/tcp", "127.0.0.1");
    (
        env.key(IMAGE, id),
        expected_value(id, IMAGE, &[("127.0.0.1", &public, "80", "tcp")]),
    )
}

fn records_of(env: &TestEnv, ids: &[&str]) -> BTreeMap<String, String> {
    ids.iter().map(|id| record_of(env, id)).collect()
}

/// Asserts that what the test just waited for came at most
/// `FOLLOW_HEALTH` after Docker reported the health change at `since`.
fn assert_followed_within(since: Instant, what: &str) {
    let took = since.elapsed();
    assert!(
        took <= FOLLOW_HEALTH,
        "{what} {took:?} after Docker reported the health change"
    );
}

fn assert_registered_within(env: &TestEnv, key: &str, since: Instant) {
    env.wait_key(SLOW, key);
    assert_followed_within(since, &format!("{key} appeared"));
}

fn assert_removed_within(env: &TestEnv, key: &str, since: Instant) {
    env.wait_gone(SLOW, key);
    assert_followed_within(since, &format!("{key} was removed"));
}

#[test]
fn registration_follows_the_health_of_a_running_container() {
    let env = TestEnv::new("health_follow");
    let _agent = env.start_agent(&["--require-healthy"]);

    let unchecked = run_unchecked(&env, &[]);
    let checked = run_checked(&env, Check::Pending, &[]);
    let (key, value) = record_of(&env, &checked);

    // Starting: no record, however long it starts.
    env.wait_records(REACT, &records_of(&env, &[&unchecked]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(health(&checked), "starting");
    assert!(!env.keys().contains(&key), "registered while starting");

    // Healthy: registered.
    make_healthy(&checked);
    let healthy_at = wait_health(&checked, "healthy");
    assert_registered_within(&env, &key, healthy_at);
    assert_eq!(env.records()[&key].value, value);

    // Unhealthy: removed; the container without HEALTHCHECK stays.
    make_unhealthy(&checked);
    let unhealthy_at = wait_health(&checked, "unhealthy");
    assert_removed_within(&env, &key, unhealthy_at);
    env.wait_records(REACT, &records_of(&env, &[&unchecked]));

    // Healthy again: back.
    make_healthy(&checked);
    let healthy_again_at = wait_health(&checked, "healthy");
    assert_registered_within(&env, &key, healthy_again_at);
    env.wait_records(REACT, &records_of(&env, &[&unchecked, &checked]));
}

#[test]
fn start_up_registers_exactly_the_healthy_ones() {
    let env = TestEnv::new("health_startup");
    let metrics_addr = metrics_addr();
    let healthy = run_checked(&env, Check::Passing, &[]);
    let unhealthy = run_checked(&env, Check::Failing, &[]);
    let starting = run_checked(&env, Check::Pending, &[]);
    let unchecked = run_unchecked(&env, &[]);
    wait_health(&healthy, "healthy");
    wait_health(&unhealthy, "unhealthy");
    assert_eq!(health(&starting), "starting");

    // The switch from the environment, as a unit file would set it.
    let mut args = env.agent_args();
    args.extend(["--metrics-addr".to_string(), metrics_addr.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::spawn(&args, &[("REGISTER_REQUIRE_HEALTHY", "true")]);
    agent.wait_ready();
    env.wait_records(REACT, &records_of(&env, &[&healthy, &unchecked]));

    let (status, metrics) = http_get(&metrics_addr, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200);
    for line in [
        "docker_etcd_register_withheld_records{reason=\"starting\"} 1",
        "docker_etcd_register_withheld_records{reason=\"unhealthy\"} 1",
        "docker_etcd_register_records 2",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }

    // The starting one turns healthy: registered, and no longer withheld.
    make_healthy(&starting);
    let healthy_at = wait_health(&starting, "healthy");
    assert_registered_within(&env, &record_of(&env, &starting).0, healthy_at);
    let ok = wait_until(REACT, || {
        http_get(&metrics_addr, "/metrics").is_ok_and(|(_, text)| {
            text.contains("docker_etcd_register_withheld_records{reason=\"starting\"} 0")
        })
    });
    assert!(ok, "the starting container is still counted as withheld");
}

#[test]
fn the_ignore_label_opts_out_beside_require_label() {
    let env = TestEnv::new("ignore_label");
    // The test's agent runs with `--require-label <test label>`: these carry it.
    let ignored = run_unchecked(&env, &["--label", "docker-etcd-register.ignore=true"]);
    let not_ignored = run_unchecked(&env, &["--label", "docker-etcd-register.ignore=false"]);
    let plain = run_unchecked(&env, &[]);
    // A record of the ignored container from before it carried the label
    // (say, written by an older agent) must go at start-up.
    let (stale_key, stale_value) = record_of(&env, &ignored);
    put(&env.endpoint(), &stale_key, &stale_value, 0);

    let _agent = env.start_agent(&["--require-healthy"]);
    env.wait_records(REACT, &records_of(&env, &[&not_ignored, &plain]));

    // Started while the agent runs: never registered either.
    let ignored_later = run_checked(
        &env,
        Check::Passing,
        &["--label", "docker-etcd-register.ignore=true"],
    );
    let witness = run_unchecked(&env, &[]);
    wait_health(&ignored_later, "healthy");
    env.wait_records(REACT, &records_of(&env, &[&not_ignored, &plain, &witness]));
}

#[test]
fn without_require_healthy_health_changes_nothing() {
    let env = TestEnv::new("health_ignored");
    let starting = run_checked(&env, Check::Pending, &[]);
    let unhealthy = run_checked(&env, Check::Failing, &[]);
    wait_health(&unhealthy, "unhealthy");
    let _agent = env.start_agent(&[]);

    // Every running container with a published port, as the original did.
    let healthy_later = run_checked(&env, Check::Failing, &[]);
    let expected = records_of(&env, &[&starting, &unhealthy, &healthy_later]);
    env.wait_records(REACT, &expected);
    assert_eq!(env.expected_now(), expected);

    // Health changes: no record is rewritten or removed.
    let before = env.records();
    make_healthy(&healthy_later);
    make_healthy(&starting);
    wait_health(&healthy_later, "healthy");
    wait_health(&starting, "healthy");
    make_unhealthy(&healthy_later);
    wait_health(&healthy_later, "unhealthy");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.records(), before, "a health change touched a record");
}
