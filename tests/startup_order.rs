//! Start-up order: the agent is started before etcd runs on its port and
//! before the Docker socket it was given exists. It must keep running through
//! a 10 s outage of both with only a handful of warnings (no log storm), say
//! that each dependency is unavailable, and once etcd and then Docker come up,
//! say `dependency back`, converge to the exact state and follow events.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const OUTAGE: Duration = Duration::from_secs(10);
/// Warnings allowed during the whole outage.
const HANDFUL: usize = 5;
/// The backoff is capped at 5 s; allow as much again for the first reconcile.
const CONVERGE: Duration = Duration::from_secs(10);

fn count(agent: &Agent, message: &str, dependency: &str) -> usize {
    agent.count_log(&[message, &format!("dependency=\"{dependency}\"")])
}

#[test]
fn agent_started_before_etcd_and_docker() {
    let mut env = TestEnv::with_etcd("startup_order", Etcd::reserve());
    let mut relay = DockerRelay::unstarted();
    // Containers that already run when the agent starts.
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    env.containers.run(&[
        "-p",
        "127.0.0.1::80",
        "-p",
        "127.0.0.1::53/udp",
        "busybox",
        "sleep",
        "1000",
    ]);
    env.containers.run(&["busybox", "sleep", "1000"]);

    let args = env.agent_args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let docker_host = relay.docker_host();
    args.extend(["--docker-host", &docker_host]);
    let mut agent = Agent::spawn(&args, &[]);

    let started = Instant::now();
    while started.elapsed() < OUTAGE {
        agent.assert_running();
        thread::sleep(Duration::from_millis(200));
    }
    agent.assert_running();
    let warnings = agent.warnings();
    assert!(
        warnings.len() <= HANDFUL,
        "{} warnings during a {OUTAGE:?} outage (at most {HANDFUL}):\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    assert!(
        !agent.has_log("agent ready"),
        "ready without Docker and etcd?\n{}",
        agent.lines().join("\n")
    );

    env.etcd.restart();
    thread::sleep(Duration::from_millis(500));
    relay.restore();
    let healed = Instant::now();
    let expected = env.expected_now();
    assert_eq!(expected.len(), 2);
    env.wait_records(CONVERGE.saturating_sub(healed.elapsed()), &expected);
    eprintln!("exact {:?} after both were up", healed.elapsed());
    assert!(agent.wait_for_log("agent ready", REACT), "no `agent ready`");

    // Events are followed from here on.
    let late = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let expected = env.expected_now();
    assert!(expected.contains_key(&env.key(IMAGE, &late)));
    env.wait_records(REACT, &expected);
    agent.assert_running();

    let stderr = agent.lines().join("\n");
    for dependency in ["docker", "etcd"] {
        let down = count(&agent, "dependency unavailable", dependency);
        let back = count(&agent, "dependency back", dependency);
        assert_eq!(
            (down, back),
            (1, 1),
            "{dependency}: want one `dependency unavailable` and one `dependency back` line; stderr:\n{stderr}"
        );
    }
}
