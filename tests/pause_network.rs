//! Paused containers and network changes (docs/behaviour.md "How it behaves"): a paused
//! container serves nothing, so its record goes on `docker pause` and comes
//! back on `docker unpause`, and start-up and every resync agree; `docker
//! network disconnect` takes a container's published ports away without any
//! container event, `docker network connect` gives them back (Docker picks a
//! new host port), and the record follows either way — each within 1 s.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// How soon the record must follow a pause, unpause, disconnect or connect.
const FOLLOW: Duration = Duration::from_secs(1);

/// Waits at most `FOLLOW` after `since` until etcd holds exactly `expected`.
fn assert_follows(env: &TestEnv, since: Instant, what: &str, expected: &BTreeMap<String, String>) {
    let mut last = BTreeMap::new();
    let followed = wait_until(FOLLOW.saturating_sub(since.elapsed()), || {
        last = env
            .records()
            .into_iter()
            .map(|(key, record)| (key, record.value))
            .collect();
        &last == expected
    });
    assert!(
        followed,
        "{what}: etcd did not become\n{expected:#?}\nwithin {FOLLOW:?}; last seen:\n{last:#?}"
    );
    assert_eq!(
        expected,
        &env.expected_now(),
        "{what}: expectation differs from Docker's truth"
    );
}

/// Asserts for `period` that `key` never appears under the host prefix.
fn assert_stays_absent(env: &TestEnv, key: &str, period: Duration, why: &str) {
    let appeared = wait_until(period, || env.records().contains_key(key));
    assert!(!appeared, "{why}: {key} was registered");
}

fn docker_timed(args: &[&str]) -> Instant {
    docker(args);
    Instant::now()
}

#[test]
fn a_container_paused_before_start_up_is_registered_on_unpause() {
    let env = TestEnv::new("pause_before_start");
    let running = env.run_loopback_80();
    let paused = env.run_loopback_80();
    docker(&["pause", &paused]);
    // Its `start` is less than 2 s old, so the agent's start-up replays it:
    // the replay must agree with the listing, which skips paused containers.
    let _agent = env.start_agent(&[]);
    let only_running = BTreeMap::from([env.loopback_80_record(&running)]);
    env.wait_records(REACT, &only_running);
    assert_stays_absent(
        &env,
        &env.key(IMAGE, &paused),
        Duration::from_millis(2500),
        "paused at start-up",
    );
    assert_eq!(env.expected_now(), only_running);

    let unpaused = docker_timed(&["unpause", &paused]);
    let both = BTreeMap::from([
        env.loopback_80_record(&running),
        env.loopback_80_record(&paused),
    ]);
    assert_follows(&env, unpaused, "after unpause", &both);
}

#[test]
fn a_container_paused_while_the_agent_runs_leaves_and_comes_back() {
    let env = TestEnv::new("pause_while_running");
    let _agent = env.start_agent(&[]);
    let id = env.run_loopback_80();
    let registered = BTreeMap::from([env.loopback_80_record(&id)]);
    env.wait_records(REACT, &registered);

    for round in 1..=2 {
        let paused = docker_timed(&["pause", &id]);
        assert_follows(&env, paused, &format!("pause #{round}"), &BTreeMap::new());
        let unpaused = docker_timed(&["unpause", &id]);
        assert_follows(&env, unpaused, &format!("unpause #{round}"), &registered);
    }
}

#[test]
fn resync_does_not_bring_a_paused_container_back() {
    let env = TestEnv::new("pause_resync");
    let owned = env.agent_args();
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    args.extend_from_slice(&["--resync", "1"]);
    let mut agent = Agent::spawn(&args, &[("RUST_LOG", "docker_etcd_register=debug")]);
    agent.wait_ready();
    let id = env.run_loopback_80();
    env.wait_records(REACT, &BTreeMap::from([env.loopback_80_record(&id)]));

    // Paused right after its start: the next resyncs replay that `start`.
    let paused = docker_timed(&["pause", &id]);
    assert_follows(&env, paused, "pause", &BTreeMap::new());
    let resyncs_before = agent.count_log(&["periodic resync"]);
    assert_stays_absent(
        &env,
        &env.key(IMAGE, &id),
        Duration::from_millis(3500),
        "paused, across resyncs",
    );
    let resyncs = agent.count_log(&["periodic resync"]) - resyncs_before;
    assert!(resyncs >= 2, "only {resyncs} resyncs in 3.5 s");
    agent.assert_running();

    let unpaused = docker_timed(&["unpause", &id]);
    assert_follows(
        &env,
        unpaused,
        "unpause",
        &BTreeMap::from([env.loopback_80_record(&id)]),
    );
}

#[test]
fn the_record_follows_network_disconnect_and_connect() {
    let env = TestEnv::new("network_connect");
    let _agent = env.start_agent(&[]);
    let id = env.run_loopback_80();
    let before = env.loopback_80_record(&id);
    env.wait_records(REACT, &BTreeMap::from([before.clone()]));

    let disconnected = docker_timed(&["network", "disconnect", "bridge", &id]);
    assert!(
        bindings(&id).is_empty(),
        "Docker still publishes {:?} after disconnect",
        bindings(&id)
    );
    assert_follows(&env, disconnected, "disconnect", &BTreeMap::new());

    let connected = docker_timed(&["network", "connect", "bridge", &id]);
    // Docker publishes the port again, on a host port of its choosing (on
    // dockerd 20.10 a new one); the record carries whatever it chose.
    let after = env.loopback_80_record(&id);
    assert_follows(&env, connected, "connect", &BTreeMap::from([after]));
}
