//! The monitoring shipped in `deploy/`: Prometheus's alerting rules
//! (`deploy/prometheus/alerts.yml`) pass `promtool check rules` and their unit
//! tests (`alerts.test.yml`) pass `promtool test rules`; each alert carries a
//! severity, a summary, a description and a runbook link to its section of
//! `docs/alerts.md`; the Grafana dashboard is a dashboard of schema 36 or
//! later on a data source variable whose queries Prometheus parses; and
//! every metric the rules and the dashboard name is one a running agent, or
//! a running `render`, really exports on its `/metrics`.
//!
//! promtool is Debian's `prometheus` package, which `scripts/setup.sh`
//! installs: without it these tests fail, they never pass by skipping.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/docker-etcd-register.json";
const RUNBOOK: &str = "docs/alerts.md";
/// Every metric of ours starts so; `render`'s with `RENDER_PREFIX`.
const PREFIX: &str = "docker_etcd_register_";
const RENDER_PREFIX: &str = "docker_etcd_register_render_";

fn read(relative: &str) -> String {
    let path = Path::new(MANIFEST_DIR).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `promtool args`, run in the project's directory; panics with its output
/// unless it succeeds, and loudly when promtool is not installed.
fn promtool(args: &[&str]) {
    let mut promtool = Command::new("promtool");
    promtool.args(args).current_dir(MANIFEST_DIR);
    rig::process::output_ok(
        &mut promtool,
        &format!("promtool {args:?}"),
        "install Debian's `prometheus` package, as scripts/setup.sh does (run it as root)",
    );
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    promtool(&["check", "rules", ALERTS]);
    promtool(&["test", "rules", ALERT_TESTS]);
}

// ------------------------------------------------------------ alerts.yml

/// Each alert's name with its other lines (up to the next alert or group).
fn alerts() -> BTreeMap<String, Vec<String>> {
    let mut alerts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in read(ALERTS).lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            let name = name.trim().to_string();
            assert!(!alerts.contains_key(&name), "alert {name} defined twice");
            alerts.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if line.starts_with("- name:") {
            current = None;
        } else if let Some(name) = &current {
            alerts.get_mut(name).unwrap().push(line.to_string());
        }
    }
    alerts
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_its_runbook() {
    let alerts = alerts();
    assert!(alerts.len() >= 13, "too few alerts: {alerts:?}");
    let docs = read(RUNBOOK);
    let anchors = common::markdown::anchors(&docs);
    let tests = read(ALERT_TESTS);
    for (name, lines) in &alerts {
        let field = |key: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("alert {name} has no {key}"))
        };
        assert!(
            ["critical", "warning", "info"].contains(&field("severity:").as_str()),
            "alert {name}: severity {}",
            field("severity:")
        );
        assert!(!field("summary:").is_empty() && !field("description:").is_empty());
        let runbook = format!("{RUNBOOK}#{}", name.to_lowercase());
        assert_eq!(field("runbook:"), runbook, "alert {name}'s runbook");
        assert!(
            anchors.contains(&name.to_lowercase()),
            "{RUNBOOK} has no section for {name} (anchors: {anchors:?})"
        );
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{ALERT_TESTS} does not test {name}"
        );
    }
}

// ------------------------------------------------------------ dashboard

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every string under a key `expr` or `query` (a panel's target, a query
/// variable's `label_values(...)`), anywhere in the dashboard.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(s) if key == "expr" || key == "query" => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// Each panel's targets' PromQL, by panel title.
fn panel_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target without expr");
            exprs.push((panel["title"].to_string(), expr.to_string()));
        }
    }
    exprs
}

#[test]
fn the_dashboard_is_on_a_data_source_variable_and_its_queries_parse() {
    let dashboard = dashboard();
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(schema >= 36, "schemaVersion {schema}");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
        "no data source variable `datasource`"
    );
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {}",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
        }
    }
    // Each query as a recording rule: promtool parses it as Prometheus would
    // (Grafana's $__rate_interval is a duration there).
    let exprs = panel_exprs(&dashboard);
    assert!(exprs.len() >= 20, "too few queries: {exprs:?}");
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            serde_json::json!({
                "record": format!("dashboard:query_{i}"),
                "expr": expr.replace("$__rate_interval", "5m"),
            })
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-rules.yml");
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, groups.to_string()).expect("write the rules");
    promtool(&["check", "rules", &file.to_string_lossy()]);
}

// ------------------------------------------------- names really exported

/// The metric names in `text`: identifiers that start with `PREFIX`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        if !before.is_some_and(is_ident) {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

/// Every name the rules (outside comments) and the dashboard's queries use.
fn names_used() -> BTreeSet<String> {
    let rules: String = read(ALERTS)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    let mut names = metric_names(&rules);
    names.extend(metric_names(&queries.join("\n")));
    names
}

/// The series names one `/metrics` exposition offers, by its `# TYPE`
/// lines (so a labelled family with no series yet counts too): a counter's
/// `_total`, a histogram's family name (queried as `_bucket`, `_sum`,
/// `_count`), a gauge's own.
fn exported(addr: &str) -> BTreeMap<String, String> {
    let (status, body) = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(status, 200, "GET {addr}/metrics: {body}");
    let mut names = BTreeMap::new();
    for line in body.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
        let name = match kind {
            "counter" if !name.ends_with("_total") => format!("{name}_total"),
            _ => name.to_string(),
        };
        names.insert(name, kind.to_string());
    }
    names
}

/// The names of `used` with (or, for the agent, without) `render_` that
/// `exported` does not offer; a histogram is queried by its series.
fn missing(
    used: &BTreeSet<String>,
    render: bool,
    exported: &BTreeMap<String, String>,
) -> Vec<String> {
    let ours: Vec<&String> = used
        .iter()
        .filter(|name| name.starts_with(RENDER_PREFIX) == render)
        .collect();
    assert!(ours.len() >= 4, "too few names to check in {used:?}");
    ours.into_iter()
        .filter(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| exported.get(*base).is_some_and(|k| k == "histogram"))
                .unwrap_or(name);
            !exported.contains_key(family)
        })
        .cloned()
        .collect()
}

/// Waits until every name the rules and the dashboard use for the agent
/// (`render` false) or for `render` is among those `scrape` finds; panics
/// naming the missing ones.
fn assert_exported(render: bool, mut scrape: impl FnMut() -> BTreeMap<String, String>) {
    let used = names_used();
    let mut exported = BTreeMap::new();
    let mut absent = Vec::new();
    wait_until(REACT, || {
        exported = scrape();
        absent = missing(&used, render, &exported);
        absent.is_empty()
    });
    assert!(
        absent.is_empty(),
        "named in {ALERTS} or {DASHBOARD} but not exported: {absent:?}; exported: {exported:#?}"
    );
}

/// A labelled family appears on `/metrics` only once it has a series, so
/// the agent gets one of each: a registered container (events, etcd puts)
/// whose service label is outside the grammar (a rejected input), and a
/// second agent whose host an agent of another engine holds (a conflict):
/// that holder's candidate key, as its agent writes it, on a lease.
#[test]
fn every_agent_metric_the_rules_and_the_dashboard_name_is_exported() {
    let env = TestEnv::new("deploy_monitoring");
    let addr = metrics_addr();
    let mut agent = env.start_agent(&["--metrics-addr", &addr]);
    let bad_label = "docker-etcd-register.service=not a name";
    let run = [
        "-l",
        bad_label,
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sleep",
        "1000",
    ];
    env.containers.run(&run);
    env.wait_records(REACT, &env.expected_now());
    assert!(agent.wait_for_log("container input outside the grammar", REACT));

    let host_ip = host_ip_for(&format!("{}-conflict", env.id));
    let lease = lease_grant(&env.endpoint(), 300);
    let holder = serde_json::json!({
        "hostname": "another-machine", "pid": 1, "boot_id": "another-boot", "started": 1,
        "pid_ns": "pid:[4026531836]", "docker_host": "tcp://192.0.2.7:2375",
        "engine": "docker:ANOTHER-ENGINE:another-machine", "host_ip": host_ip,
        "prefix": "/registered",
    });
    let key = format!("/docker-etcd-register/agents/registered/{host_ip}/{lease:x}");
    put(&env.endpoint(), &key, &holder.to_string(), lease);
    let conflict_addr = metrics_addr();
    let endpoint = env.endpoint();
    let mut in_conflict = Agent::spawn(
        &[
            "--host-ip",
            &host_ip,
            "--etcd-endpoints",
            &endpoint,
            "--require-label",
            env.label(),
            "--metrics-addr",
            &conflict_addr,
        ],
        &[],
    );
    let said = "an agent following another engine holds this host";
    assert!(
        in_conflict.wait_for_log(said, Duration::from_secs(20)),
        "no conflict; stderr:\n{}",
        in_conflict.lines().join("\n")
    );
    assert_exported(false, || {
        let mut both = exported(&addr);
        both.extend(exported(&conflict_addr));
        both
    });
    agent.assert_running();
    in_conflict.assert_running();
}

#[test]
fn every_render_metric_the_rules_and_the_dashboard_name_is_exported() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("lb.conf.j2");
    std::fs::write(&template, "# rendered by the test\n").expect("write template");
    let out = dir.path().join("lb.conf");
    let addr = metrics_addr();
    let mut render = lb::spawn_render(
        &etcd.endpoint(),
        &template,
        &out,
        &["--metrics-addr", &addr],
    );
    let answered = wait_until(Duration::from_secs(10), || {
        matches!(http_get(&addr, "/metrics"), Ok((200, _))) || !render.is_running()
    });
    assert!(
        answered && render.is_running(),
        "render --metrics-addr does not serve {addr}/metrics; its log:\n{}",
        render.lines().join("\n")
    );
    assert_exported(true, || exported(&addr));
    render.assert_running();
}
