//! A hung Docker engine (run on its own, after the other suites: it freezes
//! the engine under every test): dockerd is stopped with SIGSTOP for 20 s and
//! continued. The agent's lease (`--ttl 6`) must be kept alive all along, so
//! no record expires and no DELETE is seen, and once dockerd answers again
//! the records are exact within 5 s.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const FROZEN: Duration = Duration::from_secs(20);
/// After dockerd answers again: the state is exact within this.
const EXACT_AFTER_THAW: Duration = Duration::from_secs(5);

fn signal(pids: &[u32], signal: &str) {
    for pid in pids {
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

/// Continues dockerd when the test ends, even on panic.
struct Thaw(Vec<u32>);

impl Drop for Thaw {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

#[test]
fn dockerd_freeze_lets_no_record_expire() {
    let env = TestEnv::new("dockerd_freeze");
    let metrics_port = test_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    // A resync every 2 s: the listings it asks for hang on the frozen engine.
    let mut agent = env.start_agent(&[
        "--ttl",
        "6",
        "--resync",
        "2",
        "--metrics-addr",
        &metrics_addr,
    ]);
    let staying = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let leaving = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let before = env.expected_now();
    assert_eq!(before.len(), 2);
    env.wait_records(REACT, &before);
    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());

    let pids = dockerd_pids();
    assert!(!pids.is_empty(), "no dockerd process found");
    let thaw = Thaw(pids.clone());
    signal(&pids, "-STOP");
    let frozen = Instant::now();
    while frozen.elapsed() < FROZEN {
        let keys = env.keys();
        assert_eq!(
            keys,
            before.keys().cloned().collect(),
            "records changed {:?} into dockerd's freeze",
            frozen.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(thaw);
    eprintln!("dockerd continued after {:?}", frozen.elapsed());
    agent.assert_running();

    // The engine answers again: changes made now are followed within 5 s.
    env.containers.rm_f(&leaving);
    let arrived = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let changed = Instant::now();
    let expected = env.expected_now();
    assert!(expected.contains_key(&env.key(IMAGE, &staying)));
    assert!(expected.contains_key(&env.key(IMAGE, &arrived)));
    assert_eq!(expected.len(), 2);
    env.wait_records(EXACT_AFTER_THAW, &expected);
    eprintln!("exact {:?} after the changes", changed.elapsed());

    let staying_key = env.key(IMAGE, &staying);
    let deletes: Vec<_> = watch
        .events()
        .into_iter()
        .filter(|e| e.delete && e.key == staying_key)
        .collect();
    assert!(
        deletes.is_empty(),
        "the record of a container that kept running was deleted: {deletes:?}"
    );
    assert!(
        !agent.has_log("lease lost"),
        "the lease was lost while dockerd was frozen:\n{}",
        agent.lines().join("\n")
    );
    let healthy = wait_until(EXACT_AFTER_THAW, || {
        http_get(&metrics_addr, "/healthz").is_ok_and(|(status, _)| status == 200)
    });
    assert!(healthy, "healthy again once dockerd answers");
}
