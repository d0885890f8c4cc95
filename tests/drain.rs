//! Drain before stop: `docker stop` sends the container's stop signal and
//! waits; the record goes at that signal, while the container still runs and
//! finishes what it serves, so that load balancers send it nothing new. A
//! signal that does not ask it to stop (SIGHUP, a reload) changes nothing;
//! a container that survives its stop signal gets its record back after its
//! stop timeout and a grace of 5 s. Drains are counted in `/metrics`.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A container that takes 2 s to shut down after SIGTERM, and ignores
/// SIGHUP: busybox sh runs the trap once the `sleep` in progress ends.
const SLOW_TO_STOP: &str =
    "trap 'sleep 2; exit 0' TERM; trap '' HUP; while true; do sleep 0.1; done";
/// A container that exits at SIGINT, which its engine then starts again.
const EXITS_AT_INT: &str = "trap 'exit 3' INT; while true; do sleep 0.1; done";
/// A container that ignores SIGTERM altogether.
const DEAF: &str = "trap '' TERM; while true; do sleep 0.1; done";

fn drains_total(metrics_addr: &str) -> f64 {
    let (status, body) = http_get(metrics_addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix("docker_etcd_register_drains_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drains_total in /metrics:\n{body}"))
}

#[test]
fn the_record_goes_at_the_stop_signal_before_the_container_exits() {
    let env = TestEnv::new("drain_stop");
    let metrics_addr = metrics_addr();
    let _agent = env.start_agent(&["--metrics-addr", &metrics_addr]);
    let id = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sh", "-c", SLOW_TO_STOP]);
    let (key, _) = env.loopback_80_record(&id);
    env.wait_key(REACT, &key);

    // SIGHUP: a reload; the record stays.
    docker(&["kill", "-s", "HUP", &id]);
    thread::sleep(Duration::from_secs(1));
    assert!(env.keys().contains(&key), "SIGHUP removed the record");
    assert_eq!(drains_total(&metrics_addr), 0.0);

    let stopping = Instant::now();
    let stop = {
        let id = id.clone();
        thread::spawn(move || docker(&["stop", &id]))
    };
    env.wait_gone(REACT, &key);
    let gone_after = stopping.elapsed();
    assert!(
        is_running(&id),
        "the record went only when the container exited ({gone_after:?})"
    );
    assert!(gone_after < Duration::from_secs(1), "{gone_after:?}");
    assert_eq!(drains_total(&metrics_addr), 1.0);
    stop.join().expect("docker stop");
    assert!(
        stopping.elapsed() >= Duration::from_millis(1500),
        "the container took its 2 s to stop"
    );
    assert!(!env.keys().contains(&key));
}

#[test]
fn a_container_that_survives_its_stop_signal_gets_its_record_back() {
    let env = TestEnv::new("drain_survivor");
    let _agent = env.start_agent(&[]);
    let id = env.containers.run(&[
        "--stop-timeout",
        "1",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sh",
        "-c",
        DEAF,
    ]);
    let (key, value) = env.loopback_80_record(&id);
    env.wait_key(REACT, &key);

    let signalled = Instant::now();
    docker(&["kill", "-s", "TERM", &id]);
    env.wait_gone(REACT, &key);
    assert!(is_running(&id));
    // Back after its stop timeout (1 s) and the grace of 5 s.
    let record = env.wait_key(Duration::from_secs(12), &key);
    let back_after = signalled.elapsed();
    assert!(
        back_after >= Duration::from_secs(5),
        "back too early: {back_after:?}"
    );
    assert_eq!(record.value, value);
}

/// `docker kill -s INT` of a container whose stop signal is another one:
/// the kill drains it (SIGINT asks it to stop), it exits, and its restart
/// policy starts it again at once. The restarted container is registered
/// again, like one restarted by `docker restart`.
#[test]
fn a_container_its_restart_policy_starts_again_after_a_kill_is_registered_again() {
    let env = TestEnv::new("drain_restart_policy");
    let _agent = env.start_agent(&[]);
    let id = env.containers.run(&[
        "--restart",
        "always",
        "--stop-signal",
        "SIGUSR1",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sh",
        "-c",
        EXITS_AT_INT,
    ]);
    let (key, value) = env.loopback_80_record(&id);
    env.wait_key(REACT, &key);
    let restarts = |id: &str| docker(&["inspect", "-f", "{{.RestartCount}}", id]);
    assert_eq!(restarts(&id).trim(), "0");

    let killed = Instant::now();
    docker(&["kill", "-s", "INT", &id]);
    let deadline = killed + Duration::from_secs(10);
    while restarts(&id).trim() == "0" {
        assert!(
            Instant::now() < deadline,
            "the engine did not start it again"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(is_running(&id));
    let record = env.wait_key(REACT, &key);
    assert_eq!(record.value, value);
    // And it stays: no drain left behind to take it away again.
    thread::sleep(Duration::from_secs(2));
    assert!(env.keys().contains(&key), "the record went again");
}
