//! A burst of labelled containers started and then removed concurrently
//! (Docker: 100, 8-way; Podman: 50, 4-way, see `Burst::of`): every one is
//! registered with its exact value, and afterwards nothing is left under the
//! host prefix. One body, both engines (`docker::…`, `podman::…`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

const BURST_TIMEOUT: Duration = Duration::from_secs(120);

on_each_engine!(burst_of_starts_and_removals);

/// The size of one engine's burst.
struct Burst {
    /// Containers started, then removed.
    containers: usize,
    /// `run` / `rm -f` commands at a time.
    workers: usize,
}

impl Burst {
    /// Docker's burst is the benchmark's; every `podman` command is a
    /// process of its own that takes the engine's locks and costs far more
    /// CPU than a `docker` one, so Podman's is smaller on this 2-core machine,
    /// still concurrent enough to interleave events.
    fn of(engine: Engine) -> Burst {
        match engine {
            Engine::Docker => Burst {
                containers: 100,
                workers: 8,
            },
            Engine::Podman => Burst {
                containers: 50,
                workers: 4,
            },
        }
    }
}

/// Runs `job(i)` for every `i < count` on `workers` threads.
fn in_parallel(count: usize, workers: usize, job: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
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

/// Container id -> public port of `127.0.0.1::80`, in one `inspect`.
fn loopback_ports(engine: Engine, ids: &[String]) -> BTreeMap<String, String> {
    engine
        .bindings_of(ids)
        .into_iter()
        .map(|(id, bindings)| {
            let port = bindings
                .iter()
                .find(|b| b.port == "80/tcp" && b.host_ip == "127.0.0.1")
                .unwrap_or_else(|| panic!("{id} has no 127.0.0.1 -> 80/tcp: {bindings:?}"))
                .host_port
                .clone();
            (id, port)
        })
        .collect()
}

fn burst_of_starts_and_removals(engine: Engine) {
    let env = TestEnv::on(engine, "burst");
    let burst = Burst::of(engine);
    let image = env.record_image();
    let _agent = env.start_agent(&[]);

    let ids = Mutex::new(Vec::new());
    in_parallel(burst.containers, burst.workers, |_| {
        let id = env.run_loopback_80();
        ids.lock().unwrap().push(id);
    });
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), burst.containers);

    let expected: BTreeMap<String, String> = loopback_ports(engine, &ids)
        .into_iter()
        .map(|(id, port)| {
            (
                env.key(image, &id),
                expected_value(&id, image, &[("127.0.0.1", &port, "80", "tcp")]),
            )
        })
        .collect();
    assert_eq!(expected.len(), burst.containers);
    env.wait_records(BURST_TIMEOUT, &expected);
    let leases: BTreeSet<i64> = env.records().values().map(|r| r.lease).collect();
    assert_eq!(leases.len(), 1, "all keys ride one lease: {leases:?}");

    in_parallel(burst.containers, burst.workers, |i| {
        env.containers.rm_f(&ids[i])
    });
    env.wait_records(BURST_TIMEOUT, &BTreeMap::new());
}
