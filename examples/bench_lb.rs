//! Benchmark of the whole path to traffic: containers → the agent → etcd →
//! `render` → haproxy (the shipped example, master-worker, reloaded by
//! SIGUSR2) → a client on loopback. It measures
//!
//! - the time from `docker run` returning to the first request that the new
//!   container serves through haproxy (p50, p90, max over `--starts` starts,
//!   one other backend always registered beside it);
//! - failed requests of a client sending one request after another during
//!   `--replacements` rolling replacements (start a new backend, wait until
//!   it serves, `docker stop` the oldest).
//!
//! It prints a table and, on the last line of stdout, one JSON object.
//! `bash scripts/bench-lb.sh` sets the machine up, builds and runs it.
//! Directly: `cargo run --release --example bench_lb -- [--starts N]
//! [--replacements N] [--mode tcp|http] [--agent PATH]` (`--mode`: the
//! example's `HAPROXY_MODE`, default `tcp`). Everything it starts is removed when
//! it ends.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rig::{
    docker, host_ip_for, http_get, test_port, unique_id, wait_until, Agent, AgentOutput,
    Containers, Etcd,
};

/// Longest a backend may take to be served before the run is abandoned.
const SERVED_TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    starts: usize,
    replacements: usize,
    agent: PathBuf,
    /// `HAPROXY_MODE` of the example: `tcp` or `http`.
    mode: String,
}

fn options() -> Options {
    let mut options = Options {
        starts: 50,
        replacements: 20,
        agent: PathBuf::from("target/release/docker-etcd-register"),
        mode: "tcp".to_string(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--starts" => options.starts = value.parse().expect("--starts N"),
            "--replacements" => options.replacements = value.parse().expect("--replacements N"),
            "--agent" => options.agent = PathBuf::from(value),
            "--mode" => options.mode = value,
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// haproxy's whole process group, killed on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn main() {
    let options = options();
    let id = unique_id("bench-lb");
    let etcd = Etcd::start();
    let containers = Containers::new(&id);
    let host_ip = host_ip_for(&id);
    let endpoint = etcd.endpoint();
    let spawn = |args: &[&str], envs: &[(&str, &str)]| {
        Agent::spawn_binary(
            &options.agent,
            args,
            envs,
            AgentOutput::LogFile(log(&id, args)),
        )
        .expect("spawn the binary")
    };
    let mut agent = spawn(
        &[
            "--host-ip",
            &host_ip,
            "--etcd-endpoints",
            &endpoint,
            "--require-label",
            containers.label(),
        ],
        &[],
    );
    agent.wait_ready();

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let pidfile = dir.path().join("haproxy.pid");
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/haproxy/haproxy.cfg.j2");
    let reload = format!("test ! -e {0} || kill -USR2 $(cat {0})", pidfile.display());
    let port = test_port();
    let anchor = rig::docker::run_web_backend(&containers, port);
    let _render = spawn(
        &[
            "render",
            "--etcd-endpoints",
            &endpoint,
            "--template",
            &template.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
            "--check",
            "haproxy -c -q -f {}",
            "--reload",
            &reload,
        ],
        &[
            ("LB_BIND_ADDRESS", "127.0.0.1"),
            ("HAPROXY_MODE", &options.mode),
        ],
    );
    assert!(
        wait_until(SERVED_TIMEOUT, || servers(&out) == 1),
        "render wrote no server"
    );
    let master_socket = dir.path().join("master.sock");
    let _haproxy = Haproxy(
        Command::new("haproxy")
            .args(["-W", "-db", "-S", &master_socket.to_string_lossy()])
            .args([
                "-p",
                &pidfile.to_string_lossy(),
                "-f",
                &out.to_string_lossy(),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn haproxy"),
    );
    served_after(port, &anchor, Instant::now());

    eprintln!("bench-lb: {} starts", options.starts);
    let mut latencies = Vec::new();
    for _ in 0..options.starts {
        let backend = rig::docker::run_web_backend(&containers, port);
        latencies.push(served_after(port, &backend, Instant::now()));
        docker(&["rm", "-f", &backend]);
        assert!(
            wait_until(SERVED_TIMEOUT, || servers(&out) == 1),
            "the removed backend stayed"
        );
    }
    latencies.sort();

    eprintln!("bench-lb: {} rolling replacements", options.replacements);
    let mut live = vec![anchor, rig::docker::run_web_backend(&containers, port)];
    served_after(port, &live[1], Instant::now());
    let client = Client::start(port);
    for _ in 0..options.replacements {
        let new = rig::docker::run_web_backend(&containers, port);
        served_after(port, &new, Instant::now());
        docker(&["stop", "-t", "1", &live.remove(0)]);
        live.push(new);
    }
    let (requests, failed) = client.finish();

    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "docker run returned → first request served through haproxy ({} starts)",
        latencies.len()
    );
    println!("  p50 {:8.1} ms", ms(at(0.5)));
    println!("  p90 {:8.1} ms", ms(at(0.9)));
    println!("  max {:8.1} ms", ms(at(1.0)));
    println!(
        "rolling replacements ({} mode): {}; requests: {requests}; failed: {failed}",
        options.mode, options.replacements
    );
    println!(
        "{}",
        serde_json::json!({
            "starts": latencies.len(),
            "served_p50_ms": ms(at(0.5)),
            "served_p90_ms": ms(at(0.9)),
            "served_max_ms": ms(at(1.0)),
            "replacements": options.replacements,
            "mode": options.mode,
            "requests": requests,
            "failed_requests": failed,
        })
    );
}

/// A log file per process under target/bench-lb/.
fn log(id: &str, args: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-lb");
    std::fs::create_dir_all(&dir).expect("create target/bench-lb");
    let role = if args.first() == Some(&"render") {
        "render"
    } else {
        "agent"
    };
    dir.join(format!("{id}-{role}.log"))
}

fn servers(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .count()
}

fn get(port: u16) -> Option<String> {
    match http_get(&format!("127.0.0.1:{port}"), "/") {
        Ok((200, body)) => Some(body.trim().to_string()),
        _ => None,
    }
}

/// How long after `since` the container `id` served a request through haproxy.
fn served_after(port: u16, id: &str, since: Instant) -> Duration {
    let hostname = &id[..12];
    let deadline = since + SERVED_TIMEOUT;
    while Instant::now() < deadline {
        if get(port).as_deref() == Some(hostname) {
            return since.elapsed();
        }
        thread::sleep(Duration::from_millis(2));
    }
    panic!("{hostname} was not served within {SERVED_TIMEOUT:?}");
}

/// One request after another until finished; counts them and the failures.
struct Client {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: thread::JoinHandle<()>,
}

impl Client {
    fn start(port: u16) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let (requests, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, r, f) = (stop.clone(), requests.clone(), failed.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Err(error) = http_get(&format!("127.0.0.1:{port}"), "/") {
                    f.fetch_add(1, Ordering::SeqCst);
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    eprintln!(
                        "bench-lb: failed request at {:.3} s since the epoch: {error}",
                        at.as_secs_f64()
                    );
                }
                r.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
        });
        Client {
            stop,
            requests,
            failed,
            thread,
        }
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        (
            self.requests.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}
