//! `docker-etcd-register list` against records of several hosts in a real
//! etcd: the table and `--json` show exactly what etcd holds, `--host` and
//! `--image` filter (a host whose address extends another's is another host),
//! a key that is no record is named on stderr, not shown; and `--watch`
//! shows a container the agent registers within a second, and keeps
//! following after an etcd outage.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;

const A: &str = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
const B: &str = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";
const C: &str = "cccccccccccc3333333333333333333333333333333333333333333333333333";

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn list_json(endpoint: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = stdout(&list(endpoint, &all));
    assert_eq!(text.lines().count(), 1, "--json is one line: {text:?}");
    serde_json::from_str(&text).expect("list --json prints JSON")
}

/// One expected row of `--json`.
fn row(
    host: &str,
    image: &str,
    id: &str,
    ip: &str,
    public: &str,
    private: &str,
    proto: &str,
) -> Value {
    json!({
        "host": host,
        "service": image,
        "image": image,
        "container": id,
        "ip": ip,
        "public_port": public,
        "private_port": private,
        "port_type": proto,
        "key": record_key(host, image, id),
    })
}

/// Records of three hosts, two of them `10.9.0.1` and `10.9.0.10`, and one
/// key that is no record; the rows they make, all hosts, in address order
/// (`10.9.0.2` before `10.9.0.10`), as the table shows them.
fn seed(endpoint: &str) -> Vec<Value> {
    let records = [
        (
            "10.9.0.1",
            "busybox:latest",
            A,
            vec![
                ("10.9.0.1", "32768", "80", "tcp"),
                ("10.9.0.1", "32769", "53", "udp"),
            ],
        ),
        (
            "10.9.0.2",
            "localhost:5000::team::app:v2",
            C,
            vec![("10.9.0.2", "9000", "9000", "tcp")],
        ),
        (
            "10.9.0.10",
            "nginx:1.25",
            B,
            vec![("10.9.0.10", "8080", "80", "tcp")],
        ),
    ];
    let mut rows = Vec::new();
    for (host, image, id, bindings) in &records {
        let key = record_key(host, image, id);
        put(endpoint, &key, &expected_value(id, image, bindings), 0);
        for (ip, public, private, proto) in bindings {
            rows.push(row(host, image, id, ip, public, private, proto));
        }
    }
    put(endpoint, "/registered/10.9.0.2/by-hand", "hello", 0);
    put(endpoint, "/elsewhere/10.9.0.1/busybox:latest/x", "[]", 0);
    rows
}

#[test]
fn table_and_json_show_what_etcd_holds_and_filters_work() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let all = seed(&endpoint);

    // Streamed in etcd's key order (the host as text: 10.9.0.10 before
    // 10.9.0.2); the table sorts by address.
    let key_order = vec![
        all[0].clone(),
        all[1].clone(),
        all[3].clone(),
        all[2].clone(),
    ];
    assert_eq!(list_json(&endpoint, &[]), Value::Array(key_order));

    let out = list(&endpoint, &[]);
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["HOST", "SERVICE", "IMAGE", "CONTAINER", "IP", "PORT"]
    );
    let cells: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        cells,
        [
            vec![
                "10.9.0.1",
                "busybox:latest",
                "busybox:latest",
                &A[..12],
                "10.9.0.1",
                "32768",
                "->",
                "80/tcp"
            ],
            vec![
                "10.9.0.1",
                "busybox:latest",
                "busybox:latest",
                &A[..12],
                "10.9.0.1",
                "32769",
                "->",
                "53/udp"
            ],
            vec![
                "10.9.0.2",
                "localhost:5000::team::app:v2",
                "localhost:5000::team::app:v2",
                &C[..12],
                "10.9.0.2",
                "9000",
                "->",
                "9000/tcp"
            ],
            vec![
                "10.9.0.10",
                "nginx:1.25",
                "nginx:1.25",
                &B[..12],
                "10.9.0.10",
                "8080",
                "->",
                "80/tcp"
            ],
        ]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/registered/10.9.0.2/by-hand"),
        "the key that is no record is named on stderr: {stderr}"
    );

    // --host: exactly that host, not the one whose address extends it.
    assert_eq!(
        list_json(&endpoint, &["--host", "10.9.0.1"]),
        Value::Array(all[..2].to_vec())
    );
    assert_eq!(
        list_json(&endpoint, &["--host", "10.9.0.10"]),
        Value::Array(all[3..4].to_vec())
    );
    assert_eq!(list_json(&endpoint, &["--host", "10.9.9.9"]), json!([]));
    assert!(stdout(&list(&endpoint, &["--host", "10.9.9.9"])).contains("(none)"));

    // --image: any familiar form; a name without tag means every tag.
    for name in ["busybox", "busybox:latest", "docker.io/library/busybox"] {
        assert_eq!(
            list_json(&endpoint, &["--image", name]),
            Value::Array(all[..2].to_vec()),
            "--image {name}"
        );
    }
    assert_eq!(
        list_json(&endpoint, &["--image", "localhost:5000/team/app"]),
        Value::Array(all[2..3].to_vec())
    );
    assert_eq!(list_json(&endpoint, &["--image", "nginx:1.24"]), json!([]));
    assert_eq!(
        list_json(&endpoint, &["--image", "nginx", "--host", "10.9.0.10"]),
        Value::Array(all[3..4].to_vec())
    );

    // Another root.
    assert_eq!(
        list_json(&endpoint, &["--prefix", "/elsewhere"]),
        Value::Array(Vec::new()),
        "an empty array value has no rows"
    );
}

#[test]
fn list_reports_an_unreachable_etcd_and_a_bad_flag() {
    let unreachable = format!("http://127.0.0.1:{}", test_port());
    let out = list_command(&unreachable, &[]).output().expect("run list");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("etcd"), "{stderr}");

    let out = list_command(&unreachable, &["--host", "not-an-ip"])
        .output()
        .expect("run list");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
}

/// `list --watch` as a child, its stdout lines collected with their arrival.
struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Watcher {
    fn spawn(endpoint: &str, args: &[&str]) -> Watcher {
        let mut all = vec!["--watch"];
        all.extend_from_slice(args);
        let mut child = list_command(endpoint, &all)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn list --watch");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Watcher { child, lines }
    }

    /// When the first line containing `needle` arrived.
    fn seen(&self, needle: &str) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, line)| line.contains(needle))
            .map(|(at, _)| *at)
    }

    fn last_line(&self) -> Option<String> {
        self.lines.lock().unwrap().last().map(|(_, l)| l.clone())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_shows_a_new_container_within_a_second() {
    let mut env = TestEnv::new("list_watch");
    let _agent = env.start_agent(&[]);
    let table = Watcher::spawn(&env.endpoint(), &["--host", &env.host_ip]);
    let json_lines = Watcher::spawn(&env.endpoint(), &["--host", &env.host_ip, "--json"]);
    assert!(
        wait_until(REACT, || json_lines.last_line().as_deref() == Some("[]")
            && table.seen("(none)").is_some()),
        "list --watch did not print the empty list first"
    );

    let id = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let key = env.key(IMAGE, &id);
    env.wait_key(REACT, &key);
    let registered = Instant::now();
    for (watcher, needle) in [(&table, &id[..12]), (&json_lines, id.as_str())] {
        assert!(
            wait_until(REACT, || watcher.seen(needle).is_some()),
            "list --watch never showed {needle}"
        );
        let shown = watcher.seen(needle).unwrap();
        let late = shown.saturating_duration_since(registered);
        assert!(
            late <= Duration::from_secs(1),
            "shown {late:?} after registration"
        );
    }
    let rows: Value = serde_json::from_str(&json_lines.last_line().unwrap()).unwrap();
    assert_eq!(rows[0]["container"], json!(id));
    assert_eq!(rows[0]["key"], json!(key));

    // And gone again when it stops.
    env.containers.rm_f(&id);
    env.wait_gone(REACT, &key);
    assert!(
        wait_until(Duration::from_secs(1), || json_lines.last_line().as_deref()
            == Some("[]")),
        "list --watch still shows the removed container"
    );

    // etcd goes away and comes back: the watchers keep following.
    env.etcd.stop();
    thread::sleep(Duration::from_secs(2));
    env.etcd.restart();
    let after = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    for (watcher, needle) in [(&table, &after[..12]), (&json_lines, after.as_str())] {
        assert!(
            wait_until(REACT, || watcher.seen(needle).is_some()),
            "list --watch did not follow after the etcd outage"
        );
    }
}
