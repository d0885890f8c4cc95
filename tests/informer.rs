//! The consumers' informer against a real etcd, through `list --watch
//! --json` as a child process (one JSON line, the whole sorted list, per
//! change):
//!
//! - after its first read, a change costs etcd no read: twenty changes one
//!   by one, each shown, and etcd served no Range request and opened no new
//!   watch meanwhile (its own `/metrics`); a change outside the filter, a
//!   record rewritten with its own value and a key outside the root print
//!   nothing;
//! - etcd killed and started again on the same data: the outage is said
//!   once, its end once, nothing is printed when nothing changed, and the
//!   changes after it are followed;
//! - a silent partition (a relay that stops carrying bytes), with records
//!   written, deleted and the revision compacted behind it: the lost watch
//!   is noticed and, once healed, the list is etcd's;
//! - a consumer that falls so far behind that etcd gives up on its watch
//!   (stopped with SIGSTOP while megabytes of changes pile up, then a
//!   compaction): etcd cancels the watch, and the consumer reads again.
//!
//! Every test has its own etcd; nothing needs Docker.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::lb::spawn_render;
use common::partition::Partition;
use common::*;

const ROOT: &str = "/registered/";
/// Long enough for a stray line to be printed, if one were coming.
const QUIET: Duration = Duration::from_millis(300);
/// The informer's log lines.
const LOST: &str = "watch lost; reading the records again";
const FAILING: &str = "cannot read etcd; retrying";
const ANSWERS: &str = "etcd answers again";

/// `list --watch --json` as a child: its stdout lines (one list each) and
/// its stderr lines (its log, at INFO) collected; killed on drop.
struct Consumer {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Consumer {
    fn spawn(endpoint: &str, args: &[&str]) -> Consumer {
        let mut all = vec!["--watch", "--json"];
        all.extend_from_slice(args);
        let mut child = list_command(endpoint, &all)
            // `list` logs only WARN by default; the informer says at INFO
            // when its watch is lost and etcd answers again.
            .env("RUST_LOG", "warn,docker_etcd_register=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn list --watch");
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Consumer {
            child,
            stdout,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many lists were printed so far.
    fn printed(&self) -> usize {
        self.stdout.lock().unwrap().len()
    }

    /// The last list printed.
    fn last(&self) -> Option<Value> {
        let lines = self.stdout.lock().unwrap();
        let line = lines.last()?;
        Some(serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
    }

    /// Waits until the last list printed is `expected`.
    fn wait_shows(&self, expected: &Value, timeout: Duration) -> bool {
        wait_until(timeout, || self.last().as_ref() == Some(expected))
    }

    /// The stderr lines containing `needle`.
    fn log(&self, needle: &str) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .cloned()
            .collect()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || !self.log(needle).is_empty())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `from`, collected by a thread as they come.
fn collect(from: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// A process stopped with SIGSTOP, continued on drop (also when a test
/// fails), so that its own guard can end it.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        assert!(signal(pid, "STOP"), "kill -STOP {pid} failed");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|status| status.success())
}

/// A container id of its own for each `n`.
fn id(n: u32) -> String {
    format!("{n:064x}")
}

/// A record of `host`'s container `n` of `service`, its image `nginx:1.25`,
/// publishing these (public, private) tcp ports on the host's address.
fn record(host: &str, service: &str, n: u32, ports: &[(u16, u16)]) -> (String, String) {
    let id = id(n);
    let ports: Vec<(String, String)> = ports
        .iter()
        .map(|(public, private)| (public.to_string(), private.to_string()))
        .collect();
    let bindings: Vec<(&str, &str, &str, &str)> = ports
        .iter()
        .map(|(public, private)| (host, public.as_str(), private.as_str(), "tcp"))
        .collect();
    (
        record_key(host, service, &id),
        expected_value(&id, "nginx:1.25", &bindings),
    )
}

/// The keys and values under the root.
fn etcd_contents(endpoint: &str) -> BTreeMap<String, String> {
    get_prefix(endpoint, ROOT)
        .into_iter()
        .map(|(key, record)| (key, record.value))
        .collect()
}

/// The list `list --json` must print for `contents` (key → value): one row
/// per binding of each record of `services` (all when empty), sorted by
/// host address, service, container and key, each record's bindings in
/// its own order. Keys that are no record are left out.
fn rows(contents: &BTreeMap<String, String>, services: &[&str]) -> Value {
    let mut records = Vec::new();
    for (key, value) in contents {
        let Some(rest) = key.strip_prefix(ROOT) else {
            continue;
        };
        let [host, service, container] = rest.split('/').collect::<Vec<_>>()[..] else {
            continue;
        };
        if !services.is_empty() && !services.contains(&service) {
            continue;
        }
        let Ok(Value::Array(bindings)) = serde_json::from_str::<Value>(value) else {
            continue;
        };
        let address: IpAddr = host.parse().expect("a host address");
        let rows: Vec<Value> = bindings
            .iter()
            .map(|binding| {
                json!({
                    "host": host,
                    "service": service,
                    "image": binding["image"],
                    "container": container,
                    "ip": binding["ip"],
                    "public_port": binding["public_port"],
                    "private_port": binding["private_port"],
                    "port_type": binding["port_type"],
                    "key": key,
                })
            })
            .collect();
        records.push(((address, service, container, key.as_str()), rows));
    }
    records.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Array(records.into_iter().flat_map(|(_, rows)| rows).collect())
}

/// `host:port` of etcd's client URL, where it serves `/metrics` too.
fn metrics_addr_of(endpoint: &str) -> &str {
    endpoint.strip_prefix("http://").expect("a plain http etcd")
}

/// How many `method` requests (or streams) of etcd's own services etcd
/// began, whatever their outcome.
fn etcd_started(endpoint: &str, method: &str) -> f64 {
    let method = format!("grpc_method=\"{method}\"");
    etcd_faults::metrics(metrics_addr_of(endpoint))
        .iter()
        .filter(|(series, _)| {
            series.starts_with("grpc_server_started_total{")
                && series.contains(&method)
                && series.contains("grpc_service=\"etcdserverpb.")
        })
        .map(|(_, value)| value)
        .sum()
}

/// etcd's watchers that fell behind: waiting for room in their stream, or
/// for events etcd must read back.
fn slow_watchers(endpoint: &str) -> f64 {
    etcd_faults::metrics(metrics_addr_of(endpoint))
        .get("etcd_debugging_mvcc_slow_watcher_total")
        .copied()
        .unwrap_or_default()
}

/// One step of the test of changes.
enum Step {
    Put(String, String),
    Delete(String),
}

#[test]
fn changes_are_followed_without_reading_etcd_again() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    // The consumer keeps `web` and `api`; `db` is another service.
    let services = ["web", "api"];
    let mut contents = BTreeMap::new();
    for (host, service, n) in [("10.0.0.2", "web", 1), ("10.0.0.10", "api", 2)] {
        let (key, value) = record(host, service, n, &[(8000 + n as u16, 80)]);
        put(&endpoint, &key, &value, 0);
        contents.insert(key, value);
    }
    let (db_key, db_value) = record("10.0.0.2", "db", 3, &[(5432, 5432)]);
    put(&endpoint, &db_key, &db_value, 0);
    contents.insert(db_key.clone(), db_value);

    let consumer = Consumer::spawn(&endpoint, &["--service", "web", "--service", "api"]);
    assert!(
        consumer.wait_shows(&rows(&contents, &services), REACT),
        "the first list is not etcd's: {:?}\n{}",
        consumer.last(),
        consumer.stderr()
    );
    // From here on, the test itself reads nothing until the second sample.
    let ranges = etcd_started(&endpoint, "Range");
    let watches = etcd_started(&endpoint, "Watch");
    let puts = etcd_started(&endpoint, "Put");
    let mut put_count = 0.0;

    let mut steps = Vec::new();
    for n in 10..20 {
        let host = format!("10.0.{}.{}", n % 3, n);
        let ports = [(9000 + n as u16, 80), (9100 + n as u16, 443)];
        let (key, value) = record(
            &host,
            services[n as usize % 2],
            n,
            &ports[..1 + n as usize % 2],
        );
        steps.push(Step::Put(key, value));
    }
    for n in [10, 13, 16] {
        let host = format!("10.0.{}.{}", n % 3, n);
        let (key, value) = record(
            &host,
            services[n as usize % 2],
            n,
            &[(7000 + n as u16, 8080)],
        );
        steps.push(Step::Put(key, value));
    }
    for n in [11, 12, 17, 19] {
        let host = format!("10.0.{}.{}", n % 3, n);
        steps.push(Step::Delete(record_key(
            &host,
            services[n as usize % 2],
            &id(n),
        )));
    }
    let first = record("10.0.0.2", "web", 1, &[(8001, 80), (8443, 443)]);
    steps.push(Step::Put(first.0.clone(), first.1));
    steps.push(Step::Delete(first.0.clone()));
    steps.push(Step::Put(
        first.0.clone(),
        record("10.0.0.2", "web", 1, &[(8001, 80)]).1,
    ));
    assert_eq!(steps.len(), 20);

    for (i, step) in steps.into_iter().enumerate() {
        let before = consumer.printed();
        match step {
            Step::Put(key, value) => {
                put(&endpoint, &key, &value, 0);
                put_count += 1.0;
                contents.insert(key, value);
            }
            Step::Delete(key) => {
                assert_eq!(delete(&endpoint, &key), 1, "{key}");
                contents.remove(&key);
            }
        }
        let expected = rows(&contents, &services);
        assert!(
            consumer.wait_shows(&expected, REACT),
            "change {i} not shown: {:?}\n{}",
            consumer.last(),
            consumer.stderr()
        );
        assert_eq!(consumer.printed(), before + 1, "change {i}: one list");
    }

    // Changes that alter no row print nothing: another service's record,
    // a record rewritten with its own value, a key outside the root. The
    // change after each is printed alone, so the quiet one was applied.
    let (same_key, same_value) = contents
        .iter()
        .find(|(key, _)| key.contains("/web/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .expect("a web record");
    let (other_db, other_db_value) = record("10.0.1.30", "db", 30, &[(6000, 5432)]);
    let quiet = [
        (other_db, other_db_value),
        (
            db_key.clone(),
            record("10.0.0.2", "db", 3, &[(5433, 5432)]).1,
        ),
        (same_key, same_value),
        ("/elsewhere/10.0.0.2/web/x".to_owned(), "[]".to_owned()),
    ];
    for (n, (key, value)) in (40..).zip(quiet) {
        let before = consumer.printed();
        put(&endpoint, &key, &value, 0);
        put_count += 1.0;
        if key.starts_with(ROOT) {
            contents.insert(key.clone(), value);
        }
        thread::sleep(QUIET);
        assert_eq!(consumer.printed(), before, "{key} printed a list");
        let (next, next_value) = record("10.0.2.40", "api", n, &[(4000 + n as u16, 80)]);
        put(&endpoint, &next, &next_value, 0);
        put_count += 1.0;
        contents.insert(next, next_value);
        assert!(
            consumer.wait_shows(&rows(&contents, &services), REACT),
            "the change after {key} not shown: {:?}",
            consumer.last()
        );
        assert_eq!(consumer.printed(), before + 1, "after {key}: one list");
    }

    let ranges_after = etcd_started(&endpoint, "Range");
    let watches_after = etcd_started(&endpoint, "Watch");
    // Proof that the counters move at all: every put was counted.
    assert_eq!(etcd_started(&endpoint, "Put") - puts, put_count);
    assert_eq!(
        ranges_after - ranges,
        0.0,
        "etcd served Range requests for changes\n{}",
        consumer.stderr()
    );
    assert_eq!(watches_after - watches, 0.0, "a watch was opened again");
    assert_eq!(etcd_contents(&endpoint), contents);
    assert!(consumer.log(LOST).is_empty(), "{}", consumer.stderr());
}

#[test]
fn an_etcd_restart_is_said_once_and_followed() {
    let mut etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    for n in 1..=3 {
        let (key, value) = record("10.1.0.1", "web", n, &[(8000 + n as u16, 80)]);
        put(&endpoint, &key, &value, 0);
    }
    let consumer = Consumer::spawn(&endpoint, &[]);
    assert!(consumer.wait_shows(&rows(&etcd_contents(&endpoint), &[]), REACT));
    let printed = consumer.printed();

    etcd.stop();
    assert!(
        consumer.wait_log(FAILING, REACT),
        "the outage was not said:\n{}",
        consumer.stderr()
    );
    // A few retries fail while etcd is down: they are not said again.
    thread::sleep(Duration::from_secs(2));
    etcd.restart();
    assert!(
        consumer.wait_log(ANSWERS, REACT),
        "the end of the outage was not said:\n{}",
        consumer.stderr()
    );
    thread::sleep(QUIET);
    assert_eq!(
        consumer.printed(),
        printed,
        "the same records read again printed a list"
    );

    let (key, value) = record("10.1.0.1", "web", 4, &[(8004, 80)]);
    put(&endpoint, &key, &value, 0);
    let (changed, value) = record("10.1.0.1", "web", 1, &[(8101, 80)]);
    put(&endpoint, &changed, &value, 0);
    delete(&endpoint, &record_key("10.1.0.1", "web", &id(2)));
    assert!(
        consumer.wait_shows(&rows(&etcd_contents(&endpoint), &[]), REACT),
        "changes after the restart not shown: {:?}\n{}",
        consumer.last(),
        consumer.stderr()
    );
    assert!(!consumer.log(LOST).is_empty(), "{}", consumer.stderr());
    assert_eq!(consumer.log(FAILING).len(), 1, "{}", consumer.stderr());
    assert_eq!(consumer.log(ANSWERS).len(), 1, "{}", consumer.stderr());
}

#[test]
fn a_silent_partition_with_changes_and_a_compaction_behind_it_is_recovered() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let partition = Partition::to(&endpoint);
    for n in 1..=3 {
        let (key, value) = record("10.2.0.1", "web", n, &[(8000 + n as u16, 80)]);
        put(&endpoint, &key, &value, 0);
    }
    let consumer = Consumer::spawn(&partition.endpoint(), &[]);
    assert!(consumer.wait_shows(&rows(&etcd_contents(&endpoint), &[]), REACT));

    partition.block();
    let blocked = Instant::now();
    let (key, value) = record("10.2.0.1", "web", 4, &[(8004, 80)]);
    put(&endpoint, &key, &value, 0);
    let (changed, value) = record("10.2.0.1", "web", 1, &[(8101, 80)]);
    put(&endpoint, &changed, &value, 0);
    delete(&endpoint, &record_key("10.2.0.1", "web", &id(2)));
    let compact_at = revision(&endpoint);
    etcdctl(&endpoint, &["compact", &compact_at.to_string()]);

    // Nothing arrives on the connection: only its HTTP/2 keep-alive can
    // tell that it is dead.
    assert!(
        consumer.wait_log(LOST, Duration::from_secs(60)),
        "the lost watch was not noticed in 60 s:\n{}",
        consumer.stderr()
    );
    let noticed = blocked.elapsed();
    // The read again cannot pass the partition either.
    assert!(
        consumer.wait_log(FAILING, Duration::from_secs(30)),
        "reading through the partition did not fail:\n{}",
        consumer.stderr()
    );
    let failed = blocked.elapsed();
    eprintln!("partition: watch lost after {noticed:?}, read failed after {failed:?}");
    assert_eq!(consumer.printed(), 1, "nothing could be shown meanwhile");

    partition.heal();
    let healed = Instant::now();
    assert!(
        consumer.wait_shows(&rows(&etcd_contents(&endpoint), &[]), REACT),
        "not etcd's records after the partition healed: {:?}\n{}",
        consumer.last(),
        consumer.stderr()
    );
    eprintln!(
        "partition: etcd's records shown {:?} after healing",
        healed.elapsed()
    );
    assert_eq!(consumer.log(ANSWERS).len(), 1, "{}", consumer.stderr());

    // And the new watch follows.
    let (key, value) = record("10.2.0.1", "web", 5, &[(8005, 80)]);
    put(&endpoint, &key, &value, 0);
    assert!(
        consumer.wait_shows(&rows(&etcd_contents(&endpoint), &[]), REACT),
        "no change shown after the partition: {:?}",
        consumer.last()
    );
}

#[test]
fn a_watch_etcd_cancels_for_a_compaction_is_read_again() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let services = ["web"];
    for n in 1..=2 {
        let (key, value) = record("10.3.0.1", "web", n, &[(8000 + n as u16, 80)]);
        put(&endpoint, &key, &value, 0);
    }
    let consumer = Consumer::spawn(&endpoint, &["--service", "web"]);
    assert!(consumer.wait_shows(&rows(&etcd_contents(&endpoint), &services), REACT));

    let stopped = Stopped::stop(consumer.pid());
    // Sent on the watch, to be applied once the consumer runs again.
    let (key, value) = record("10.3.0.1", "web", 3, &[(8003, 80)]);
    put(&endpoint, &key, &value, 0);
    // Changes of another service under the watched root, as many as it
    // takes etcd to give up sending them: megabytes fill the connection's
    // flow-control window, then the stream's queue of 128 responses fills
    // and etcd sets the watcher aside as slow.
    let filler = |n: usize| format!("{ROOT}10.3.0.9/filler/{}", n % 4);
    let big = "x".repeat(256 * 1024);
    for n in 0..16 {
        put(&endpoint, &filler(n), &big, 0);
    }
    let mut small = 0;
    while slow_watchers(&endpoint) < 1.0 {
        assert!(small < 2_000, "etcd never set the stopped watcher aside");
        for _ in 0..32 {
            put(&endpoint, &filler(small), &small.to_string(), 0);
            small += 1;
        }
    }
    // Known only by reading again: the watch is behind, then compacted.
    delete(&endpoint, &record_key("10.3.0.1", "web", &id(1)));
    let (key, value) = record("10.3.0.1", "web", 4, &[(8004, 80)]);
    let compact_at = put(&endpoint, &key, &value, 0);
    etcdctl(&endpoint, &["compact", &compact_at.to_string()]);
    drop(stopped);

    assert!(
        consumer.wait_log(LOST, REACT),
        "etcd did not cancel the watch:\n{}",
        consumer.stderr()
    );
    // Cancelled by etcd for the compaction, not broken.
    let lost = consumer.log(LOST);
    let compacted = format!("revision {compact_at} and older are compacted");
    assert!(
        lost.iter().all(|line| line.contains(&compacted)),
        "{lost:?}"
    );
    assert!(
        consumer.wait_shows(&rows(&etcd_contents(&endpoint), &services), REACT),
        "not etcd's records after the cancelled watch: {:?}\n{}",
        consumer.last(),
        consumer.stderr()
    );
    assert!(consumer.log(FAILING).is_empty(), "{}", consumer.stderr());
}

/// A reload owed a retry and a rendering that then fails (here: a template
/// that needs a backend, and the service's last one gone) must neither spin
/// nor stop following: the failed rendering is tried again with backoff,
/// and the next record is rendered.
#[test]
fn a_failing_rendering_while_a_reload_is_owed_keeps_following() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("first-backend.j2");
    let out = dir.path().join("out.cfg");
    std::fs::write(
        &template,
        "{% for s in services %}server {{ s.name | ident }} {{ s.backends[0].address }}\n{% endfor %}",
    )
    .unwrap();
    let (first, value) = record("10.3.0.1", "web", 1, &[(8080, 80)]);
    put(&endpoint, &first, &value, 0);
    let mut render = spawn_render(&endpoint, &template, &out, &["--reload", "false"]);
    let shows = |address: &str| std::fs::read_to_string(&out).is_ok_and(|t| t.contains(address));
    assert!(wait_until(REACT, || shows("10.3.0.1:8080")));
    assert!(render.wait_for_log("the reload command failed", REACT));

    delete(&endpoint, &first);
    assert!(render.wait_for_log("keeping the old file", REACT));
    // Past the reload's retry (1 s), which finds the rendering failing.
    thread::sleep(Duration::from_secs(2));
    let (second, value) = record("10.3.0.1", "web", 2, &[(9090, 80)]);
    put(&endpoint, &second, &value, 0);
    assert!(
        wait_until(REACT, || shows("10.3.0.1:9090")),
        "the next record was never rendered:\n{}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    render.assert_running();
    let failures = render.count_log(&["keeping the old file"]);
    assert!(failures < 20, "{failures} failed renderings: it spun");
}
