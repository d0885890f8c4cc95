//! One `render` writing several files (`--template A --out a --template B
//! --out b`, docs/render.md "Load balancers: render"), against a real etcd:
//!
//! - both files come from one reading of the records, each is replaced
//!   only when its own bytes change, in the order given, and `--reload`
//!   runs once per rendering that replaced any of them;
//! - a file that `--check` refuses keeps its old bytes and holds back the
//!   files after it (they may name what it defines) until it is accepted;
//!   `--metrics-addr` says so meanwhile (`up_to_date` 0, a `check`
//!   failure, `/healthz` 503);
//! - a file that cannot be written is tried again with backoff, though no
//!   record changes, and written once it can be.
//!
//! Every test has its own etcd; nothing needs Docker.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::etcd_faults::{healthz, metrics};
use common::*;

/// Long enough for a stray write or reload to happen, if one were coming.
const QUIET: Duration = Duration::from_millis(600);

/// `render` of `pairs` (template, out) into one process, with `args`.
fn spawn_render_files(endpoint: &str, pairs: &[(&Path, &Path)], args: &[&str]) -> Agent {
    let paths: Vec<(String, String)> = pairs
        .iter()
        .map(|(t, o)| (t.display().to_string(), o.display().to_string()))
        .collect();
    let mut full = vec!["render", "--etcd-endpoints", endpoint, "--debounce", "50"];
    for (template, out) in &paths {
        full.extend(["--template", template, "--out", out]);
    }
    full.extend_from_slice(args);
    Agent::spawn(&full, &[])
}

/// The record of container `n` of `service` on 10.4.0.1, publishing
/// `public` → its port 80/tcp, 81/tcp for `api` (two services claiming
/// one frontend port would be a WARN).
fn put_record(endpoint: &str, service: &str, n: u32, public: u16) -> String {
    let private = if service == "api" { "81" } else { "80" };
    let id = format!("{n:064x}");
    let key = record_key("10.4.0.1", service, &id);
    let value = expected_value(
        &id,
        "nginx:1.25",
        &[("10.4.0.1", &public.to_string(), private, "tcp")],
    );
    put(endpoint, &key, &value, 0);
    key
}

struct Files {
    dir: tempfile::TempDir,
    /// Names the services only: unchanged by a new backend of one.
    services: PathBuf,
    /// Names every backend's address.
    backends: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let services = write(
            "services.j2",
            "{% for s in services %}service {{ s.name | ident }}\n{% endfor %}",
        );
        let backends = write(
            "backends.j2",
            "{% for s in services %}{% for b in s.backends %}{{ s.name | ident }} {{ b.address }}\n{% endfor %}{% endfor %}",
        );
        Files {
            services,
            backends,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_owned).collect()
}

#[test]
fn several_files_follow_one_reading_in_order_with_one_reload_per_rendering() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let files = Files::new();
    let (a, b) = (files.path("a.cfg"), files.path("b.cfg"));
    let (checked, reloads) = (files.path("checked"), files.path("reloads"));
    put_record(&endpoint, "web", 1, 8080);
    // The check notes each file it is given (the temporary file is named
    // after the one it replaces); the reload counts its runs.
    let check = format!("basename {{}} >> {}", checked.display());
    let reload = format!("echo >> {}", reloads.display());
    let mut render = spawn_render_files(
        &endpoint,
        &[(&files.services, &a), (&files.backends, &b)],
        &["--check", &check, "--reload", &reload],
    );
    assert!(
        wait_until(REACT, || read(&b) == "web 10.4.0.1:8080\n"),
        "{}",
        read(&b)
    );
    assert_eq!(read(&a), "service web\n");
    let checked_names = lines(&checked);
    assert_eq!(checked_names.len(), 2, "{checked_names:?}");
    assert!(
        checked_names[0].starts_with(".a.cfg.") && checked_names[1].starts_with(".b.cfg."),
        "not checked in the order given: {checked_names:?}"
    );
    assert!(wait_until(REACT, || lines(&reloads).len() == 1));

    // A second backend of the same service: only the backends file changes.
    put_record(&endpoint, "web", 2, 8081);
    assert!(
        wait_until(REACT, || read(&b).lines().count() == 2),
        "{}",
        read(&b)
    );
    std::thread::sleep(QUIET);
    assert_eq!(
        lines(&checked).len(),
        3,
        "the unchanged file was checked again"
    );
    assert!(lines(&checked)[2].starts_with(".b.cfg."));
    assert_eq!(lines(&reloads).len(), 2, "one reload per rendering");

    // A new service changes both: still one reload.
    put_record(&endpoint, "api", 3, 9090);
    assert!(wait_until(REACT, || read(&a).contains("service api")));
    assert!(wait_until(REACT, || read(&b).contains("api 10.4.0.1:9090")));
    std::thread::sleep(QUIET);
    assert_eq!(lines(&reloads).len(), 3, "one reload for two files written");
    render.assert_running();
    assert!(render.warnings().is_empty(), "{:?}", render.warnings());
}

#[test]
fn a_refused_file_holds_back_the_files_after_it() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let files = Files::new();
    let (a, b) = (files.path("a.cfg"), files.path("b.cfg"));
    let refuse = files.path("refuse");
    put_record(&endpoint, "web", 1, 8080);
    // Refuses the services file while `refuse` exists.
    let check = format!(
        "case $(basename {{}}) in .a.cfg.*) test ! -e {};; esac",
        refuse.display()
    );
    let metrics_addr = format!("127.0.0.1:{}", test_port());
    let mut render = spawn_render_files(
        &endpoint,
        &[(&files.services, &a), (&files.backends, &b)],
        &["--check", &check, "--metrics-addr", &metrics_addr],
    );
    assert!(wait_until(REACT, || !read(&b).is_empty()));
    let up_to_date = |value: f64| {
        wait_until(REACT, || {
            metrics(&metrics_addr).get(RENDER_UP_TO_DATE) == Some(&value)
        })
    };
    assert!(up_to_date(1.0), "{:?}", metrics(&metrics_addr));
    assert_eq!(healthz(&metrics_addr).0, 200);

    std::fs::write(&refuse, "").unwrap();
    put_record(&endpoint, "api", 2, 9090);
    assert!(
        render.wait_for_log("keeping the old file", REACT),
        "no refusal logged"
    );
    assert!(
        render.lines().iter().any(|l| l.contains("a.cfg")),
        "the refused file is not named: {:?}",
        render.lines()
    );
    // Past the refusal's first retry: still refused, and the file after it
    // still waits, though its own check would pass.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(read(&a), "service web\n");
    assert_eq!(
        read(&b),
        "web 10.4.0.1:8080\n",
        "a file after a refused one was written"
    );
    let held = metrics(&metrics_addr);
    assert_eq!(held.get(RENDER_UP_TO_DATE), Some(&0.0), "{held:?}");
    assert!(held[RENDER_CHECK_FAILURES] >= 1.0, "{held:?}");
    assert_eq!(held[RENDER_WATCHING], 1.0, "{held:?}");
    assert_eq!(healthz(&metrics_addr).0, 503);

    std::fs::remove_file(&refuse).unwrap();
    assert!(
        wait_until(REACT, || read(&b).contains("api 10.4.0.1:9090")),
        "never written once accepted: {}",
        read(&b)
    );
    assert!(read(&a).contains("service api"));
    assert!(up_to_date(1.0), "{:?}", metrics(&metrics_addr));
    assert_eq!(healthz(&metrics_addr).0, 200);
    render.assert_running();
}

const RENDER_UP_TO_DATE: &str = "docker_etcd_register_render_up_to_date";
const RENDER_WATCHING: &str = "docker_etcd_register_render_etcd_watching";
const RENDER_CHECK_FAILURES: &str = "docker_etcd_register_render_failures_total{stage=\"check\"}";

#[test]
fn a_file_that_cannot_be_written_is_tried_again_without_a_change() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let files = Files::new();
    let missing = files.path("not-yet");
    let out = missing.join("b.cfg");
    put_record(&endpoint, "web", 1, 8080);
    let metrics_addr = format!("127.0.0.1:{}", test_port());
    let mut render = spawn_render_files(
        &endpoint,
        &[(&files.backends, &out)],
        &["--metrics-addr", &metrics_addr],
    );
    assert!(
        render.wait_for_log("keeping the old file", REACT),
        "{:?}",
        render.lines()
    );
    let failed = metrics(&metrics_addr);
    assert!(failed[RENDER_WRITE_FAILURES] >= 1.0, "{failed:?}");
    assert_eq!(failed[RENDER_UP_TO_DATE], 0.0, "{failed:?}");

    std::fs::create_dir(&missing).unwrap();
    assert!(
        wait_until(REACT, || read(&out) == "web 10.4.0.1:8080\n"),
        "never written: {:?}",
        render.lines()
    );
    assert!(
        wait_until(REACT, || metrics(&metrics_addr)[RENDER_UP_TO_DATE] == 1.0),
        "{:?}",
        metrics(&metrics_addr)
    );
    render.assert_running();
}

const RENDER_WRITE_FAILURES: &str = "docker_etcd_register_render_failures_total{stage=\"write\"}";
