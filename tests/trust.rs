//! The trust boundary (docs/security.md "Trust boundary"), on the real path: what a
//! container's owner controls (labels, ports, its stop timeout) and what a
//! local user can do to the metrics port cannot inject anything into a load
//! balancer's configuration, offer a loopback port to other hosts, crash
//! the agent or take its descriptors; and a failed `--check` or `--reload`
//! of `render` is tried again.

mod common;

use std::io::Read as _;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::lb::*;
use common::*;

/// What the injection of the trust-boundary case tries to add.
const INJECTED: &str = "web\n    server evil 203.0.113.66:80 weight 256 #";

#[test]
fn a_label_cannot_inject_lines_into_the_shipped_templates() {
    let env = TestEnv::new("trust_label");
    let metrics_addr = metrics_addr();
    let mut agent = env.start_agent(&["--metrics-addr", &metrics_addr]);
    let label = format!("docker-etcd-register.service={INJECTED}");
    let port = private_port().to_string();
    let publish = format!("127.0.0.1::{port}");
    let id = env
        .containers
        .run(&["-l", &label, "-p", &publish, "busybox", "sleep", "1000"]);
    let public = env.host_port(&id, &format!("{port}/tcp"), "127.0.0.1");
    let key = env.key("busybox:latest", &id);
    let record = env.wait_key(REACT, &key);
    assert_eq!(
        record.value,
        expected_value(
            &id,
            "busybox:latest",
            &[("127.0.0.1", &public, &port, "tcp")]
        ),
        "the image names the service"
    );
    assert!(agent.wait_for_log("container input outside the grammar", REACT));
    let (_, metrics) = http_get(&metrics_addr, "/metrics").expect("GET /metrics");
    assert!(
        metrics.contains("docker_etcd_register_rejected_inputs_total{field=\"service_label\"} 1"),
        "{metrics}"
    );

    // Someone with write access to etcd writes the injection directly,
    // under another host (this host's agent would delete it).
    let evil_key = format!(
        "/registered/10.9.9.9/web\n    server evil/{}",
        "e".repeat(64)
    );
    put(&env.endpoint(), &evil_key, &record.value, 0);
    let evil_value = expected_value(
        &id,
        "busybox:latest",
        &[("203.0.113.66:80 weight 256 #", "1", &port, "tcp")],
    );
    put(
        &env.endpoint(),
        &format!("/registered/10.9.9.9/web/{}", "f".repeat(64)),
        &evil_value,
        0,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for (template, check) in [
        ("haproxy/haproxy.cfg.j2", "haproxy -c -q -f {}".to_owned()),
        (
            "nginx/nginx.conf.j2",
            format!(
                "nginx -t -q -c {{}} -g 'pid {}/nginx.pid;'",
                dir.path().display()
            ),
        ),
    ] {
        let out = dir.path().join(template.replace('/', "-"));
        let mut render = spawn_render(
            &env.endpoint(),
            &example(template),
            &out,
            &["--check", &check, "--once"],
        );
        let status = render.wait_exit(SLOW).expect("render --once did not exit");
        assert!(status.success(), "{template}: {:?}", render.lines());
        let text = read(&out);
        assert!(!text.contains("evil"), "{template}:\n{text}");
        assert!(
            text.contains(&format!("127.0.0.1:{public}")),
            "{template}:\n{text}"
        );
    }
}

#[test]
fn a_loopback_binding_is_not_offered_by_a_routable_host() {
    // A documentation address (never reached: records are only written).
    let env = TestEnv::new("trust_loopback");
    let routable = "192.0.2.10";
    let mut args: Vec<String> = env.agent_args();
    let host = args.iter().position(|a| a == "--host-ip").unwrap() + 1;
    args[host] = routable.to_owned();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _agent = env.spawn_agent(&args);
    let local = env.run_loopback_80();
    let wildcard = env
        .containers
        .run(&["-p", "80", "busybox", "sleep", "1000"]);
    let public = env.host_port(&wildcard, "80/tcp", "0.0.0.0");
    let key = record_key(routable, "busybox:latest", &wildcard);
    let wait = Instant::now();
    while !get_prefix(&env.endpoint(), &format!("/registered/{routable}/")).contains_key(&key) {
        assert!(
            wait.elapsed() < REACT,
            "the wildcard binding was not registered"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let records = get_prefix(&env.endpoint(), &format!("/registered/{routable}/"));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[&key].value,
        expected_value(
            &wildcard,
            "busybox:latest",
            &[(routable, &public, "80", "tcp")]
        )
    );
    assert!(!records.keys().any(|k| k.contains(&local)));
}

#[test]
fn a_stop_timeout_beyond_the_clock_or_for_ever_neither_crashes_nor_returns_the_record() {
    let env = TestEnv::new("trust_stop_timeout");
    let mut agent = env.start_agent(&[]);
    let deaf = "trap '' TERM; while true; do sleep 0.1; done";
    let run = |timeout: &str| {
        env.containers.run(&[
            "--stop-timeout",
            timeout,
            "-p",
            "127.0.0.1::80",
            "busybox",
            "sh",
            "-c",
            deaf,
        ])
    };
    let huge = run("9223372036854775807");
    let forever = run("-1");
    let keys: Vec<String> = [&huge, &forever]
        .iter()
        .map(|id| env.loopback_80_record(id).0)
        .collect();
    for key in &keys {
        env.wait_key(REACT, key);
    }
    for id in [&huge, &forever] {
        docker(&["kill", "-s", "TERM", id]);
    }
    for key in &keys {
        env.wait_gone(REACT, key);
    }
    // Past the default stop timeout and its grace: still draining.
    thread::sleep(Duration::from_secs(16));
    agent.assert_running();
    assert!(is_running(&huge) && is_running(&forever));
    let left = env.keys();
    assert!(keys.iter().all(|k| !left.contains(k)), "{left:?}");
}

#[test]
fn idle_connections_cannot_take_the_metrics_port_or_the_agents_descriptors() {
    let env = TestEnv::new("trust_metrics");
    let metrics_addr = metrics_addr();
    let _agent = env.start_agent(&["--metrics-addr", &metrics_addr]);
    // Far more idle connections than the server serves at once; the kernel
    // queues those it does not accept.
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&metrics_addr).ok())
        .collect();
    assert!(idle.len() > 64, "{}", idle.len());
    // The agent still registers (its engine and etcd connections are intact).
    let id = env.run_loopback_80();
    let (key, value) = env.loopback_80_record(&id);
    assert_eq!(env.wait_key(REACT, &key).value, value);
    // The idle ones are dropped after the head timeout, and the port
    // answers again.
    let mut first = idle.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buffer = [0u8; 64];
    let read = first.read(&mut buffer);
    let closed_by_the_agent = match &read {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed_by_the_agent, "an idle connection was kept: {read:?}");
    let answered = wait_until(Duration::from_secs(20), || {
        http_get(&metrics_addr, "/healthz").is_ok_and(|(status, _)| status == 200)
    });
    assert!(answered, "the metrics port did not answer again");
}

/// Clients that each keep a connection and send request after request on
/// it, more of them than the server's slots: every connection is answered
/// once and closed, so a scraper queued behind them is still served within
/// a scrape timeout (10 s).
#[test]
fn clients_re_sending_requests_cannot_keep_the_metrics_port_from_a_scraper() {
    let env = TestEnv::new("trust_metrics_busy");
    let metrics_addr = metrics_addr();
    let _agent = env.start_agent(&["--metrics-addr", &metrics_addr]);
    assert!(wait_until(REACT, || http_get(&metrics_addr, "/healthz").is_ok()));
    let until = Instant::now() + Duration::from_secs(15);
    let hogs: Vec<_> = (0..48)
        .map(|_| {
            let addr = metrics_addr.clone();
            thread::spawn(move || {
                let mut answers_on_one_connection = 0;
                while Instant::now() < until {
                    let Ok(mut stream) = TcpStream::connect(&addr) else {
                        continue;
                    };
                    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
                    let _ = std::io::Write::write_all(&mut stream, request.as_bytes());
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    answers_on_one_connection =
                        answers_on_one_connection.max(answer.matches("HTTP/1.1 ").count());
                }
                answers_on_one_connection
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let asked = Instant::now();
        let answered = http_get(&metrics_addr, "/metrics").is_ok();
        slowest = slowest.max(asked.elapsed());
        assert!(answered, "a scrape failed after {:?}", asked.elapsed());
        thread::sleep(Duration::from_millis(500));
    }
    for hog in hogs {
        let most = hog.join().unwrap();
        assert!(most <= 1, "{most} answers on one connection");
    }
    eprintln!("slowest scrape among the busy clients: {slowest:?}");
    assert!(slowest < Duration::from_secs(10), "{slowest:?}");
}

#[test]
fn render_tries_a_failed_check_and_a_failed_reload_again() {
    let env = TestEnv::new("trust_render_retry");
    let _agent = env.start_agent(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let refuse = dir.path().join("refuse");
    let no_reload = dir.path().join("no-reload");
    let reloads = dir.path().join("reloads");
    let check = format!("test ! -e {} && haproxy -c -q -f {{}}", refuse.display());
    let reload = format!(
        "echo >> {}; test ! -e {}",
        reloads.display(),
        no_reload.display()
    );
    let reload_runs = || read(&reloads).lines().count();
    let port = private_port().to_string();
    let publish = format!("127.0.0.1::{port}");
    let run = || {
        env.containers
            .run(&["-p", &publish, "busybox", "sleep", "1000"])
    };
    run();
    let template = example("haproxy/haproxy.cfg.j2");
    let mut render = spawn_render(
        &env.endpoint(),
        &template,
        &out,
        &["--check", &check, "--reload", &reload],
    );
    assert!(wait_until(REACT, || servers(&out) == 1), "{}", read(&out));

    // A check that fails once passes later, with no change in etcd.
    std::fs::write(&refuse, "").unwrap();
    run();
    assert!(render.wait_for_log("keeping the old file", REACT));
    std::fs::remove_file(&refuse).unwrap();
    assert!(wait_until(REACT, || servers(&out) == 2), "{}", read(&out));

    // A reload that fails is run again until it passes.
    std::fs::write(&no_reload, "").unwrap();
    run();
    assert!(wait_until(REACT, || servers(&out) == 3), "{}", read(&out));
    assert!(render.wait_for_log("the reload command failed", REACT));
    let failed = reload_runs();
    std::fs::remove_file(&no_reload).unwrap();
    assert!(wait_until(REACT, || reload_runs() > failed), "not retried");
    assert!(render.wait_for_log("reloaded", REACT));
    render.assert_running();
}
