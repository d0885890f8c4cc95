//! The gap between subscribing to the engine's events and listing its
//! containers, and one container whose inspect hangs.
//!
//! dockerd replays at most its last 256 events to a new subscriber. An agent
//! that lists the containers first and sends the subscription only later
//! (say, once etcd answered) loses whatever happened in between as soon as a
//! few hundred other events have passed: a container started meanwhile is
//! never registered, one removed meanwhile never unregistered, until the
//! next resync. These tests hang etcd (SIGSTOP) right after the agent listed
//! the engine, change containers, flood the engine with 320 events the
//! agent's filter matches, thaw etcd and, with `--resync 0`, demand the exact
//! records within seconds — at start-up and at the re-list that follows a
//! broken event stream.
//!
//! A container whose inspect hangs (the relay holds that one request) must
//! fail alone: the others are registered as usual, `/healthz` stays 200, and
//! the container is registered once its inspect answers again.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::relay_stall::FrozenEtcd;
use common::*;

/// Labelled containers without ports whose pause/unpause floods the engine.
const FILLERS: usize = 20;
/// Pause/unpause rounds over all fillers: 320 matching events, more than the
/// 256 dockerd keeps for replay. Few rounds of many containers each keep the
/// flood short (~3 s): an agent that subscribes late subscribes as soon as
/// its first etcd request times out (5 s), and the flood must be over by
/// then for the test to catch it.
const FLOOD_ROUNDS: usize = 8;
/// How many threads start the fillers.
const STARTERS: usize = 4;
/// From etcd thawing to the exact records: the etcd retry backoff is capped
/// at 5 s, plus a reconcile.
const AFTER_THAW: Duration = Duration::from_secs(15);
/// The lease outlives the freeze, so that nothing expires behind our back.
const TTL_ARGS: [&str; 2] = ["--ttl", "60"];

fn with_port(env: &TestEnv) -> String {
    env.containers
        .run(&["-p", "127.0.0.1::80", IMAGE, "sleep", "1000"])
}

/// A container publishing a port, created but not started: starting it
/// later takes a fraction of what `docker run` takes, and its id is known
/// before the agent hears of it.
fn created_with_port(env: &TestEnv) -> String {
    env.containers
        .create(&["-p", "127.0.0.1::80", IMAGE, "sleep", "1000"])
}

fn fillers(env: &TestEnv) -> Vec<String> {
    thread::scope(|scope| {
        let starters: Vec<_> = (0..STARTERS)
            .map(|_| {
                scope.spawn(|| {
                    (0..FILLERS / STARTERS)
                        .map(|_| env.containers.run(&[IMAGE, "sleep", "1000"]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        starters
            .into_iter()
            .flat_map(|starter| starter.join().expect("filler starter"))
            .collect()
    })
}

/// Pauses and unpauses every filler `FLOOD_ROUNDS` times: two events each,
/// all of which the agent's event filter matches.
fn flood(fillers: &[String]) {
    for _ in 0..FLOOD_ROUNDS {
        for action in ["pause", "unpause"] {
            let mut args = vec![action];
            args.extend(fillers.iter().map(String::as_str));
            docker(&args);
        }
    }
}

/// The agent's flags: through `relay`, never a periodic resync (it would
/// hide a lost event), a lease that outlives the freeze, plus `extra`.
fn agent_args(env: &TestEnv, relay: &DockerRelay, extra: &[&str]) -> Vec<String> {
    let mut args = env.agent_args();
    args.extend(["--docker-host".to_string(), relay.docker_host()]);
    args.extend(["--resync", "0"].map(String::from));
    args.extend(TTL_ARGS.map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn spawn_agent(args: &[String]) -> Agent {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::spawn(&args, &[])
}

/// `/containers/<id>/json`: the path of the container's inspect.
fn inspect_path(id: &str) -> String {
    format!("/containers/{id}/json")
}

/// Waits until the agent asked the engine for `id`'s facts, then a moment
/// more for the answer to arrive (milliseconds; the rest of the window is
/// the flood's).
fn wait_inspected(relay: &DockerRelay, agent: &Agent, id: &str) {
    let asked = wait_until(SLOW, || relay.count_requests(&inspect_path(id)) > 0);
    assert!(
        asked,
        "the agent never inspected {id}; requests:\n{:#?}\nlog:\n{}",
        relay.request_lines(),
        agent.lines().join("\n")
    );
    thread::sleep(Duration::from_millis(200));
}

/// After etcd thawed: exactly `expected` within `AFTER_THAW`, and still so a
/// moment later (no late event undoes it).
fn assert_converges(env: &TestEnv, expected: &std::collections::BTreeMap<String, String>) {
    env.wait_records(AFTER_THAW, expected);
    thread::sleep(Duration::from_secs(1));
    env.wait_records(Duration::ZERO, expected);
}

#[test]
fn changes_between_listing_and_a_hung_etcd_at_start_up_survive_an_event_flood() {
    let env = TestEnv::new("gap_start");
    let fillers = fillers(&env);
    let removed = with_port(&env);
    let started = created_with_port(&env);
    let relay = DockerRelay::start();

    // etcd hangs before the agent starts: the agent lists the engine and then
    // waits on etcd, with every change below in the gap.
    let frozen = FrozenEtcd::freeze(&env.etcd);
    let mut agent = spawn_agent(&agent_args(&env, &relay, &[]));
    wait_inspected(&relay, &agent, &removed);

    docker(&["start", &started]);
    env.containers.rm_f(&removed);
    flood(&fillers);
    let expected = env.expected_now();
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        vec![&env.key(IMAGE, &started)],
        "only the container started in the gap publishes a port"
    );

    frozen.thaw();
    assert_converges(&env, &expected);
    agent.assert_running();
}

#[test]
fn changes_after_the_relist_and_a_hung_etcd_survive_an_event_flood() {
    let env = TestEnv::new("gap_relist");
    let fillers = fillers(&env);
    let removed = with_port(&env);
    let started_after_relist = created_with_port(&env);
    let mut relay = DockerRelay::start();
    let mut agent = spawn_agent(&agent_args(&env, &relay, &[]));
    agent.wait_ready();
    env.wait_records(REACT, &env.expected_now());

    // The event stream breaks while etcd hangs; a container starts while
    // the engine cannot be reached, and must come in with the re-list.
    let frozen = FrozenEtcd::freeze(&env.etcd);
    relay.cut();
    let started_while_cut = with_port(&env);
    relay.restore();
    wait_inspected(&relay, &agent, &started_while_cut);

    // The engine was listed again; etcd still hangs: the gap.
    docker(&["start", &started_after_relist]);
    env.containers.rm_f(&removed);
    flood(&fillers);
    let expected = env.expected_now();
    assert_eq!(
        expected.len(),
        2,
        "the two containers started during the outage publish ports"
    );
    assert!(expected.contains_key(&env.key(IMAGE, &started_while_cut)));
    assert!(expected.contains_key(&env.key(IMAGE, &started_after_relist)));

    frozen.thaw();
    assert_converges(&env, &expected);
    agent.assert_running();
}

#[test]
fn a_container_whose_inspect_hangs_fails_alone() {
    let env = TestEnv::new("inspect_hangs");
    let relay = DockerRelay::start();
    let metrics_addr = metrics_addr();
    let mut agent = spawn_agent(&agent_args(
        &env,
        &relay,
        &["--metrics-addr", &metrics_addr],
    ));
    agent.wait_ready();

    let hung = created_with_port(&env);
    relay.hold_requests(&inspect_path(&hung));
    docker(&["start", &hung]);
    // Its network `connect` and its `start` arrive one after the other: the
    // first inspect is superseded by the second, which is the one that
    // times out (10 s) and is reported, so up to ~20 s, plus a slow machine.
    let deadline = Instant::now() + Duration::from_secs(35);
    let held = wait_until(REACT, || relay.held_requests() > 0);
    assert!(held, "the agent never inspected the started container");

    // Another container is registered while that inspect hangs.
    let other = with_port(&env);
    let other_key = env.key(IMAGE, &other);
    env.wait_key(REACT, &other_key);
    let hung_key = env.key(IMAGE, &hung);
    assert!(!env.keys().contains(&hung_key), "registered without facts");

    // The inspect times out: that container's failure, the agent healthy
    // throughout.
    while agent.count_log(&["cannot inspect container", &hung]) == 0 {
        assert!(
            Instant::now() < deadline,
            "no `cannot inspect container` for {hung}; log:\n{}",
            agent.lines().join("\n")
        );
        let (status, body) = http_get(&metrics_addr, "/healthz").expect("GET /healthz");
        assert_eq!(status, 200, "/healthz while one inspect hangs: {body}");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        agent.count_log(&["dependency unavailable", "dependency=\"docker\""]),
        0,
        "one container's hung inspect is no engine outage"
    );
    assert!(env.keys().contains(&other_key));

    // Its inspect answers again: registered by the retry.
    relay.release_all();
    env.wait_key(Duration::from_secs(35), &hung_key);
    env.wait_records(REACT, &env.expected_now());
    let (status, _) = http_get(&metrics_addr, "/healthz").expect("GET /healthz");
    assert_eq!(status, 200);
    agent.assert_running();
}

/// An agent that starts while one container's inspect hangs keeps that
/// container's record (written by the agent before it) as it is, moved onto
/// its own lease: not knowing is no reason to delete.
#[test]
fn a_restarted_agent_keeps_the_record_of_a_container_it_cannot_inspect() {
    let env = TestEnv::new("restart_unknown");
    let hung = with_port(&env);
    let hung_key = env.key(IMAGE, &hung);
    let first = env.start_agent(&[]);
    let value = env.wait_key(REACT, &hung_key).value;
    first.sigterm();
    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());

    let relay = DockerRelay::start();
    relay.hold_requests(&inspect_path(&hung));
    let mut second = spawn_agent(&agent_args(&env, &relay, &[]));
    // The listing waits for the hung inspect to time out (10 s), then the
    // agent reconciles without that container's facts.
    assert!(
        second.wait_for_log("cannot inspect container", SLOW),
        "the inspect did not fail; log:\n{}",
        second.lines().join("\n")
    );
    second.wait_ready();
    let kept = env.wait_key(REACT, &hung_key);
    assert_eq!(kept.value, value, "the record changed without facts");
    let deleted: Vec<_> = watch
        .events()
        .into_iter()
        .filter(|e| e.delete && e.key == hung_key)
        .collect();
    assert!(deleted.is_empty(), "the record was deleted: {deleted:?}");
    let moved = wait_until(REACT, || {
        let lease = env.records().get(&hung_key).map(|r| r.lease);
        lease.is_some_and(|lease| lease != 0 && watch.events().iter().any(|e| e.lease == lease))
    });
    assert!(moved, "the record was not moved onto the new agent's lease");

    relay.release_all();
    env.wait_records(Duration::from_secs(35), &env.expected_now());
    second.assert_running();
}
