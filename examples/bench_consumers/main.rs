//! Benchmark of the consumers, `list` and `render`, at cluster scale.
//!
//! For each record count it starts a private etcd, fills it with that many
//! records in the agent's own format (1,000 hosts, 1–3 ports a record, see
//! `records.rs`) and measures, against that etcd:
//!
//! - `etcdctl get --prefix /registered/ -w json` (the floor: one client
//!   reading everything), `list --json` and `render --once` with the
//!   shipped haproxy template: wall time, etcd's CPU time meanwhile, the
//!   command's peak RSS;
//! - the `render` daemon (default debounce): the time to its first file,
//!   then, over `--changes` containers added a second apart, put → the file
//!   shows the new backend (p50, p90, max), etcd's Range requests and CPU
//!   time per change, and the daemon's peak RSS.
//!
//! With `--range-options`, right after each fill and before those rows, it
//! measures what etcd does with each way of reading the whole prefix (one
//! range with no limit, serializable, `keys_only`, `count_only`, pages of
//! 500 keys or of 1, 8 or 32 MiB, single pages by where they start; see
//! `ranges.rs`), each way for at least `--range-secs` (default 2); with
//! `--only-range-options` it measures nothing else.
//!
//! A command that runs past `--timeout-secs` is killed and reported as a
//! timeout, and is not run again at larger counts. With `--bin-before` a
//! second binary's rows are measured beside the first's, on the same fill.
//! It prints a table per record count and, on the last line of stdout, one
//! JSON object; progress goes to stderr, the commands' stderr to
//! `target/bench-consumers/`.
//!
//! `bash scripts/bench-consumers.sh` builds and runs it. Directly, after
//! `cargo build --release`: `cargo run --release --example bench_consumers
//! -- [--records "10000 100000"] [--runs R] [--timeout-secs S] [--changes K]
//! [--hosts H] [--bin PATH] [--bin-before PATH] [--template PATH]
//! [--range-options] [--only-range-options] [--range-secs S]`.

mod command;
mod daemon;
mod etcd;
#[path = "../bench/procfs.rs"]
mod procfs;
mod ranges;
mod records;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Map, Value};

use command::{measure, Outcome};
use daemon::Daemon;
use etcd::EtcdProcess;
use records::{Layout, ROOT};
use report::{Measured, Scale};

struct Options {
    /// The record counts, one etcd each.
    records: Vec<usize>,
    /// Hosts the records are spread over.
    hosts: usize,
    /// Runs of every measurement on one fill; the table shows medians.
    runs: usize,
    /// The longest any one command may take.
    timeout: Duration,
    /// Containers added while the render daemon runs.
    changes: usize,
    /// The agent's binary.
    bin: PathBuf,
    /// Another binary of the agent, measured beside `bin`.
    bin_before: Option<PathBuf>,
    /// The template `render` renders.
    template: PathBuf,
    /// Where the commands' stderr is kept.
    log_dir: PathBuf,
    /// Whether the ways of reading the whole prefix are measured.
    range_options: bool,
    /// Whether the consumers and etcdctl are measured.
    consumers: bool,
    /// The least time each way of reading is repeated for.
    range_wall: Duration,
}

pub fn progress(message: &str) {
    eprintln!("bench-consumers: {message}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args).and_then(|options| bench(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-consumers: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Options> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut options = Options {
        records: vec![10_000, 100_000, 1_000_000],
        hosts: 1000,
        runs: 1,
        timeout: Duration::from_secs(900),
        changes: 20,
        bin: manifest_dir.join("target/release/docker-etcd-register"),
        bin_before: None,
        template: manifest_dir.join("examples/haproxy/haproxy.cfg.j2"),
        log_dir: manifest_dir.join("target/bench-consumers"),
        range_options: false,
        consumers: true,
        range_wall: Duration::from_secs(2),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--records" => {
                options.records = value()?
                    .split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--hosts" => options.hosts = value()?.parse()?,
            "--runs" => options.runs = value()?.parse()?,
            "--timeout-secs" => options.timeout = Duration::from_secs(value()?.parse()?),
            "--changes" => options.changes = value()?.parse()?,
            "--bin" => options.bin = PathBuf::from(value()?),
            "--bin-before" => options.bin_before = Some(PathBuf::from(value()?)),
            "--template" => options.template = PathBuf::from(value()?),
            "--range-options" => options.range_options = true,
            "--only-range-options" => {
                options.range_options = true;
                options.consumers = false;
            }
            "--range-secs" => {
                options.range_wall = Duration::try_from_secs_f64(value()?.parse()?)
                    .context("--range-secs needs seconds, at least 0")?
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if options.records.is_empty() || options.records.contains(&0) {
        bail!("--records needs counts of at least 1");
    }
    if options.runs == 0 || options.hosts == 0 || options.changes == 0 {
        bail!("--runs, --hosts and --changes must be at least 1");
    }
    for bin in std::iter::once(&options.bin).chain(&options.bin_before) {
        if !bin.is_file() {
            bail!(
                "{} is no file: build it (cargo build --release)",
                bin.display()
            );
        }
    }
    Ok(options)
}

fn bench(options: &Options) -> Result<()> {
    std::fs::create_dir_all(&options.log_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rig::process::note_interrupts("bench-consumers")?;
    let debounce = default_debounce(&options.bin);
    let mut bins = vec![("", options.bin.as_path())];
    if let Some(before) = &options.bin_before {
        bins.push(("before_", before.as_path()));
    }
    let mut timed_out = BTreeSet::new();
    let mut scales = Vec::new();
    for &count in &options.records {
        let layout = Layout::new(count, options.hosts);
        layout.check_ports(options.runs * bins.len() * options.changes)?;
        progress(&format!("{count} records: starting etcd and filling it"));
        let etcd = EtcdProcess::start()?;
        let started = Instant::now();
        rt.block_on(records::fill(&etcd.endpoint(), layout))?;
        let fill_s = started.elapsed().as_secs_f64();
        progress(&format!("{count} records: filled in {fill_s:.1} s"));
        let ranges = if options.range_options {
            let measured = ranges::measure(&etcd, count, options.range_wall, options.timeout);
            Some(rt.block_on(measured)?)
        } else {
            None
        };
        let mut runs = Vec::new();
        let consumer_runs = if options.consumers { options.runs } else { 0 };
        for run in 0..consumer_runs {
            let mut bench = Bench {
                options,
                rt: &rt,
                etcd: &etcd,
                layout,
                run,
                results: BTreeMap::new(),
                timed_out: &mut timed_out,
            };
            bench.etcdctl()?;
            for (index, (prefix, bin)) in bins.iter().enumerate() {
                bench.consumers(prefix, bin, (run * bins.len() + index) * options.changes)?;
            }
            runs.push(bench.results);
        }
        // Read last: etcd grows its file when it commits, up to 100 ms
        // after a put.
        let db_mib = etcd.counters()?.db_bytes / (1024.0 * 1024.0);
        let scale = Scale {
            records: count,
            hosts: layout.hosts,
            changes: options.changes,
            fill_s,
            db_mib,
            runs,
            ranges,
        };
        print!("{}", scale.table(&debounce));
        scales.push(scale.json());
    }
    let mut all = context(options, &debounce);
    all.insert("results".into(), Value::Array(scales));
    println!("{}", Value::Object(all));
    Ok(())
}

/// One run at one record count.
struct Bench<'a> {
    /// What the benchmark was asked for.
    options: &'a Options,
    /// Where etcd's clients run.
    rt: &'a tokio::runtime::Runtime,
    /// The filled etcd.
    etcd: &'a EtcdProcess,
    /// What it holds.
    layout: Layout,
    /// The run's index, from 0.
    run: usize,
    /// Row key → what it gave.
    results: BTreeMap<String, Measured>,
    /// Row keys that timed out before: not run again.
    timed_out: &'a mut BTreeSet<String>,
}

impl Bench<'_> {
    /// Measures the row `key` with `measure`, unless it timed out before.
    fn row(&mut self, key: String, measure: impl FnOnce(&Path) -> Result<Measured>) -> Result<()> {
        let measured = if self.timed_out.contains(&key) {
            Measured::Skipped
        } else {
            progress(&format!(
                "{} records, run {}: {key}",
                self.layout.records,
                self.run + 1
            ));
            let log = self.options.log_dir.join(format!(
                "{}-{key}-run{}.log",
                self.layout.records,
                self.run + 1
            ));
            let measured = measure(&log)?;
            match &measured {
                Measured::Command(Outcome::TimedOut) | Measured::Daemon(Outcome::TimedOut) => {
                    progress(&format!("  {key}: timeout"));
                    self.timed_out.insert(key.clone());
                }
                Measured::Command(Outcome::Failed(e)) | Measured::Daemon(Outcome::Failed(e)) => {
                    progress(&format!("  {key}: FAILED: {e}"))
                }
                Measured::Command(Outcome::Done(cost)) => progress(&format!(
                    "  wall {:.3} s, etcd CPU {:.2} s, peak RSS {:.0} MiB",
                    cost.wall_s, cost.etcd_cpu_s, cost.peak_rss_mib
                )),
                Measured::Daemon(Outcome::Done(f)) => progress(&format!(
                    "  first write {:.3} s, {} changes seen, {} unseen",
                    f.first_write_s,
                    f.latencies_ms.len(),
                    f.unseen
                )),
                Measured::Skipped => {}
            }
            measured
        };
        self.results.insert(key, measured);
        Ok(())
    }

    fn etcdctl(&mut self) -> Result<()> {
        let (limit, etcd) = (self.options.timeout, self.etcd);
        self.row("etcdctl".into(), |log| {
            let mut etcdctl = Command::new("etcdctl");
            for (key, _) in std::env::vars() {
                if key.starts_with("ETCDCTL") {
                    etcdctl.env_remove(key);
                }
            }
            etcdctl
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", etcd.endpoint()))
                // Its default of 5 s is too short for a million records.
                .arg(format!("--command-timeout={}s", limit.as_secs() + 60))
                .args(["get", "--prefix", &format!("{ROOT}/"), "-w", "json"]);
            Ok(Measured::Command(measure(&mut etcdctl, limit, etcd, log)?))
        })
    }

    /// `list --json`, `render --once` and the render daemon of `bin`, their
    /// row keys starting with `prefix`; the daemon adds the containers
    /// `first_extra..` of the layout.
    fn consumers(&mut self, prefix: &str, bin: &Path, first_extra: usize) -> Result<()> {
        let options = self.options;
        let (limit, etcd, template) = (options.timeout, self.etcd, &options.template);
        self.row(format!("{prefix}list"), |log| {
            let mut list = command::agent(bin, "list", &etcd.endpoint());
            list.arg("--json");
            Ok(Measured::Command(measure(&mut list, limit, etcd, log)?))
        })?;
        self.row(format!("{prefix}render_once"), |log| {
            let dir = tempfile::tempdir()?;
            let mut render = command::agent(bin, "render", &etcd.endpoint());
            render
                .args(["--once", "--template"])
                .arg(template)
                .arg("--out")
                .arg(dir.path().join("haproxy.cfg"));
            Ok(Measured::Command(measure(&mut render, limit, etcd, log)?))
        })?;
        let (layout, rt, changes) = (self.layout, self.rt, self.options.changes);
        self.row(format!("{prefix}render_daemon"), |log| {
            let daemon = Daemon {
                bin,
                template,
                etcd,
                layout,
                extras: first_extra..first_extra + changes,
                limit,
                log: log.to_path_buf(),
                rt,
            };
            Ok(Measured::Daemon(daemon.run()?))
        })
    }
}

/// `render`'s default `--debounce` in ms, from its `--help`.
fn default_debounce(bin: &Path) -> String {
    let help = Command::new(bin)
        .args(["render", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    help.split_once("--debounce")
        .and_then(|(_, after)| after.split_once("[default: "))
        .and_then(|(_, value)| value.split_once(']'))
        .map_or_else(|| "unknown".into(), |(value, _)| value.to_string())
}

/// Date, machine, versions and the shape of the benchmark.
fn context(options: &Options, debounce: &str) -> Map<String, Value> {
    let machine = procfs::machine();
    let fields = [
        (
            "date",
            json!(first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        ),
        ("nproc", json!(machine.nproc)),
        ("cpu", json!(machine.cpu_model)),
        ("kernel", json!(machine.kernel)),
        ("etcd", json!(version(rig::ETCD_BIN, &["--version"]))),
        ("etcdctl", json!(version("etcdctl", &["version"]))),
        ("bin", json!(options.bin.display().to_string())),
        (
            "bin_before",
            json!(options.bin_before.as_ref().map(|b| b.display().to_string())),
        ),
        ("runs", json!(options.runs)),
        ("hosts", json!(options.hosts)),
        ("timeout_secs", json!(options.timeout.as_secs())),
        ("changes", json!(options.changes)),
        ("range_options", json!(options.range_options)),
        ("consumers", json!(options.consumers)),
        (
            "debounce_ms",
            debounce
                .parse::<u64>()
                .map_or_else(|_| json!(debounce), |ms| json!(ms)),
        ),
    ];
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The version a tool prints on its first line (`etcd Version: 3.4.23`),
/// without its label.
fn version(program: &str, args: &[&str]) -> String {
    let line = first_line(program, args);
    line.rsplit_once(": ")
        .map_or(line.as_str(), |(_, version)| version)
        .to_string()
}

/// The first line a command prints, or `unknown`.
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}
