//! `docker-etcd-register render` on the whole real path: containers → the
//! agent → etcd → `render` → haproxy or nginx (Debian's, as plain processes
//! on this test's own loopback ports) → a client on loopback. Every backend
//! listens on a private port of its own test, so the frontends of tests
//! running in parallel never collide.

mod common;

use std::time::{Duration, Instant};

use common::etcd_faults::{healthz, metrics};
use common::lb::*;
use common::*;

/// `render`'s debounce in these tests: its default.
const DEBOUNCE: &str = "200";

/// haproxy fed by `render` with the shipped example, reloaded by SIGUSR2.
struct Haproxy {
    /// Kept for the files' lifetime.
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    render: Agent,
    _haproxy: Group,
}

impl Haproxy {
    /// Starts `render` and, once the file holds `expected_servers` servers,
    /// haproxy on it, in `mode` (`HAPROXY_MODE` of the example).
    fn start(env: &TestEnv, expected_servers: usize, mode: &str) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("haproxy.cfg");
        let pidfile = dir.path().join("haproxy.pid");
        let template = example("haproxy/haproxy.cfg.j2");
        let reload = format!("test ! -e {0} || kill -USR2 $(cat {0})", pidfile.display());
        let render = spawn_render_with(
            &env.endpoint(),
            &template,
            &out,
            &[
                "--check",
                "haproxy -c -q -f {}",
                "--reload",
                &reload,
                "--debounce",
                DEBOUNCE,
            ],
            &[("HAPROXY_MODE", mode)],
        );
        assert!(
            wait_until(REACT, || servers(&out) == expected_servers),
            "the file never had {expected_servers} servers:\n{}",
            read(&out)
        );
        let haproxy = haproxy(&out, &pidfile);
        Haproxy {
            _dir: dir,
            out,
            render,
            _haproxy: haproxy,
        }
    }
}

/// Two backends behind haproxy; one stopped, a replacement started, while a
/// client sends requests: none fails, and the replacement serves through
/// haproxy within a second of `docker run` returning.
#[test]
fn haproxy_follows_a_rolling_replacement_without_a_failed_request() {
    require_docker();
    let env = TestEnv::new("render-rolling");
    let _agent = env.start_agent(&[]);
    let port = private_port();
    let first = run_backend(&env.containers, port);
    let second = run_backend(&env.containers, port);
    // TCP mode, the example's default: it retries only refused connections,
    // so no request may reach the stopped backend once it stops listening.
    // The agent drains the backend's record at `docker stop`'s SIGTERM, and
    // haproxy is reloaded while the backend still serves.
    let lb = Haproxy::start(&env, 2, "tcp");
    for id in [&first, &second] {
        assert!(
            wait_served_by(port, &hostname_of(id), SLOW).is_some(),
            "haproxy never served {id}:\n{}",
            read(&lb.out)
        );
    }

    let client = ClientLoop::start(port);
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    env.containers.stop(&first);
    let stopped = stopping.elapsed();
    let replacement = run_backend(&env.containers, port);
    let started = Instant::now();
    let name = hostname_of(&replacement);
    assert!(
        wait_until(REACT, || client
            .answers()
            .iter()
            .any(|a| a.result.as_deref() == Ok(name.as_str()))),
        "the replacement was never served"
    );
    std::thread::sleep(Duration::from_millis(500));
    let answers = client.finish();
    let first_served = answers
        .iter()
        .find(|a| a.result.as_deref() == Ok(name.as_str()))
        .map(|a| a.at.saturating_duration_since(started))
        .unwrap();
    let failed: Vec<(Duration, &Answer)> = answers
        .iter()
        .filter(|a| a.result.is_err())
        .map(|a| (a.at.saturating_duration_since(stopping), a))
        .collect();
    eprintln!(
        "docker stop took {stopped:?}; {:?} after it began, docker run returned",
        started - stopping
    );
    eprintln!(
        "{} requests, {} failed; replacement served {first_served:?} after docker run returned",
        answers.len(),
        failed.len()
    );
    let failed: Vec<String> = failed
        .iter()
        .map(|(after, a)| format!("{after:?} after docker stop began: {:?}", a.result))
        .collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        first_served < Duration::from_secs(1),
        "the replacement served its first request {first_served:?} after docker run"
    );
    assert!(
        lb.render.warnings().is_empty(),
        "{:?}",
        lb.render.warnings()
    );
}

/// The last backend stops: the service stays in the file with no servers,
/// haproxy reloads and refuses; a new backend is served again.
#[test]
fn a_service_without_backends_is_rendered_empty_and_comes_back() {
    require_docker();
    let env = TestEnv::new("render-empty");
    let _agent = env.start_agent(&[]);
    let port = private_port();
    let only = run_backend(&env.containers, port);
    let mut lb = Haproxy::start(&env, 1, "tcp");
    assert!(wait_served_by(port, &hostname_of(&only), SLOW).is_some());

    env.containers.stop(&only);
    assert!(
        wait_until(REACT, || servers(&lb.out) == 0),
        "the server stayed:\n{}",
        read(&lb.out)
    );
    let text = read(&lb.out);
    assert!(
        text.contains(&format!("bind 127.0.0.1:{port}")),
        "the service's listen is gone:\n{text}"
    );
    assert!(
        wait_until(REACT, || get(port).is_err()),
        "haproxy still serves the stopped backend"
    );
    assert!(lb.render.wait_for_log("reloaded", REACT));

    let back = run_backend(&env.containers, port);
    assert!(
        wait_served_by(port, &hostname_of(&back), REACT).is_some(),
        "the new backend was never served:\n{}",
        read(&lb.out)
    );
    lb.render.assert_running();
}

/// A failing `--check` keeps the old file and `render` running; a template
/// error ends it with 2, naming line and column; with etcd down the file is
/// kept, and `render` follows again when etcd is back.
#[test]
fn refused_files_bad_templates_and_etcd_outages_keep_the_last_good_file() {
    require_docker();
    let mut env = TestEnv::new("render-faults");
    let _agent = env.start_agent(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let refuse = dir.path().join("refuse");
    let template = example("haproxy/haproxy.cfg.j2");
    let check = format!("test ! -e {} && haproxy -c -q -f {{}}", refuse.display());
    let run = |port: &str| {
        env.containers.run(&[
            "-p",
            &format!("127.0.0.1::{port}"),
            "busybox",
            "sleep",
            "1000",
        ])
    };
    let port_a = private_port().to_string();
    run(&port_a);
    let metrics_addr = format!("127.0.0.1:{}", test_port());
    let args = ["--check", &check, "--metrics-addr", &metrics_addr];
    let mut render = spawn_render(&env.endpoint(), &template, &out, &args);
    assert!(wait_until(REACT, || servers(&out) == 1), "{}", read(&out));
    let watching = |value: f64| {
        wait_until(REACT, || {
            metrics(&metrics_addr).get(RENDER_WATCHING) == Some(&value)
        })
    };

    std::fs::write(&refuse, "").unwrap();
    run(&port_a);
    assert!(
        render.wait_for_log("keeping the old file", REACT),
        "no refusal logged"
    );
    assert_eq!(servers(&out), 1, "a refused file replaced the old one");
    render.assert_running();
    std::fs::remove_file(&refuse).unwrap();
    run(&port_a);
    assert!(wait_until(REACT, || servers(&out) == 3), "{}", read(&out));

    // etcd down: the file stays; back: the changes meanwhile are rendered.
    env.etcd.stop();
    assert!(render.wait_for_log("cannot read etcd", REACT));
    // Said while it lasts, not only once a record changes after it.
    assert!(watching(0.0), "{:?}", metrics(&metrics_addr));
    assert_eq!(healthz(&metrics_addr).0, 503);
    let kept = read(&out);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(read(&out), kept);
    render.assert_running();
    let mut once = spawn_render(
        &env.endpoint(),
        &template,
        &dir.path().join("once.cfg"),
        &["--once"],
    );
    let status = once.wait_exit(SLOW).expect("render --once did not exit");
    assert_eq!(status.code(), Some(1), "{:?}", once.lines());
    env.etcd.restart();
    // Following again with nothing changed.
    assert!(watching(1.0), "{:?}", metrics(&metrics_addr));
    assert!(wait_until(REACT, || healthz(&metrics_addr).0 == 200));
    run(&port_a);
    assert!(wait_until(SLOW, || servers(&out) == 4), "{}", read(&out));
    assert!(render.has_log("etcd answers again"));
    assert_eq!(
        render.count_log(&["cannot read etcd"]),
        1,
        "the outage was not said once"
    );

    // A template error: exit 2, line and column.
    let bad = dir.path().join("bad.j2");
    std::fs::write(&bad, "global\n  {% for s in services %}\n  {{ s.name }\n").unwrap();
    let mut once = spawn_render(&env.endpoint(), &bad, &out, &["--once"]);
    let status = once.wait_exit(REACT).expect("render --once did not exit");
    assert_eq!(status.code(), Some(2), "{:?}", once.lines());
    assert!(
        once.lines()
            .iter()
            .any(|l| l.contains("bad.j2 line 3, column")),
        "{:?}",
        once.lines()
    );
}

/// The nginx example passes `nginx -t` and routes a request to a
/// registered backend.
#[test]
fn nginx_example_passes_its_check_and_routes_to_a_backend() {
    require_docker();
    let env = TestEnv::new("render-nginx");
    let _agent = env.start_agent(&[]);
    let port = private_port();
    let backend = run_backend(&env.containers, port);
    env.wait_key(REACT, &env.key(IMAGE, &backend));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("nginx.conf");
    let globals = format!(
        "pid {}; error_log stderr;",
        dir.path().join("nginx.pid").display()
    );
    let check = format!("nginx -t -q -c {{}} -g '{globals}'");
    let mut render = spawn_render(
        &env.endpoint(),
        &example("nginx/nginx.conf.j2"),
        &out,
        &["--check", &check, "--once"],
    );
    let status = render.wait_exit(REACT).expect("render --once did not exit");
    assert!(status.success(), "{:?}", render.lines());
    let text = read(&out);
    assert!(
        text.contains(&format!("listen 127.0.0.1:{port};")),
        "{text}"
    );

    let _nginx = group(
        "nginx",
        &[
            "-c",
            &out.to_string_lossy(),
            "-g",
            &format!("daemon off; {globals}"),
        ],
    );
    assert!(
        wait_served_by(port, &hostname_of(&backend), SLOW).is_some(),
        "nginx never routed to the backend:\n{text}"
    );
}

const RENDER_WATCHING: &str = "docker_etcd_register_render_etcd_watching";
