//! Process lifecycle: SIGTERM and SIGINT end the agent with code 0 within 2 s;
//! after a SIGKILL the lease expires and the host's records vanish; the
//! environment form of the original unit file (`HOST_IP`, `ETCD_ENDPOINT`
//! without a scheme, ...) works.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

fn register_one(env: &TestEnv) -> String {
    let id = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let public = host_port(&id, "80/tcp", "127.0.0.1");
    env.wait_records(
        REACT,
        &BTreeMap::from([(
            env.key(IMAGE, &id),
            expected_value(&id, IMAGE, &[("127.0.0.1", &public, "80", "tcp")]),
        )]),
    );
    id
}

fn assert_stops_on(signal: fn(&Agent), name: &str) {
    let env = TestEnv::new(name);
    let mut agent = env.start_agent(&[]);
    register_one(&env);

    let sent = Instant::now();
    signal(&agent);
    let status = agent.wait_exit(Duration::from_secs(5));
    let elapsed = sent.elapsed();
    let status = status.unwrap_or_else(|| panic!("{name}: agent still running 5 s after signal"));
    assert_eq!(status.code(), Some(0), "{name}: exit status {status}");
    assert!(
        elapsed <= Duration::from_secs(2),
        "{name}: took {elapsed:?} to exit"
    );
}

#[test]
fn sigterm_exits_zero_within_two_seconds() {
    assert_stops_on(Agent::sigterm, "lifecycle_sigterm");
}

#[test]
fn sigint_exits_zero_within_two_seconds() {
    assert_stops_on(Agent::sigint, "lifecycle_sigint");
}

#[test]
fn records_vanish_when_a_killed_agents_lease_expires() {
    let env = TestEnv::new("lifecycle_sigkill");
    let mut agent = env.start_agent(&["--ttl", "2"]);
    let id = register_one(&env);
    assert_ne!(env.records()[&env.key(IMAGE, &id)].lease, 0);

    agent.sigkill();
    let killed = Instant::now();
    assert!(agent.wait_exit(Duration::from_secs(5)).is_some());
    let gone = wait_until(
        Duration::from_secs(5).saturating_sub(killed.elapsed()),
        || env.records().is_empty(),
    );
    assert!(
        gone,
        "records still there {:?} after SIGKILL: {:#?}",
        killed.elapsed(),
        env.records()
    );
}

#[test]
fn environment_form_of_the_unit_file() {
    let env = TestEnv::new("lifecycle_env");
    let endpoint = format!("127.0.0.1:{}", env.etcd.client_port());
    let labels = format!("{},docker-etcd-register.env=yes", env.label());
    let mut agent = Agent::spawn(
        &[],
        &[
            ("HOST_IP", &env.host_ip),
            ("ETCD_ENDPOINT", &endpoint),
            ("REGISTER_REQUIRE_LABELS", &labels),
            ("REGISTER_TTL", "0"),
            ("REGISTER_PREFIX", "/services"),
        ],
    );
    agent.wait_ready();

    // Lacks the second required label.
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let id = env.containers.run(&[
        "--label",
        "docker-etcd-register.env=yes",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sleep",
        "1000",
    ]);
    let public = host_port(&id, "80/tcp", "127.0.0.1");
    let key = format!("/services/{}/{IMAGE}/{id}", env.host_ip);
    let value = expected_value(&id, IMAGE, &[("127.0.0.1", &public, "80", "tcp")]);
    let ep = env.endpoint();
    let mut last = BTreeMap::new();
    let ok = wait_until(REACT, || {
        // Everything under the prefix; the host lock lives outside it.
        last = get_prefix(&ep, "/services/");
        last.len() == 1 && last.get(&key).is_some_and(|r| r.value == value)
    });
    assert!(ok, "expected only {key} = {value}; etcd holds {last:#?}");
    assert_eq!(last[&key].lease, 0, "REGISTER_TTL=0 writes plain keys");
}
