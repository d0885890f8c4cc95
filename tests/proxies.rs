//! Envoy and Traefik, the load balancers that take a new configuration
//! without a reload, on the whole real path: containers → the agent → etcd
//! → one `render` with the shipped examples (Envoy's two files, Traefik's
//! one) → the real proxy (scripts/setup-proxies.sh installs both) on this
//! test's own loopback ports → a client on loopback. Each test runs once
//! per proxy:
//!
//! - a rolling replacement loses no request, and the replacement serves
//!   soon after `docker run`;
//! - a service whose last backend stopped stays a valid, refusing frontend
//!   and serves again when a backend returns;
//! - records written by hand (names with quotes, newlines and template
//!   syntax, junk values, names that read as YAML or as another name's
//!   identifier) leave the proxy serving, accepting every file, and
//!   applying the next change.

mod common;

use std::time::{Duration, Instant};

use common::lb::*;
use common::proxies::{Kind, Proxy};
use common::*;

#[test]
fn envoy_follows_a_rolling_replacement_without_a_failed_request() {
    rolling_replacement(Kind::Envoy);
}

#[test]
fn traefik_follows_a_rolling_replacement_without_a_failed_request() {
    rolling_replacement(Kind::Traefik);
}

#[test]
fn envoy_keeps_an_emptied_service_and_serves_its_return() {
    emptied_and_back(Kind::Envoy);
}

#[test]
fn traefik_keeps_an_emptied_service_and_serves_its_return() {
    emptied_and_back(Kind::Traefik);
}

#[test]
fn envoy_serves_on_after_hostile_records_and_applies_the_next_change() {
    hostile_records(Kind::Envoy);
}

#[test]
fn traefik_serves_on_after_hostile_records_and_applies_the_next_change() {
    hostile_records(Kind::Traefik);
}

/// The test's environment and agent, once the proxy's binary is known to
/// run (a missing one fails before any container starts).
fn env_for(kind: Kind, test: &str) -> (TestEnv, Agent) {
    kind.require();
    require_docker();
    let env = TestEnv::new(&format!("proxies-{test}-{}", kind.program()));
    let agent = env.start_agent(&[]);
    (env, agent)
}

/// Two backends behind the proxy; one stopped, a replacement started,
/// while a client sends requests: none fails (the agent drains the stopped
/// one's record at its stop signal, the proxy applies the file while it
/// still serves), and the replacement serves soon after `docker run`.
fn rolling_replacement(kind: Kind) {
    let (env, _agent) = env_for(kind, "rolling");
    let port = private_port();
    let first = run_backend(&env.containers, port);
    let second = run_backend(&env.containers, port);
    let mut lb = Proxy::start(kind, &env, &[port]);
    assert!(wait_until(REACT, || lb.servers() == 2), "{}", lb.describe());
    for id in [&first, &second] {
        assert!(
            wait_served_by(port, &hostname_of(id), SLOW).is_some(),
            "{id} never served:\n{}",
            lb.describe()
        );
    }

    let client = ClientLoop::start(port);
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    env.containers.stop(&first);
    let replacement = run_backend(&env.containers, port);
    let started = Instant::now();
    let name = hostname_of(&replacement);
    let served = |a: &Answer| a.result.as_deref() == Ok(name.as_str());
    assert!(
        wait_until(REACT, || client.answers().iter().any(served)),
        "the replacement was never served:\n{}",
        lb.describe()
    );
    std::thread::sleep(Duration::from_millis(500));
    let answers = client.finish();
    let first_served = answers
        .iter()
        .find(|a| served(a))
        .map(|a| a.at.saturating_duration_since(started))
        .unwrap();
    let failed: Vec<String> = answers
        .iter()
        .filter(|a| a.result.is_err())
        .map(|a| {
            let after = a.at.saturating_duration_since(stopping);
            format!("{after:?} after docker stop began: {:?}", a.result)
        })
        .collect();
    eprintln!(
        "{}: {} requests, {} failed; docker run returned {:?} after docker stop began; \
         replacement served {first_served:?} after it",
        kind.program(),
        answers.len(),
        failed.len(),
        started - stopping
    );
    assert!(
        failed.is_empty(),
        "failed requests: {failed:#?}\n{}",
        lb.describe()
    );
    // A bound that only a stalled path misses, however loaded the machine:
    // scripts/bench-lb.sh measures how fast it is.
    assert!(
        first_served < Duration::from_secs(3),
        "the replacement served its first request {first_served:?} after docker run"
    );
    lb.assert_running();
    assert!(
        lb.render.warnings().is_empty(),
        "{:?}",
        lb.render.warnings()
    );
}

/// The only backend stops: the service stays in the files with no backend,
/// the proxy keeps its frontend and fails every connection, and serves
/// again as soon as a new backend is registered.
fn emptied_and_back(kind: Kind) {
    let (env, _agent) = env_for(kind, "empty");
    let port = private_port();
    let only = run_backend(&env.containers, port);
    let mut lb = Proxy::start(kind, &env, &[port]);
    assert!(
        wait_served_by(port, &hostname_of(&only), SLOW).is_some(),
        "{}",
        lb.describe()
    );

    env.containers.stop(&only);
    assert!(
        wait_until(REACT, || lb.servers() == 0),
        "the backend stayed:\n{}",
        lb.describe()
    );
    assert!(lb.renders_frontend(port), "{}", lb.describe());
    assert!(
        wait_until(REACT, || get(port).is_err()),
        "the stopped backend is still served:\n{}",
        lb.describe()
    );
    assert!(
        lb.runs_frontend(port),
        "the frontend is gone:\n{}",
        lb.describe()
    );
    lb.assert_running();

    let back = run_backend(&env.containers, port);
    assert!(
        wait_served_by(port, &hostname_of(&back), REACT).is_some(),
        "the new backend was never served:\n{}",
        lb.describe()
    );
    lb.assert_running();
}

/// Records written straight into etcd by whoever may write a prefix: keys
/// and values `render` skips (quotes, newlines, YAML and JSON specials,
/// Go template syntax that Traefik would execute, junk JSON), and records
/// in the grammar whose names are meant to confuse (YAML's `null`, names
/// whose identifiers YAML reads as numbers, a name spelled as another one's
/// identifier, the name with the longest identifier). The proxy
/// accepts every file, runs a frontend for each record in the grammar,
/// still serves the good backend, and applies the next change.
fn hostile_records(kind: Kind) {
    let (env, _agent) = env_for(kind, "hostile");
    let port = private_port();
    let good = run_backend(&env.containers, port);
    env.wait_key(REACT, &env.key(IMAGE, &good));
    // The longest name whose identifier is the longest: every dot is three
    // characters of it.
    let long = format!("a{}", ".".repeat(254));
    let tricky: Vec<(&str, u16)> = ["web.v1", "web_2ev1", "null", "1", "0x1", long.as_str()]
        .into_iter()
        .map(|service| (service, private_port()))
        .collect();
    let mut frontends = vec![port];
    frontends.extend(tricky.iter().map(|(_, p)| *p));
    let mut lb = Proxy::start(kind, &env, &frontends);
    assert!(
        wait_served_by(port, &hostname_of(&good), SLOW).is_some(),
        "{}",
        lb.describe()
    );

    // Under a loopback host no agent runs on (a loopback backend counts
    // only under a loopback host); their backends on ports where nothing
    // listens.
    let host = host_ip_for(&format!("{}-by-hand", env.id));
    let nowhere = test_port().to_string();
    let endpoint = env.endpoint();
    for (n, (service, frontend)) in tricky.iter().enumerate() {
        let id = format!("{:064x}", n + 1);
        let ip = if n % 2 == 0 { "127.0.0.1" } else { "::1" };
        let bindings = [(ip, nowhere.as_str(), &*frontend.to_string(), "tcp")];
        let value = expected_value(&id, IMAGE, &bindings);
        put(&endpoint, &record_key(&host, service, &id), &value, 0);
    }
    let id = "e".repeat(64);
    let good_value = expected_value(&id, IMAGE, &[("127.0.0.1", &nowhere, "80", "tcp")]);
    let skipped: Vec<(String, String)> = vec![
        (format!("web\"\n  evil: {{x: 1}}/{id}"), good_value.clone()),
        (
            format!("web{{{{ fail \"boom\" }}}}/{id}"),
            good_value.clone(),
        ),
        (format!("web: [x]/{id}"), good_value.clone()),
        ("web/not-a-container".to_owned(), good_value.clone()),
        (format!("web/{id}"), r#"[{"container":"#.to_owned()),
        (
            format!("web2/{id}"),
            good_value.replace("127.0.0.1", "127.0.0.1\"}\n- address: \"10.0.0.1:80"),
        ),
        (
            format!("web3/{id}"),
            good_value.replace("\"80\"", "\"80}}}}\\n  - {{{{\""),
        ),
    ];
    for (rest, value) in &skipped {
        put(&endpoint, &format!("/registered/{host}/{rest}"), value, 0);
    }

    assert!(
        wait_until(REACT, || tricky
            .iter()
            .all(|(_, p)| lb.renders_frontend(*p))),
        "the records in the grammar were not rendered:\n{}",
        lb.describe()
    );
    assert!(
        wait_until(REACT, || tricky.iter().all(|(_, p)| lb.runs_frontend(*p))),
        "the proxy runs no frontend for some of them:\n{}",
        lb.describe()
    );
    assert!(
        lb.render.wait_for_log("not a record", REACT),
        "{:?}",
        lb.render.lines()
    );
    assert_eq!(
        get(port).as_deref(),
        Ok(hostname_of(&good).as_str()),
        "{}",
        lb.describe()
    );
    lb.assert_running();

    // The next change is applied: its configuration is still the proxy's.
    let next = run_backend(&env.containers, port);
    assert!(
        wait_served_by(port, &hostname_of(&next), REACT).is_some(),
        "the next backend was never served:\n{}",
        lb.describe()
    );
    assert!(
        wait_served_by(port, &hostname_of(&good), REACT).is_some(),
        "the good backend is no longer served:\n{}",
        lb.describe()
    );
    lb.assert_running();
}
