//! Benchmark of the whole path to traffic, for four load balancers side by
//! side: containers → the agent → etcd → `render` → haproxy, nginx, Envoy
//! and Traefik (the shipped examples) → a client on loopback.
//!
//! One etcd, one agent and one backend service feed four `render`
//! processes, one per proxy; each proxy binds the same frontend port on a
//! loopback address of its own (`LB_BIND_ADDRESS`: 127.0.0.1 haproxy,
//! 127.0.0.2 nginx, 127.0.0.3 Envoy, 127.0.0.4 Traefik), so that one
//! `docker run` is measured through all four at once. It measures
//!
//! - over `--starts` starts (one other backend always registered beside the
//!   new one), the time from `docker run` returning to each stage of the
//!   path: the record in etcd (the agent; one watch shared by all), each
//!   proxy's file holding the new backend (`render`, its debounce included)
//!   and the first request the new container serves through each proxy;
//! - the failed requests of one client loop per proxy, all running during
//!   the same `--replacements` rolling replacements (start a new backend,
//!   wait until it serves through every proxy, `docker stop` the oldest).
//!
//! haproxy and nginx take a new file by a reload and keep `render`'s default
//! debounce (`--debounce-reload`, 200 ms); Envoy and Traefik follow their
//! files in process and get a shorter one (`--debounce-in-process`, 50 ms).
//!
//! It prints a table and, on the last line of stdout, one JSON object.
//! `bash scripts/bench-lb.sh` sets the machine up, builds and runs it.
//! Directly: `cargo run --release --example bench_lb -- [--starts N]
//! [--replacements N] [--mode tcp|http] [--proxies LIST]
//! [--debounce-reload MS] [--debounce-in-process MS] [--agent PATH]`.
//! Everything it starts is removed when it ends, also on Ctrl-C: the
//! proxies' process groups, `render`, the agent, etcd, the containers and
//! the temporary directories.

mod client;
mod launch;
mod proxy;
mod records;
mod report;
mod stages;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use rig::docker::run_web_backend;
use rig::process::check_interrupted;
use rig::{docker, host_ip_for, test_port, unique_id, Agent, AgentOutput, Containers, Etcd};

use client::ClientLoop;
use proxy::{Kind, Proxy, Setup};
use records::Records;
use report::{Failures, Figures};
use stages::StartTimes;

/// The command line.
pub struct Options {
    starts: usize,
    replacements: usize,
    agent: PathBuf,
    /// `HAPROXY_MODE` of the haproxy example: `tcp` or `http`.
    haproxy_mode: String,
    /// The proxies measured, in the order of the table.
    proxies: Vec<Kind>,
    /// `render --debounce` of the proxies that reload (haproxy, nginx).
    debounce_reload_ms: u64,
    /// `render --debounce` of the proxies that follow the file themselves.
    debounce_in_process_ms: u64,
}

fn options() -> Result<Options> {
    let mut options = Options {
        starts: 50,
        replacements: 20,
        agent: PathBuf::from("target/release/docker-etcd-register"),
        haproxy_mode: "tcp".to_string(),
        proxies: Kind::ALL.to_vec(),
        debounce_reload_ms: 200,
        debounce_in_process_ms: 50,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number = || -> Result<u64> {
            value
                .parse()
                .with_context(|| format!("{flag} {value:?}: not a whole number"))
        };
        match flag.as_str() {
            "--starts" => options.starts = number()? as usize,
            "--replacements" => options.replacements = number()? as usize,
            "--agent" => options.agent = PathBuf::from(&value),
            "--mode" if ["tcp", "http"].contains(&value.as_str()) => {
                options.haproxy_mode = value;
            }
            "--mode" => bail!("--mode is tcp or http, not {value:?}"),
            "--proxies" => options.proxies = Kind::parse_list(&value)?,
            "--debounce-reload" => options.debounce_reload_ms = number()?,
            "--debounce-in-process" => options.debounce_in_process_ms = number()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if options.starts == 0 {
        bail!("--starts must be at least 1");
    }
    Ok(options)
}

fn main() -> ExitCode {
    match options().and_then(|options| bench(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-lb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Progress on stderr; stdout is the report's.
pub fn progress(message: &str) {
    eprintln!("bench-lb: {message}");
}

/// Where the logs of every process the run starts go: target/bench-lb/.
pub struct Logs {
    dir: PathBuf,
    id: String,
}

impl Logs {
    fn new(id: &str) -> Result<Logs> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-lb");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Logs {
            dir,
            id: id.to_string(),
        })
    }

    /// The log file of `role` (`agent`, `render-envoy`, `envoy`...).
    pub fn path(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{}-{role}.log", self.id))
    }
}

fn bench(options: &Options) -> Result<()> {
    rig::process::note_interrupts("bench-lb")?;
    let id = unique_id("bench-lb");
    let logs = Logs::new(&id)?;
    for kind in &options.proxies {
        launch::require(*kind)?;
    }
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let containers = Containers::new(&id);
    let port = test_port();
    let records = Records::watch(&endpoint, port)?;
    let host_ip = host_ip_for(&id);
    let mut agent = Agent::spawn_binary(
        &options.agent,
        &[
            "--host-ip",
            &host_ip,
            "--etcd-endpoints",
            &endpoint,
            "--require-label",
            containers.label(),
        ],
        &[],
        AgentOutput::LogFile(logs.path("agent")),
    )
    .with_context(|| format!("spawn {}", options.agent.display()))?;
    agent.wait_ready();

    // The anchor: the backend registered beside every new one, so that no
    // proxy ever has an empty service (its frontend is never rendered away).
    let anchor = run_web_backend(&containers, port);
    let anchor_port = records.wait(&anchor)?.public_port;
    let setup = Setup {
        agent: &options.agent,
        endpoint: &endpoint,
        port,
        logs: &logs,
        haproxy_mode: &options.haproxy_mode,
    };
    let mut proxies = Vec::new();
    for kind in &options.proxies {
        let debounce_ms = match kind.takes() {
            proxy::Takes::Reload => options.debounce_reload_ms,
            proxy::Takes::InProcess => options.debounce_in_process_ms,
        };
        progress(&format!(
            "{}: render --debounce {debounce_ms} ({}), frontend {}:{port}",
            kind.name(),
            kind.takes().describe(),
            kind.address()
        ));
        proxies.push(Proxy::start(*kind, &setup, debounce_ms, anchor_port)?);
    }
    stages::follow(&proxies, &records, &anchor, Instant::now())?;

    progress(&format!("{} starts", options.starts));
    let mut starts = Vec::new();
    for _ in 0..options.starts {
        check_interrupted()?;
        let backend = run_web_backend(&containers, port);
        let ran = Instant::now();
        starts.push(stages::follow(&proxies, &records, &backend, ran)?);
        docker(&["rm", "-f", &backend]);
        stages::wait_left(&proxies, &records, &backend)?;
    }

    progress(&format!("{} rolling replacements", options.replacements));
    let failures = replace(options, &proxies, &records, &containers, anchor, port)?;

    let figures = Figures::new(&proxies, &starts, &failures);
    figures.print(options);
    Ok(())
}

/// Rolling replacements under one client loop per proxy: each new backend
/// serves through every proxy before the oldest is stopped (`docker stop`,
/// which the agent drains). The failed requests of each client.
fn replace(
    options: &Options,
    proxies: &[Proxy],
    records: &Records,
    containers: &Containers,
    anchor: String,
    port: u16,
) -> Result<Vec<Failures>> {
    let mut live = vec![anchor, run_web_backend(containers, port)];
    stages::follow(proxies, records, &live[1], Instant::now())?;
    let clients: Vec<ClientLoop> = proxies
        .iter()
        .map(|proxy| ClientLoop::start(proxy.kind, proxy.frontend()))
        .collect();
    for _ in 0..options.replacements {
        check_interrupted()?;
        let new = run_web_backend(containers, port);
        let _: StartTimes = stages::follow(proxies, records, &new, Instant::now())?;
        docker(&["stop", "-t", "1", &live.remove(0)]);
        live.push(new);
    }
    Ok(clients.into_iter().map(ClientLoop::finish).collect())
}
