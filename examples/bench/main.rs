//! Benchmark of the agent against the real dockerd and a private etcd.
//!
//! Each run starts its own etcd, pre-starts labelled containers, and measures:
//! start-up (spawn of the release binary → all pre-existing containers
//! registered), start → key and die → gone latency over a burst (from the
//! engine's own event time to the moment an independent etcd watch sees the
//! change), lost containers, the agent's peak RSS, its CPU over the run and
//! while idle. In the same run it measures the floor: raw Docker inspect and
//! etcd put latency on an idle machine, how long the engine takes to deliver
//! an event to a subscriber, and a minimal reference registrar (see
//! `reference.rs`) under the same load as the agent's burst. It prints the
//! medians across runs as a table and as one JSON line (the last line of
//! stdout); progress goes to stderr.
//!
//! `bash scripts/bench.sh [--runs N]` sets the machine up, builds and runs it.
//! Directly, after `cargo build --release`: `cargo run --release --example
//! bench -- [--runs N] [--containers N] [--burst N] [--workers N] [--idle-secs N]
//! [--agent PATH] [--id ID] [--engine docker|podman]`.
//!
//! It is an example rather than a `[[bench]]` target: building a bench
//! target makes cargo rebuild the agent binary with the bench settings
//! (benches ignore `panic = "abort"`) and put that build over
//! `target/release/docker-etcd-register`, the very binary to be measured.
//! `cargo test` only compiles examples, it never runs them.

mod agent;
mod clock;
mod docker;
mod etcd;
mod figures;
mod procfs;
mod reference;
mod report;
mod run;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use report::{Context, Sample, Summary};
use run::{progress, Settings};

struct Options {
    runs: usize,
    settings: Settings,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args).and_then(|options| bench(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Options> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut options = Options {
        runs: 3,
        settings: Settings {
            engine: rig::docker::Engine::Docker,
            containers: 200,
            burst: 200,
            workers: 8,
            idle: Duration::from_secs(10),
            lost_after: Duration::from_secs(30),
            agent: manifest_dir.join("target/release/docker-etcd-register"),
            log_dir: manifest_dir.join("target/bench"),
            id: std::process::id().to_string(),
        },
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        let s = &mut options.settings;
        match arg.as_str() {
            "--runs" => options.runs = value()?.parse()?,
            "--containers" => s.containers = value()?.parse()?,
            "--burst" => s.burst = value()?.parse()?,
            "--workers" => s.workers = value()?.parse()?,
            "--idle-secs" => s.idle = Duration::from_secs(value()?.parse()?),
            "--agent" => s.agent = PathBuf::from(value()?),
            "--id" => s.id = value()?.clone(),
            "--engine" => {
                s.engine = match value()?.as_str() {
                    "docker" => rig::docker::Engine::Docker,
                    "podman" => rig::docker::Engine::Podman,
                    other => bail!("--engine is docker or podman, not {other:?}"),
                }
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let s = &options.settings;
    if options.runs == 0 || s.containers == 0 || s.workers == 0 || s.burst < 4 {
        bail!("--runs, --containers and --workers must be at least 1, --burst at least 4");
    }
    Ok(options)
}

fn bench(options: &Options) -> Result<()> {
    let s = &options.settings;
    std::fs::create_dir_all(&s.log_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let context = context(options, &rt)?;
    let mut samples: Vec<Sample> = Vec::new();
    for index in 1..=options.runs {
        progress(&format!("run {index} of {}", options.runs));
        samples.push(run::run_once(index, s, &rt)?);
    }
    let summary = Summary::new(&samples);
    print!("{}", summary.table(&context));
    println!("{}", summary.json(&context));
    Ok(())
}

/// Date, machine, versions and the shape of the run.
fn context(options: &Options, rt: &tokio::runtime::Runtime) -> Result<Context> {
    let machine = procfs::machine();
    let mut engine = docker::Engine::connect(rt.handle(), options.settings.engine);
    engine.check_answers()?;
    let docker_version = engine.version()?;
    let s = &options.settings;
    Ok(Context {
        fields: vec![
            (
                "date",
                json!(command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
            ),
            ("nproc", json!(machine.nproc)),
            ("cpu", json!(machine.cpu_model)),
            ("kernel", json!(machine.kernel)),
            ("engine", json!(options.settings.engine.name())),
            ("engine_version", json!(docker_version)),
            ("etcd", json!(etcd_version())),
            ("runs", json!(options.runs)),
            ("containers", json!(s.containers)),
            ("burst", json!(s.burst)),
            ("workers", json!(s.workers)),
            ("idle_secs", json!(s.idle.as_secs())),
            ("agent", Value::String(s.agent.display().to_string())),
        ],
    })
}

/// `etcd --version`'s first line without its label, e.g. `3.4.23`.
fn etcd_version() -> String {
    let out = command_line(rig::ETCD_BIN, &["--version"]);
    out.strip_prefix("etcd Version: ")
        .unwrap_or(&out)
        .to_string()
}

/// The first line a command prints, or `unknown`.
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}
