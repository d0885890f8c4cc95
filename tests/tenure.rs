//! Who owns a host's records, under faults of the network between the
//! agents and etcd (docs/host-lock.md: One agent per host): a holder cut off from etcd
//! without a reset (packets dropped, connections left open) loses its lease
//! after the TTL and a standby takes over; the cut-off agent says so on
//! `/healthz` (503) and in `host_lock_held` instead of answering 200 for as
//! long as the partition lasts. `--deregister-on-exit` is fenced by the
//! lock like every write (a run that lost the host removes nothing of the
//! next holder's) and has a budget that a slow etcd fits in.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::etcd_faults::*;
use common::partition::Partition;
use common::relay_stall::FrozenEtcd;
use common::*;

/// A short TTL, so that the lease of a cut-off holder expires soon.
const TTL_SECS: &str = "4";

/// An agent of `env` that reaches etcd at `endpoint`, with `--metrics-addr`.
fn spawn_agent_via(env: &TestEnv, endpoint: &str, metrics_addr: &str) -> Agent {
    spawn_agent_with(env, endpoint, metrics_addr, &[])
}

/// Like `spawn_agent_via`, with `extra` flags.
fn spawn_agent_with(env: &TestEnv, endpoint: &str, metrics_addr: &str, extra: &[&str]) -> Agent {
    let mut args = env.agent_args();
    let at = args.iter().position(|a| a == "--etcd-endpoints").unwrap() + 1;
    args[at] = endpoint.to_owned();
    args.extend(["--metrics-addr", metrics_addr].map(String::from));
    if !extra.contains(&"--ttl") {
        args.extend(["--ttl", TTL_SECS].map(String::from));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

/// An agent of `env` that follows the engine through `relay`.
fn spawn_agent_on(env: &TestEnv, relay: &DockerRelay) -> Agent {
    let docker_host = relay.docker_host();
    spawn_agent_with(
        env,
        &env.endpoint(),
        &metrics_addr(),
        &["--docker-host", &docker_host],
    )
}

fn signal(agent: &Agent, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &agent.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {}", agent.pid());
}

fn records_leases(env: &TestEnv) -> Vec<i64> {
    env.records().values().map(|r| r.lease).collect()
}

#[test]
fn a_holder_cut_off_from_etcd_is_not_healthy_once_its_lease_is_gone() {
    let env = TestEnv::new("tenure_partition");
    let partition = Partition::to(&env.endpoint());
    let (addr_a, addr_b) = (metrics_addr(), metrics_addr());
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

/// A holder with `--deregister-on-exit` paused past its lease: a standby
/// holds the host meanwhile. Told to stop while paused and resumed, it may
/// still believe it holds the host when it deregisters, but that is fenced
/// by its lock key, which is gone (or it has noticed that its lease is
/// gone first): not one of the new holder's records is deleted.
#[test]
fn a_run_that_lost_the_host_deregisters_nothing_of_the_next_holders() {
    let env = TestEnv::new("tenure_fenced_deregister");
    let (addr_a, addr_b) = (metrics_addr(), metrics_addr());
    let mut paused = spawn_agent_with(&env, &env.endpoint(), &addr_a, &["--deregister-on-exit"]);
    paused.wait_ready();
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    env.wait_records(REACT, &env.expected_now());
    let old_lease = records_leases(&env)[0];
    let mut standby = spawn_agent_via(&env, &env.endpoint(), &addr_b);
    assert!(standby.wait_for_log("another agent holds this host", Duration::from_secs(20)));

    signal(&paused, "STOP");
    let moved = wait_until(Duration::from_secs(20), || {
        let leases = records_leases(&env);
        !leases.is_empty() && leases.iter().all(|l| *l != old_lease)
    });
    if !moved {
        signal(&paused, "CONT");
        panic!(
            "the standby did not take over; stderr:\n{}",
            standby.lines().join("\n")
        );
    }
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());
    signal(&paused, "TERM");
    signal(&paused, "CONT");
    assert!(
        paused.wait_exit(Duration::from_secs(15)).is_some(),
        "the resumed agent did not exit"
    );
    thread::sleep(Duration::from_millis(500));
    let deletes: Vec<_> = watch.events().into_iter().filter(|e| e.delete).collect();
    assert!(
        deletes.is_empty(),
        "the run that lost the host deleted the next holder's records: {deletes:?}\nits stderr:\n{}",
        paused.lines().join("\n")
    );
    env.wait_records(REACT, &expected);
    standby.assert_running();
}

/// `--deregister-on-exit` with `--ttl 0` (the records stay unless removed):
/// an etcd that answers nothing for 1.5 s when the agent stops still sees
/// them removed, within the budget.
#[test]
fn deregistering_waits_for_a_slow_etcd() {
    let env = TestEnv::new("tenure_slow_deregister");
    let addr = metrics_addr();
    let mut agent = spawn_agent_with(
        &env,
        &env.endpoint(),
        &addr,
        &["--deregister-on-exit", "--ttl", "0"],
    );
    agent.wait_ready();
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    env.wait_records(REACT, &env.expected_now());

    let frozen = FrozenEtcd::freeze(&env.etcd);
    agent.sigterm();
    thread::sleep(Duration::from_millis(1500));
    frozen.thaw();
    assert!(
        agent.wait_exit(Duration::from_secs(10)).is_some(),
        "the agent did not exit"
    );
    assert!(
        agent.has_log("deregistered this host"),
        "stderr:\n{}",
        agent.lines().join("\n")
    );
    assert!(
        env.records().is_empty(),
        "records left: {:#?}",
        env.records()
    );
}

/// A run killed with SIGKILL (a crash, an abort) and started again by its
/// supervisor: its lock key and records ride on a lease that lives for the
/// whole TTL, but the new run sees that the holder is its own previous run
/// on this machine, whose process is gone, and takes over at once, moving
/// every record onto its lease in place: no record sees a DELETE.
#[test]
fn a_crash_restart_takes_over_at_once_and_in_place() {
    let env = TestEnv::new("tenure_crash_restart");
    let ttl = ["--ttl", "60"];
    let mut crashed = spawn_agent_with(&env, &env.endpoint(), &metrics_addr(), &ttl);
    crashed.wait_ready();
    for _ in 0..2 {
        env.containers
            .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    }
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let old_lease = records_leases(&env)[0];
    crashed.sigkill();
    assert!(crashed.wait_exit(Duration::from_secs(5)).is_some());

    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());
    let restarted_at = Instant::now();
    let mut restarted = spawn_agent_with(&env, &env.endpoint(), &metrics_addr(), &ttl);
    let mut last = Default::default();
    let moved = wait_until(Duration::from_secs(5), || {
        last = env.records();
        last.len() == expected.len()
            && last
                .iter()
                .all(|(k, r)| r.lease != old_lease && expected.get(k) == Some(&r.value))
    });
    assert!(
        moved,
        "the records were not moved onto the new run's lease within 5 s (its TTL is 60 s):\n{last:#?}\nstderr:\n{}",
        restarted.lines().join("\n")
    );
    eprintln!("moved {:?} after the restart", restarted_at.elapsed());
    let deletes: Vec<_> = watch.events().into_iter().filter(|e| e.delete).collect();
    assert!(deletes.is_empty(), "a restart deleted records: {deletes:?}");
    assert!(
        restarted.lines().iter().any(|l| l
            .contains("a previous run of this agent holds this host")
            && l.contains("gone=true")),
        "stderr:\n{}",
        restarted.lines().join("\n")
    );
    let new = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    env.wait_key(REACT, &env.key(IMAGE, &new));
    restarted.assert_running();
}

/// Two engines claim one host IP: an agent on dockerd holds it, and one on
/// Podman's socket is started with the same `--host-ip`. The second is in
/// conflict: it says so once (naming both engines), `/healthz` answers 503
/// `conflict`, `host_conflict{engine,holder_engine,…}` is 1, and it writes
/// nothing — not when the holder restarts either: the holder's next run
/// takes its host back, and none of its records is ever deleted.
#[test]
fn another_engine_with_the_same_host_ip_is_a_conflict_never_a_hand_over() {
    let env = TestEnv::new("tenure_two_engines");
    let mut holder = spawn_agent_via(&env, &env.endpoint(), &metrics_addr());
    holder.wait_ready();
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());

    let podman = Containers::on(Engine::Podman, &env.id);
    podman.run(&["-p", "127.0.0.1::80", PODMAN_IMAGE, "sleep", "1000"]);
    let addr = metrics_addr();
    let mut other = spawn_agent_with(
        &env,
        &env.endpoint(),
        &addr,
        &["--docker-host", &Engine::Podman.docker_host()],
    );
    const CONFLICT: &str = "an agent following another engine holds this host";
    assert!(
        other.wait_for_log(CONFLICT, Duration::from_secs(20)),
        "no conflict reported; stderr:\n{}",
        other.lines().join("\n")
    );
    let line = other
        .lines()
        .into_iter()
        .find(|l| l.contains(CONFLICT))
        .unwrap();
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains("engine=podman:") && line.contains("holder_engine=docker:"),
        "{line}"
    );
    let (_, body) = wait_healthz(&addr, 503, Duration::from_secs(5));
    assert!(body.starts_with("conflict"), "/healthz: {body:?}");
    let metrics = http_get(&addr, "/metrics").expect("GET /metrics").1;
    let series = metrics
        .lines()
        .find(|l| l.starts_with("docker_etcd_register_host_conflict{"))
        .unwrap_or_else(|| panic!("no host_conflict series:\n{metrics}"));
    assert!(
        series.contains("engine=\"podman:")
            && series.contains("holder_engine=\"docker:")
            && series.ends_with(" 1"),
        "{series}"
    );

    // The holder restarts: its next run takes the host back at once.
    holder.sigterm();
    assert!(holder.wait_exit(Duration::from_secs(10)).is_some());
    let mut next = spawn_agent_via(&env, &env.endpoint(), &metrics_addr());
    next.wait_ready();
    env.wait_records(REACT, &expected);
    // Past the conflicting agent's next look at the holder (every 10 s): it
    // finds the restarted holder, the same agent, and stays in conflict
    // without saying it again.
    std::thread::sleep(Duration::from_secs(12));
    for event in watch.events() {
        assert!(
            !event.delete,
            "a record of the holder's engine was deleted: {event:?}"
        );
    }
    env.wait_records(REACT, &expected);
    assert_eq!(other.count_log(&[CONFLICT]), 1, "said once");
    let (_, body) = wait_healthz(&addr, 503, Duration::from_secs(5));
    assert!(body.starts_with("conflict"), "/healthz: {body:?}");
    other.assert_running();
    next.assert_running();
}

/// The agent crashed (SIGKILL) or was restarted (SIGTERM) while its engine
/// does not answer (dockerd down with live-restore, its containers still
/// serving; here a relay in front of the socket that is cut): the new run
/// sees that the holder is its previous run, gone (a run stopped while its
/// engine is away keeps its lock key for that), takes the host over in the
/// name of the engine that run followed and keeps every record alive on its
/// own lease, for longer than the old lease lives; once the engine answers,
/// it reconciles.
fn restart_while_the_engine_is_away(name: &str, stop: fn(&Agent)) {
    let env = TestEnv::new(name);
    let mut relay = DockerRelay::start();
    let mut old = spawn_agent_on(&env, &relay);
    old.wait_ready();
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let old_lease = records_leases(&env)[0];

    relay.cut();
    assert!(
        old.wait_for_log("dependency unavailable", REACT),
        "the agent did not notice the engine going away"
    );
    stop(&old);
    assert!(old.wait_exit(Duration::from_secs(10)).is_some());
    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());
    let mut new = spawn_agent_on(&env, &relay);
    // Longer than the old lease (4 s) lives.
    thread::sleep(Duration::from_secs(9));
    let records = env.records();
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "records lost while the engine was away; stderr:\n{}",
        new.lines().join("\n")
    );
    assert!(
        records.values().all(|r| r.lease != old_lease),
        "the records still ride the old lease: {records:#?}"
    );
    relay.restore();
    env.wait_records(REACT, &expected);
    let gone = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    env.wait_key(REACT, &env.key(IMAGE, &gone));
    let deletes: Vec<_> = watch.events().into_iter().filter(|e| e.delete).collect();
    assert!(deletes.is_empty(), "records deleted: {deletes:?}");
    new.assert_running();
}

#[test]
fn a_crash_restart_while_the_engine_is_away_keeps_the_records_alive() {
    restart_while_the_engine_is_away("tenure_engine_away_kill", Agent::sigkill);
}

#[test]
fn a_sigterm_restart_while_the_engine_is_away_keeps_the_records_alive() {
    restart_while_the_engine_is_away("tenure_engine_away_term", Agent::sigterm);
}

/// Two agents on one machine for one host IP, following two engine sockets
/// (here two relays in front of one dockerd; in life dockerd and Podman):
/// when the holder is killed and the other one is restarted while its own
/// engine does not answer, it does not take the host in the name of the
/// holder's engine — the holder followed another `--docker-host` — and
/// writes nothing.
#[test]
fn a_run_of_another_docker_host_restarted_while_its_engine_is_away_takes_nothing() {
    let env = TestEnv::new("tenure_other_socket");
    let holder_relay = DockerRelay::start();
    let mut other_relay = DockerRelay::start();
    // A TTL that outlives the look below by far: the holder's lease must
    // still be alive then, or etcd's own expiry of its records (from 2.7 s
    // after the kill with `--ttl 4` and keep-alives every third of it) would
    // be taken for a write of the other run.
    let mut holder = spawn_agent_with(
        &env,
        &env.endpoint(),
        &metrics_addr(),
        &["--docker-host", &holder_relay.docker_host(), "--ttl", "15"],
    );
    holder.wait_ready();
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let holder_lease = records_leases(&env)[0];

    other_relay.cut();
    holder.sigkill();
    assert!(holder.wait_exit(Duration::from_secs(10)).is_some());
    let watch = Watch::prefix(&env.endpoint(), &env.host_prefix());
    let mut other = spawn_agent_on(&env, &other_relay);
    thread::sleep(Duration::from_secs(3));
    assert!(
        !other.has_log("taking the host over from our previous run"),
        "it took the host in the name of another socket's engine:\n{}",
        other.lines().join("\n")
    );
    assert!(
        watch.events().is_empty(),
        "it wrote under the host: {:?}",
        watch.events()
    );
    assert!(records_leases(&env).iter().all(|l| *l == holder_lease));
    other.assert_running();
}
