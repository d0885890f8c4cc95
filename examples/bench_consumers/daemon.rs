//! The `render` daemon under changes: started on the filled etcd, it first
//! renders everything; then containers are added one at a time, a second
//! apart, and each put is timed until the rendered file shows the new
//! backend (the file is polled every millisecond: `render` replaces it by
//! a rename, so a new version is a new inode, modification time or size).
//! Over those changes only, it counts etcd's Range requests and CPU time.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::runtime::Runtime;

use crate::command::{self, Group, Outcome};
use crate::etcd::EtcdProcess;
use crate::procfs;
use crate::records::{Extra, Layout};
use rig::process::check_interrupted;

/// Time between two added containers.
const SPACING: Duration = Duration::from_secs(1);
/// How often the rendered file is looked at.
const POLL: Duration = Duration::from_millis(1);

/// What the daemon is run with.
pub struct Daemon<'a> {
    /// The agent's binary.
    pub bin: &'a Path,
    /// The template it renders.
    pub template: &'a Path,
    /// The etcd it reads, filled.
    pub etcd: &'a EtcdProcess,
    /// The records in etcd, and the containers to add.
    pub layout: Layout,
    /// Which of `layout`'s added containers (`Layout::extra`) this run puts.
    pub extras: Range<usize>,
    /// The longest wait for the first rendering, and for the last change
    /// after its put.
    pub limit: Duration,
    /// Its stderr.
    pub log: PathBuf,
    /// Where the puts run.
    pub rt: &'a Runtime,
}

/// What the daemon cost.
#[derive(Debug, Clone)]
pub struct Figures {
    /// From spawn to the first file written, in seconds.
    pub first_write_s: f64,
    /// etcd CPU seconds until then.
    pub first_etcd_cpu_s: f64,
    /// Put → the file shows the new backend, per change it showed, in ms.
    pub latencies_ms: Vec<f64>,
    /// Changes the file had not shown within the limit after the last put.
    pub unseen: usize,
    /// etcd's Range requests per change (gRPC `Range` calls).
    pub grpc_ranges_per_change: f64,
    /// Ranges etcd's storage served per change.
    pub mvcc_ranges_per_change: f64,
    /// etcd CPU milliseconds per change (the put included).
    pub etcd_cpu_ms_per_change: f64,
    /// The daemon's peak RSS (`VmHWM`) at the end.
    pub peak_rss_mib: f64,
}

/// A version of a file: inode, modification time, size.
type Version = Option<(u64, i64, i64, u64)>;

fn version(path: &Path) -> Version {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.size()))
}

impl Daemon<'_> {
    pub fn run(&self) -> Result<Outcome<Figures>> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("haproxy.cfg");
        let mut render = command::agent(self.bin, "render", &self.etcd.endpoint());
        render
            .arg("--template")
            .arg(self.template)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(File::create(&self.log).with_context(|| self.log.display().to_string())?);
        let cpu_before = self.etcd.cpu_seconds()?;
        let started = Instant::now();
        let mut daemon = Group::spawn(&mut render)?;
        while version(&out).is_none() {
            if let Some(outcome) = self.ended(&mut daemon, started)? {
                return Ok(outcome);
            }
            thread::sleep(POLL);
        }
        let first_write_s = started.elapsed().as_secs_f64();
        let first_etcd_cpu_s = self.etcd.cpu_seconds()? - cpu_before;
        let mut client = self
            .rt
            .block_on(rig::etcd::connect(&self.etcd.endpoint()))?;
        let extras: Vec<Extra> = self.extras.clone().map(|k| self.layout.extra(k)).collect();

        let counters_before = self.etcd.counters()?;
        let cpu_before = self.etcd.cpu_seconds()?;
        let mut last = version(&out);
        let mut put_at: Vec<Instant> = Vec::with_capacity(extras.len());
        let mut seen: Vec<Option<f64>> = vec![None; extras.len()];
        let first_put = Instant::now();
        loop {
            let due = first_put + SPACING * u32::try_from(put_at.len())?;
            if put_at.len() < extras.len() && Instant::now() >= due {
                let Extra { record, .. } = &extras[put_at.len()];
                let at = Instant::now();
                self.rt
                    .block_on(client.put(record.key.as_str(), record.value.as_str(), None))?;
                put_at.push(at);
            }
            let now = version(&out);
            if now != last {
                let detected = Instant::now();
                last = now;
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                for (i, at) in put_at.iter().enumerate() {
                    if seen[i].is_none() && text.contains(&extras[i].needle) {
                        seen[i] = Some((detected - *at).as_secs_f64() * 1e3);
                    }
                }
            }
            let all_put = put_at.len() == extras.len();
            if all_put && seen.iter().all(Option::is_some) {
                break;
            }
            if all_put && put_at.last().is_none_or(|at| at.elapsed() >= self.limit) {
                break;
            }
            if let Some(outcome) = self.ended(&mut daemon, Instant::now())? {
                return Ok(outcome);
            }
            thread::sleep(POLL);
        }
        let changes = extras.len().max(1) as f64;
        let counters_after = self.etcd.counters()?;
        let etcd_cpu_s = self.etcd.cpu_seconds()? - cpu_before;
        let peak_rss_mib = procfs::peak_rss_mib(daemon.pid())?;
        daemon.stop(Duration::from_secs(5));
        // The added containers go again, so that the next run reads the
        // same records.
        self.rt.block_on(async {
            for extra in &extras {
                client.delete(extra.record.key.as_str(), None).await?;
            }
            anyhow::Ok(())
        })?;
        Ok(Outcome::Done(Figures {
            first_write_s,
            first_etcd_cpu_s,
            latencies_ms: seen.iter().flatten().copied().collect(),
            unseen: seen.iter().filter(|s| s.is_none()).count(),
            grpc_ranges_per_change: (counters_after.grpc_ranges - counters_before.grpc_ranges)
                / changes,
            mvcc_ranges_per_change: (counters_after.mvcc_ranges - counters_before.mvcc_ranges)
                / changes,
            etcd_cpu_ms_per_change: etcd_cpu_s * 1e3 / changes,
            peak_rss_mib,
        }))
    }

    /// Why the wait ends early, if it does: the daemon exited, the limit
    /// since `since` passed (`TimedOut`); an error when interrupted.
    fn ended(&self, daemon: &mut Group, since: Instant) -> Result<Option<Outcome<Figures>>> {
        check_interrupted()?;
        if let Some(exit) = daemon.wait_timeout(Duration::ZERO)? {
            return Ok(Some(Outcome::Failed(format!(
                "exited ({:?}): {}",
                exit.code,
                command::tail(&self.log)
            ))));
        }
        Ok((since.elapsed() >= self.limit).then_some(Outcome::TimedOut))
    }
}
