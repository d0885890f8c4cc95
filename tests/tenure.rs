//! Who owns a host's records, under faults of the network between the
//! agents and etcd (README: One agent per host): a holder cut off from etcd
//! without a reset (packets dropped, connections left open) loses its lease
//! after the TTL and a standby takes over; the cut-off agent says so on
//! `/healthz` (503) and in `host_lock_held` instead of answering 200 for as
//! long as the partition lasts.

mod common;

use std::time::{Duration, Instant};

use common::etcd_faults::*;
use common::partition::Partition;
use common::*;

/// A short TTL, so that the lease of a cut-off holder expires soon.
const TTL_SECS: &str = "4";

/// An agent of `env` that reaches etcd at `endpoint`, with `--metrics-addr`.
fn spawn_agent_via(env: &TestEnv, endpoint: &str, metrics_addr: &str) -> Agent {
    let mut args = env.agent_args();
    let at = args.iter().position(|a| a == "--etcd-endpoints").unwrap() + 1;
    args[at] = endpoint.to_owned();
    args.extend(["--metrics-addr", metrics_addr, "--ttl", TTL_SECS].map(String::from));
    Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

fn records_leases(env: &TestEnv) -> Vec<i64> {
    env.records().values().map(|r| r.lease).collect()
}

#[test]
fn a_holder_cut_off_from_etcd_is_not_healthy_once_its_lease_is_gone() {
    let env = TestEnv::new("tenure_partition");
    let partition = Partition::to(&env.endpoint());
    let (addr_a, addr_b) = (
        format!("127.0.0.1:{}", test_port()),
        format!("127.0.0.1:{}", test_port()),
    );
    let mut holder = spawn_agent_via(&env, &partition.endpoint(), &addr_a);
    holder.wait_ready();
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    env.wait_records(REACT, &env.expected_now());
    let holder_lease = records_leases(&env)[0];
    let mut standby = spawn_agent_via(&env, &env.endpoint(), &addr_b);
    assert!(
        standby.wait_for_log("another agent holds this host", Duration::from_secs(20)),
        "no standby; stderr:\n{}",
        standby.lines().join("\n")
    );
    assert_eq!(healthz(&addr_a).0, 200);

    partition.block();
    let cut = Instant::now();
    // The holder's lease expires a TTL after its last keep-alive; the
    // standby then holds the host and moves the records onto its lease.
    let moved = wait_until(Duration::from_secs(20), || {
        let leases = records_leases(&env);
        !leases.is_empty() && leases.iter().all(|l| *l != holder_lease)
    });
    assert!(
        moved,
        "the standby did not take over; standby stderr:\n{}",
        standby.lines().join("\n")
    );
    eprintln!("standby took over {:?} after the cut", cut.elapsed());
    env.wait_records(REACT, &env.expected_now());
    wait_healthz(&addr_b, 200, Duration::from_secs(10));

    let (status, body) = wait_healthz(&addr_a, 503, Duration::from_secs(10));
    eprintln!(
        "cut-off holder answers {status} {body:?} {:?} after the cut",
        cut.elapsed()
    );
    wait_metric(&addr_a, HOST_LOCK_HELD, 0.0, Duration::from_secs(5));

    // Healed, it finds the host held and stands by; nothing it does removes
    // a record.
    partition.heal();
    assert!(
        holder.wait_for_log("another agent holds this host", Duration::from_secs(30)),
        "the healed agent does not stand by; stderr:\n{}",
        holder.lines().join("\n")
    );
    env.wait_records(REACT, &env.expected_now());
    holder.assert_running();
    standby.assert_running();
}
