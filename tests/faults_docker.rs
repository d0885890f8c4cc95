//! Docker faults through a unix-socket relay in front of the engine: the
//! connection is cut (live connections closed, new ones refused) while
//! containers start, stop and are removed, then restored, and the agent must
//! converge to the exact state within 10 s; a broken event stream with the
//! engine still reachable is healed the same way. Each outage is one warning
//! and one `dependency back` line, and the agent never exits.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The backoff is capped at 5 s; allow the same again for re-listing.
const HEAL: Duration = Duration::from_secs(10);

fn with_port(env: &TestEnv) -> String {
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
}

fn docker_outages(agent: &Agent) -> (usize, usize) {
    (
        agent.count_log(&["dependency unavailable", "dependency=\"docker\""]),
        agent.count_log(&["dependency back", "dependency=\"docker\""]),
    )
}

#[test]
fn docker_connection_cut_while_containers_change() {
    let env = TestEnv::new("docker_cut");
    let mut relay = DockerRelay::start();
    let mut agent = env.start_agent(&["--docker-host", &relay.docker_host()]);
    assert!(
        relay.accepted() > 0,
        "the agent did not talk through the relay"
    );

    let c = &env.containers;
    let kept = with_port(&env);
    let stopped = with_port(&env);
    let removed = with_port(&env);
    let killed = with_port(&env);
    c.run(&["busybox", "sleep", "1000"]);
    let before = env.expected_now();
    assert_eq!(before.len(), 4);
    env.wait_records(REACT, &before);

    relay.cut();
    let cut_at = Instant::now();
    // While the agent cannot see Docker, the world changes.
    let started = [with_port(&env), with_port(&env)];
    c.run(&["busybox", "sleep", "1000"]);
    c.stop(&stopped);
    c.rm_f(&removed);
    c.kill(&killed);
    wait_not_running(&killed);
    let expected = env.expected_now();
    for id in [&kept, &started[0], &started[1]] {
        assert!(
            expected.contains_key(&env.key(IMAGE, id)),
            "{id} not running"
        );
    }
    assert_eq!(expected.len(), 3);
    // Long enough for the agent to notice and back off a few times.
    thread::sleep(Duration::from_secs(4).saturating_sub(cut_at.elapsed()));
    agent.assert_running();
    assert_eq!(
        docker_outages(&agent).0,
        1,
        "one `dependency unavailable` warning for Docker; warnings:\n{}",
        agent.warnings().join("\n")
    );

    relay.restore();
    let restored = Instant::now();
    env.wait_records(HEAL, &expected);
    eprintln!(
        "exact {:?} after the relay was restored",
        restored.elapsed()
    );

    // Events flow again: a start and a removal after the outage are seen.
    let late = with_port(&env);
    c.rm_f(&kept);
    let expected = env.expected_now();
    assert!(expected.contains_key(&env.key(IMAGE, &late)));
    env.wait_records(REACT, &expected);
    agent.assert_running();
    assert_eq!(
        docker_outages(&agent),
        (1, 1),
        "one warning and one `dependency back` line for the outage; stderr:\n{}",
        agent.lines().join("\n")
    );
}

#[test]
fn docker_event_stream_broken_while_docker_stays_up() {
    let env = TestEnv::new("docker_stream");
    let relay = DockerRelay::start();
    let mut agent = env.start_agent(&["--docker-host", &relay.docker_host()]);
    let c = &env.containers;
    let first = with_port(&env);
    let second = with_port(&env);
    env.wait_records(REACT, &env.expected_now());

    for round in 0..3 {
        // Sever the event stream (and any pooled connection) and change
        // things right away, before the agent can have re-subscribed.
        relay.drop_connections();
        let broken = Instant::now();
        let started = with_port(&env);
        if round == 0 {
            c.rm_f(&first);
        }
        if round == 1 {
            c.stop(&second);
        }
        let expected = env.expected_now();
        assert!(expected.contains_key(&env.key(IMAGE, &started)));
        env.wait_records(HEAL, &expected);
        eprintln!(
            "round {round}: exact {:?} after the break",
            broken.elapsed()
        );
        agent.assert_running();
    }
    let (down, back) = docker_outages(&agent);
    assert_eq!(
        down, back,
        "every outage logged ends with `dependency back`"
    );
    assert!(
        down <= 3,
        "at most one warning per broken stream; warnings:\n{}",
        agent.warnings().join("\n")
    );
}
