//! A burst of 100 labelled containers started and then removed with 8-way
//! concurrency: every one is registered with its exact value, and afterwards
//! nothing is left under the host prefix.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

const CONTAINERS: usize = 100;
const WORKERS: usize = 8;
const BURST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `job(i)` for every `i < count` on `WORKERS` threads.
fn in_parallel(count: usize, job: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    break;
                }
                job(i);
            });
        }
    });
}

/// Container id -> public port of `127.0.0.1::80`, in one `docker inspect`.
fn loopback_ports(ids: &[String]) -> BTreeMap<String, String> {
    let mut args = vec![
        "inspect",
        "--format",
        "{{.Id}} {{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}",
    ];
    args.extend(ids.iter().map(String::as_str));
    docker(&args)
        .lines()
        .map(|l| {
            let (id, port) = l.split_once(' ').expect("id and port");
            (id.to_string(), port.to_string())
        })
        .collect()
}

#[test]
fn burst_of_starts_and_removals() {
    let env = TestEnv::new("burst");
    let _agent = env.start_agent(&[]);

    let ids = Mutex::new(Vec::new());
    in_parallel(CONTAINERS, |_| {
        let id = env
            .containers
            .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
        ids.lock().unwrap().push(id);
    });
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), CONTAINERS);

    let expected: BTreeMap<String, String> = loopback_ports(&ids)
        .into_iter()
        .map(|(id, port)| {
            (
                env.key(IMAGE, &id),
                expected_value(&id, IMAGE, &[("127.0.0.1", &port, "80", "tcp")]),
            )
        })
        .collect();
    assert_eq!(expected.len(), CONTAINERS);
    env.wait_records(BURST_TIMEOUT, &expected);
    let leases: BTreeSet<i64> = env.records().values().map(|r| r.lease).collect();
    assert_eq!(leases.len(), 1, "all keys ride one lease: {leases:?}");

    in_parallel(CONTAINERS, |i| env.containers.rm_f(&ids[i]));
    env.wait_records(BURST_TIMEOUT, &BTreeMap::new());
}
