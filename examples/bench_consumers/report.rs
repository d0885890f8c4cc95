//! The figures of each record count: per run and row, then their medians
//! across runs as a table and as JSON.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::command::{Cost, Outcome};
use crate::daemon::Figures;
use crate::ranges::Report;

/// What one row of one run gave.
#[derive(Debug, Clone)]
pub enum Measured {
    /// A command that runs to its end.
    Command(Outcome<Cost>),
    /// The render daemon under changes.
    Daemon(Outcome<Figures>),
    /// Not run: it timed out already, at this or a smaller record count.
    Skipped,
}

impl Measured {
    /// Its figures by name, or its status when it gave none.
    fn figures(&self) -> Result<BTreeMap<&'static str, f64>, Value> {
        match self {
            Measured::Command(Outcome::Done(cost)) => Ok(BTreeMap::from([
                ("wall_s", cost.wall_s),
                ("etcd_cpu_s", cost.etcd_cpu_s),
                ("peak_rss_mib", cost.peak_rss_mib),
            ])),
            Measured::Daemon(Outcome::Done(f)) => {
                let sorted = sorted(&f.latencies_ms);
                let mut figures = BTreeMap::from([
                    ("wall_s", f.first_write_s),
                    ("etcd_cpu_s", f.first_etcd_cpu_s),
                    ("peak_rss_mib", f.peak_rss_mib),
                    ("unseen", f.unseen as f64),
                    ("ranges_per_change", f.grpc_ranges_per_change),
                    ("mvcc_ranges_per_change", f.mvcc_ranges_per_change),
                    ("etcd_cpu_ms_per_change", f.etcd_cpu_ms_per_change),
                ]);
                if !sorted.is_empty() {
                    figures.insert("p50_ms", percentile(&sorted, 50.0));
                    figures.insert("p90_ms", percentile(&sorted, 90.0));
                    figures.insert("max_ms", percentile(&sorted, 100.0));
                }
                Ok(figures)
            }
            Measured::Command(Outcome::TimedOut) | Measured::Daemon(Outcome::TimedOut) => {
                Err(json!({"status": "timeout"}))
            }
            Measured::Command(Outcome::Failed(e)) | Measured::Daemon(Outcome::Failed(e)) => {
                Err(json!({"status": "failed", "error": e}))
            }
            Measured::Skipped => Err(json!({"status": "timeout", "skipped": true})),
        }
    }
}

/// The rows of the table: key in the JSON, label.
pub const ROWS: [(&str, &str); 4] = [
    ("etcdctl", "etcdctl get -w json"),
    ("list", "list --json"),
    ("render_once", "render --once"),
    ("render_daemon", "render daemon (1st)"),
];

/// Everything measured at one record count.
pub struct Scale {
    /// Records filled.
    pub records: usize,
    /// Hosts they are spread over.
    pub hosts: usize,
    /// Containers the render daemon saw added, per run.
    pub changes: usize,
    /// Seconds the fill took.
    pub fill_s: f64,
    /// etcd's database file after the fill.
    pub db_mib: f64,
    /// Per run: row key (`list`, `before_list`...) → what it gave; none
    /// with `--only-range-options`.
    pub runs: Vec<BTreeMap<String, Measured>>,
    /// The ways of reading the whole prefix, with `--range-options`.
    pub ranges: Option<Report>,
}

/// One row's medians across runs, or its status.
type Row = Result<BTreeMap<&'static str, f64>, Value>;

impl Scale {
    /// The row keys measured, in table order: the rows of `--bin`, then
    /// those of `--bin-before`.
    fn keys(&self) -> Vec<(String, String)> {
        let before = self
            .runs
            .iter()
            .any(|run| run.keys().any(|k| k.starts_with("before_")));
        let mut keys: Vec<(String, String)> = ROWS
            .iter()
            .map(|(k, l)| (k.to_string(), l.to_string()))
            .collect();
        if before {
            keys.extend(
                ROWS[1..]
                    .iter()
                    .map(|(k, l)| (format!("before_{k}"), format!("{l} (before)"))),
            );
        }
        keys
    }

    /// The medians of `key` across runs; the first status that is not a
    /// figure when a run gave none.
    fn row(&self, key: &str) -> Row {
        let mut values: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for run in &self.runs {
            let Some(measured) = run.get(key) else {
                return Err(json!({"status": "not run"}));
            };
            for (name, value) in measured.figures()? {
                values.entry(name).or_default().push(value);
            }
        }
        Ok(values
            .into_iter()
            .map(|(name, v)| (name, median(&v)))
            .collect())
    }

    /// `row`'s wall and etcd CPU as multiples of etcdctl's.
    fn with_ratios(&self, key: &str) -> Row {
        let mut row = self.row(key)?;
        if key != "etcdctl" {
            if let Ok(etcdctl) = self.row("etcdctl") {
                for (figure, ratio) in [
                    ("wall_s", "wall_vs_etcdctl"),
                    ("etcd_cpu_s", "etcd_cpu_vs_etcdctl"),
                ] {
                    if let (Some(a), Some(b)) = (row.get(figure), etcdctl.get(figure)) {
                        row.insert(ratio, a / b);
                    }
                }
            }
        }
        Ok(row)
    }

    /// The record count's heading, then the consumers' rows (unless none
    /// were run), then the ways of reading the prefix (if measured).
    pub fn table(&self, debounce: &str) -> String {
        let slots = self.records.div_ceil(self.hosts);
        let mut text = format!(
            "\n{} records ({} hosts × up to {slots}), fill {:.1} s, etcd db {:.0} MiB, {} run(s)\n",
            self.records,
            self.hosts,
            self.fill_s,
            self.db_mib,
            self.runs.len(),
        );
        if !self.runs.is_empty() {
            text.push_str(&self.consumers_table(debounce));
        }
        if let Some(ranges) = &self.ranges {
            text.push_str(&ranges.table());
        }
        text
    }

    /// The rows of etcdctl and the consumers, with their legend.
    fn consumers_table(&self, debounce: &str) -> String {
        let mut text = format!(
            "× wall, × CPU: as a multiple of etcdctl's; render daemon (1st): until its first \
             file; p50/p90/max: put → file over {} added containers (default debounce, \
             {debounce} ms); per change (ch): etcd Range requests, etcd CPU\n",
            self.changes,
        );
        text.push_str(&format!(
            "{:<28} {:>9} {:>10} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>10}\n",
            "",
            "wall s",
            "etcd CPU s",
            "RSS MiB",
            "× wall",
            "× CPU",
            "p50 ms",
            "p90 ms",
            "max ms",
            "ranges/ch",
            "CPU ms/ch"
        ));
        for (key, label) in self.keys() {
            let cells = match self.with_ratios(&key) {
                Ok(row) => {
                    let cell = |name: &str, decimals: usize| {
                        row.get(name)
                            .map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
                    };
                    let max = if row.get("unseen").is_some_and(|u| *u > 0.0) {
                        "timeout".to_string()
                    } else {
                        cell("max_ms", 0)
                    };
                    format!(
                        "{:>9} {:>10} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>10}",
                        cell("wall_s", 3),
                        cell("etcd_cpu_s", 3),
                        cell("peak_rss_mib", 1),
                        cell("wall_vs_etcdctl", 2),
                        cell("etcd_cpu_vs_etcdctl", 2),
                        cell("p50_ms", 0),
                        cell("p90_ms", 0),
                        max,
                        cell("ranges_per_change", 1),
                        cell("etcd_cpu_ms_per_change", 1),
                    )
                }
                Err(status) => status["status"].as_str().unwrap_or("?").to_string(),
            };
            text.push_str(&format!("{label:<28} {cells}\n"));
        }
        text
    }

    pub fn json(&self) -> Value {
        let rows: Map<String, Value> = self
            .keys()
            .into_iter()
            .map(|(key, _)| {
                let value = match self.with_ratios(&key) {
                    Ok(row) => {
                        let mut object: Map<String, Value> = row
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), round(v)))
                            .collect();
                        object.insert("status".into(), json!("ok"));
                        Value::Object(object)
                    }
                    Err(status) => status,
                };
                (key, value)
            })
            .collect();
        let mut scale = json!({
            "records": self.records,
            "hosts": self.hosts,
            "fill_s": round(self.fill_s),
            "etcd_db_mib": round(self.db_mib),
        });
        if !self.runs.is_empty() {
            scale["rows"] = Value::Object(rows);
        }
        if let Some(ranges) = &self.ranges {
            scale["range_options"] = ranges.json();
        }
        scale
    }
}

/// Four significant decimals are plenty, and keep the line short.
fn round(value: f64) -> Value {
    json!((value * 1e4).round() / 1e4)
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile of an ascending, non-empty slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
