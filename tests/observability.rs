//! What an operator sees: the Prometheus `/metrics` and the `/healthz`
//! endpoint of `--metrics-addr` before, during and after an etcd outage (an
//! unknown path is 404; a busy or invalid address is a configuration error),
//! and `--log-format json` / `LOG_FORMAT=json`, where every stderr line is one
//! JSON object and a registration carries `container_id`, `image` and `key`.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

/// Within how long `/healthz` and `/metrics` must follow an etcd outage.
const NOTICE_WITHIN: Duration = Duration::from_secs(5);

fn with_port(env: &TestEnv) -> String {
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
}

fn spawn(args: &[String], envs: &[(&str, &str)]) -> Agent {
    Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), envs)
}

// ------------------------------------------------------------------ metrics

fn healthz(addr: &str) -> u16 {
    http_get(addr, "/healthz")
        .unwrap_or_else(|e| panic!("GET /healthz: {e}"))
        .0
}

/// Every sample of `/metrics`, by series (`name{labels}`).
fn metrics(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {l:?}: {e}"));
            (series.to_string(), value)
        })
        .collect()
}

/// The value of one series; panics with the whole exposition if absent.
fn sample(all: &BTreeMap<String, f64>, series: &str) -> f64 {
    *all.get(series)
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{all:#?}"))
}

const ETCD_CONNECTED: &str = "docker_etcd_register_connected{dependency=\"etcd\"}";
const DOCKER_CONNECTED: &str = "docker_etcd_register_connected{dependency=\"docker\"}";

#[test]
fn metrics_and_health_follow_an_etcd_outage() {
    let mut env = TestEnv::new("obs_metrics");
    let addr = metrics_addr();
    let mut agent = env.start_agent(&["--metrics-addr", &addr]);

    assert!(
        wait_until(Duration::from_secs(2), || healthz(&addr) == 200),
        "/healthz is not 200 once the agent is ready"
    );
    let m = metrics(&addr);
    assert_eq!(sample(&m, ETCD_CONNECTED), 1.0);
    assert_eq!(sample(&m, DOCKER_CONNECTED), 1.0);
    assert_eq!(sample(&m, "docker_etcd_register_records"), 0.0);

    let id = with_port(&env);
    env.wait_records(REACT, &env.expected_now());
    let mut m = BTreeMap::new();
    let counted = wait_until(Duration::from_secs(2), || {
        m = metrics(&addr);
        m.get("docker_etcd_register_records") == Some(&1.0)
    });
    assert!(
        counted,
        "records is not 1 after {id} was registered: {m:#?}"
    );
    let put = "docker_etcd_register_etcd_operations_total{operation=\"put\"}";
    assert!(sample(&m, put) >= 1.0, "{m:#?}");
    assert!(
        sample(
            &m,
            "docker_etcd_register_docker_events_total{action=\"start\"}"
        ) >= 1.0,
        "{m:#?}"
    );
    assert!(sample(&m, "docker_etcd_register_reconciles_total") >= 1.0);
    assert!(sample(&m, "docker_etcd_register_reconcile_duration_seconds_count") >= 1.0);
    assert!(sample(&m, "docker_etcd_register_reconcile_duration_seconds_sum") >= 0.0);
    let since = sample(&m, "docker_etcd_register_since_last_reconcile_seconds");
    assert!(
        (0.0..60.0).contains(&since),
        "since last reconcile: {since}"
    );
    assert_eq!(sample(&m, "docker_etcd_register_etcd_errors_total"), 0.0);

    // The container goes: a delete is counted, the gauge drops.
    env.containers.rm_f(&id);
    env.wait_records(REACT, &BTreeMap::new());
    let gone = wait_until(Duration::from_secs(2), || {
        m = metrics(&addr);
        m.get("docker_etcd_register_records") == Some(&0.0)
    });
    assert!(gone, "records is not 0 after the container went: {m:#?}");
    let delete = "docker_etcd_register_etcd_operations_total{operation=\"delete\"}";
    assert!(sample(&m, delete) >= 1.0, "{m:#?}");

    // Anything else is 404.
    let (status, _) = http_get(&addr, "/no-such-path").unwrap();
    assert_eq!(status, 404, "GET /no-such-path");

    // etcd goes away: unhealthy within 5 s.
    let kept = with_port(&env);
    env.wait_records(REACT, &env.expected_now());
    env.etcd.stop();
    let stopped = Instant::now();
    let mut health = 0;
    let noticed = wait_until(NOTICE_WITHIN, || {
        health = healthz(&addr);
        m = metrics(&addr);
        health == 503 && m.get(ETCD_CONNECTED) == Some(&0.0)
    });
    assert!(
        noticed,
        "{:?} after etcd stopped: /healthz {health}, metrics {m:#?}",
        stopped.elapsed()
    );
    eprintln!("unhealthy {:?} after etcd stopped", stopped.elapsed());
    assert!(
        sample(&m, "docker_etcd_register_etcd_errors_total") > 0.0,
        "{m:#?}"
    );
    assert_eq!(sample(&m, DOCKER_CONNECTED), 1.0);

    // And back: healthy within 5 s of etcd answering again.
    env.etcd.restart();
    let back = Instant::now();
    let healed = wait_until(NOTICE_WITHIN, || {
        health = healthz(&addr);
        m = metrics(&addr);
        health == 200 && m.get(ETCD_CONNECTED) == Some(&1.0)
    });
    assert!(
        healed,
        "{:?} after etcd came back: /healthz {health}, metrics {m:#?}",
        back.elapsed()
    );
    eprintln!("healthy {:?} after etcd came back", back.elapsed());
    let expected = env.expected_now();
    assert!(expected.contains_key(&env.key(IMAGE, &kept)));
    env.wait_records(REACT, &expected);
    agent.assert_running();
}

/// Runs the agent with `extra` arguments and environment and expects a
/// configuration error: exit code 2 within 10 s, one stderr line naming
/// `flag` and `var`.
fn assert_config_error(
    env: &TestEnv,
    extra: &[&str],
    envs: &[(&str, &str)],
    flag: &str,
    var: &str,
) {
    let mut args = env.agent_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut agent = spawn(&args, envs);
    let status = agent.wait_exit(Duration::from_secs(10));
    // The stderr reader may lag behind the exit a little.
    wait_until(Duration::from_secs(2), || !agent.lines().is_empty());
    let lines = agent.lines();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "{extra:?} {envs:?}: exit status {status:?}; stderr:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        lines.len(),
        1,
        "{extra:?} {envs:?}: one line on stderr expected:\n{}",
        lines.join("\n")
    );
    assert!(
        lines[0].contains(flag) && lines[0].contains(var),
        "{extra:?} {envs:?}: the error does not name {flag} and {var}: {}",
        lines[0]
    );
}

#[test]
fn busy_or_invalid_metrics_address_is_a_configuration_error() {
    let env = TestEnv::new("obs_metrics_busy");
    let busy = TcpListener::bind(("127.0.0.1", test_port())).unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (flag, var) = ("--metrics-addr", "REGISTER_METRICS_ADDR");
    assert_config_error(&env, &[flag, &addr], &[], flag, var);
    assert_config_error(&env, &[], &[(var, &addr)], flag, var);
    assert_config_error(&env, &[flag, "not-an-address"], &[], flag, var);
    assert_config_error(&env, &[flag, "127.0.0.1"], &[], flag, var);
    drop(busy);
    assert!(
        get_prefix(&env.endpoint(), "/").is_empty(),
        "something was written"
    );
}

// ------------------------------------------------------------- JSON logging

/// Parses every stderr line as a JSON object with `timestamp`, `level`,
/// `message` and `target`; panics naming the first line that is not.
fn json_lines(agent: &Agent) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let lines = agent.lines();
    assert!(!lines.is_empty(), "no stderr at all");
    lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("stderr line is not a JSON object: {line}"))
                .clone();
            for field in ["timestamp", "level", "message", "target"] {
                assert!(
                    object.get(field).is_some_and(|v| v.is_string()),
                    "no string field {field:?} in {line}"
                );
            }
            let level = object["level"].as_str().unwrap();
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
                "level {level:?} in {line}"
            );
            object
        })
        .collect()
}

/// Waits until a JSON line says `registered` for `key`; returns it.
fn registration(agent: &Agent, key: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut found = None;
    let ok = wait_until(REACT, || {
        found = agent.lines().iter().find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let object = value.as_object()?;
            (object.get("message")?.as_str()? == "registered"
                && object.get("key")?.as_str()? == key)
                .then(|| object.clone())
        });
        found.is_some()
    });
    assert!(
        ok,
        "no JSON `registered` line with key {key}; stderr:\n{}",
        agent.lines().join("\n")
    );
    found.unwrap()
}

fn stop(agent: &mut Agent) {
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    // Let the stderr reader catch up with the last lines.
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn json_log_format_from_flag_and_environment() {
    let env = TestEnv::new("obs_json");
    let mut args = env.agent_args();
    args.extend(["--log-format".to_string(), "json".to_string()]);
    let mut agent = spawn(&args, &[]);
    agent.wait_ready();
    let id = with_port(&env);
    let key = env.key(IMAGE, &id);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let line = registration(&agent, &key);
    assert_eq!(line["container_id"], serde_json::json!(id), "{line:?}");
    assert_eq!(line["image"], serde_json::json!(IMAGE), "{line:?}");
    assert_eq!(line["level"], serde_json::json!("INFO"), "{line:?}");
    stop(&mut agent);
    let objects = json_lines(&agent);
    let messages: Vec<&str> = objects
        .iter()
        .map(|o| o["message"].as_str().unwrap())
        .collect();
    for wanted in ["starting", "agent ready", "registered"] {
        assert!(messages.contains(&wanted), "no {wanted:?} in {messages:?}");
    }
    let starting = objects.iter().find(|o| o["message"] == "starting").unwrap();
    assert_eq!(
        starting.get("host_ip"),
        Some(&serde_json::json!(env.host_ip)),
        "{starting:?}"
    );

    // LOG_FORMAT=json: the restarted agent moves the record onto its lease,
    // which is a registration again.
    let mut agent = spawn(&env.agent_args(), &[("LOG_FORMAT", "json")]);
    agent.wait_ready();
    let line = registration(&agent, &key);
    assert_eq!(line["container_id"], serde_json::json!(id), "{line:?}");
    env.wait_records(REACT, &expected);
    stop(&mut agent);
    json_lines(&agent);

    let (flag, var) = ("--log-format", "LOG_FORMAT");
    assert_config_error(&env, &[flag, "xml"], &[], flag, var);
    assert_config_error(&env, &[], &[(var, "xml")], flag, var);
}
