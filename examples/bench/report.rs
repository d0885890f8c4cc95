//! Figures of one run, their medians across runs, and the two outputs: a
//! readable table (figure, median, per-run values, ratio to the floor,
//! target) and one JSON object on one line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// The figures of one run, by key (`start_p50_ms`...).
#[derive(Debug, Default)]
pub struct Sample(BTreeMap<String, f64>);

impl Sample {
    pub fn set(&mut self, key: impl Into<String>, value: f64) {
        self.0.insert(key.into(), value);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }

    /// `{prefix}_p50_ms`, `_p90_ms`, `_p99_ms` and `_max_ms` of `ms`.
    pub fn set_distribution(&mut self, prefix: &str, ms: &[f64]) {
        let sorted = sorted(ms);
        if sorted.is_empty() {
            return;
        }
        for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)] {
            self.set(format!("{prefix}_{name}_ms"), percentile(&sorted, p));
        }
    }
}

pub fn millis(durations: &[Duration]) -> Vec<f64> {
    durations.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}

/// `values` in ascending order.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile of an ascending, non-empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> Option<f64> {
    let v = sorted(values);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One row of the report.
struct Figure {
    key: &'static str,
    label: &'static str,
    decimals: usize,
    /// Met when the median (for `lost`: every run) is at most this.
    target: Option<(f64, &'static str)>,
    /// The figure is also shown as a multiple of the sum of these medians.
    floor: &'static [&'static str],
    /// ... and as a multiple of this median (the reference registrar's).
    reference: Option<&'static str>,
}

impl Figure {
    const fn new(key: &'static str, label: &'static str, decimals: usize) -> Figure {
        Figure {
            key,
            label,
            decimals,
            target: None,
            floor: &[],
            reference: None,
        }
    }

    const fn target(mut self, at_most: f64, shown: &'static str) -> Figure {
        self.target = Some((at_most, shown));
        self
    }

    const fn floor(mut self, keys: &'static [&'static str]) -> Figure {
        self.floor = keys;
        self
    }

    const fn reference(mut self, key: &'static str) -> Figure {
        self.reference = Some(key);
        self
    }
}

/// The least a start can cost: the engine delivers the event, the container
/// is inspected, its key is put.
const START_FLOOR_P50: &[&str] = &[
    "event_delivery_p50_ms",
    "docker_inspect_p50_ms",
    "etcd_put_p50_ms",
];
const START_FLOOR_P90: &[&str] = &[
    "event_delivery_p90_ms",
    "docker_inspect_p90_ms",
    "etcd_put_p90_ms",
];
/// The least a die can cost: the engine delivers the event, the key is deleted.
const DIE_FLOOR_P50: &[&str] = &["event_delivery_p50_ms", "etcd_put_p50_ms"];
const DIE_FLOOR_P90: &[&str] = &["event_delivery_p90_ms", "etcd_put_p90_ms"];

const SECTIONS: &[(&str, &[Figure])] = &[
    (
        "agent",
        &[
            Figure::new("startup_s", "start-up, all pre-existing registered (s)", 3)
                .target(0.3, "<= 0.3 s"),
            Figure::new("start_p50_ms", "start -> key p50 (ms)", 2)
                .target(3.0, "<= 3 ms")
                .floor(START_FLOOR_P50)
                .reference("ref_start_p50_ms"),
            Figure::new("start_p90_ms", "start -> key p90 (ms)", 2)
                .target(10.0, "<= 10 ms")
                .floor(START_FLOOR_P90)
                .reference("ref_start_p90_ms"),
            Figure::new("start_p99_ms", "start -> key p99 (ms)", 2),
            Figure::new("start_max_ms", "start -> key max (ms)", 2),
            Figure::new("die_p50_ms", "die -> gone p50 (ms)", 2)
                .target(2.0, "<= 2 ms")
                .floor(DIE_FLOOR_P50)
                .reference("ref_die_p50_ms"),
            Figure::new("die_p90_ms", "die -> gone p90 (ms)", 2)
                .target(8.0, "<= 8 ms")
                .floor(DIE_FLOOR_P90)
                .reference("ref_die_p90_ms"),
            Figure::new("die_p99_ms", "die -> gone p99 (ms)", 2),
            Figure::new("die_max_ms", "die -> gone max (ms)", 2),
            Figure::new("lost", "lost (never registered + never removed)", 0)
                .target(0.0, "0, every run"),
            Figure::new("peak_rss_mib", "peak RSS, VmHWM (MiB)", 2).target(8.0, "<= 8 MiB"),
            Figure::new("cpu_s", "CPU, whole run (s)", 2),
            Figure::new("idle_cpu_s", "CPU while idle (s)", 2).target(0.0, "0 (no polling)"),
            Figure::new("agent_warnings", "agent log lines at WARN or ERROR", 0),
        ],
    ),
    (
        "floor (same run, same machine)",
        &[
            Figure::new(
                "event_delivery_p50_ms",
                "engine event -> subscriber p50, burst (ms)",
                2,
            ),
            Figure::new(
                "event_delivery_p90_ms",
                "engine event -> subscriber p90, burst (ms)",
                2,
            ),
            Figure::new(
                "ref_start_p50_ms",
                "reference: start -> key p50, same load (ms)",
                2,
            ),
            Figure::new(
                "ref_start_p90_ms",
                "reference: start -> key p90, same load (ms)",
                2,
            ),
            Figure::new(
                "ref_die_p50_ms",
                "reference: die -> gone p50, same load (ms)",
                2,
            ),
            Figure::new(
                "ref_die_p90_ms",
                "reference: die -> gone p90, same load (ms)",
                2,
            ),
            Figure::new("docker_inspect_p50_ms", "Engine inspect p50, idle (ms)", 2),
            Figure::new("docker_inspect_p90_ms", "Engine inspect p90, idle (ms)", 2),
            Figure::new("etcd_put_p50_ms", "etcd put p50, idle (ms)", 2),
            Figure::new("etcd_put_p90_ms", "etcd put p90, idle (ms)", 2),
        ],
    ),
    (
        "where the time goes",
        &[
            Figure::new("start_events_per_s", "burst: engine start events per s", 1),
            Figure::new(
                "start_q1_p50_ms",
                "start -> key p50, 1st quarter of burst (ms)",
                2,
            ),
            Figure::new("start_q2_p50_ms", "start -> key p50, 2nd quarter (ms)", 2),
            Figure::new("start_q3_p50_ms", "start -> key p50, 3rd quarter (ms)", 2),
            Figure::new("start_q4_p50_ms", "start -> key p50, 4th quarter (ms)", 2),
            Figure::new(
                "ref_inspect_p50_ms",
                "reference: inspect after start p50 (ms)",
                2,
            ),
            Figure::new(
                "ref_inspect_p90_ms",
                "reference: inspect after start p90 (ms)",
                2,
            ),
            Figure::new("ref_put_p50_ms", "reference: put after inspect p50 (ms)", 2),
            Figure::new("ref_put_p90_ms", "reference: put after inspect p90 (ms)", 2),
            Figure::new(
                "start_after_delivery_p50_ms",
                "start: delivered -> key p50 (ms)",
                2,
            ),
            Figure::new(
                "start_keys_per_write",
                "burst starts: keys per etcd revision",
                2,
            ),
            Figure::new("die_events_per_s", "removal: engine die events per s", 1),
            Figure::new("die_q1_p50_ms", "die -> gone p50, 1st quarter (ms)", 2),
            Figure::new("die_q2_p50_ms", "die -> gone p50, 2nd quarter (ms)", 2),
            Figure::new("die_q3_p50_ms", "die -> gone p50, 3rd quarter (ms)", 2),
            Figure::new("die_q4_p50_ms", "die -> gone p50, 4th quarter (ms)", 2),
            Figure::new(
                "die_after_delivery_p50_ms",
                "die: delivered -> gone p50 (ms)",
                2,
            ),
            Figure::new("die_keys_per_write", "removal: keys per etcd revision", 2),
            Figure::new(
                "startup_keys_per_write",
                "start-up: keys per etcd revision",
                2,
            ),
            Figure::new(
                "no_engine_event",
                "burst containers without engine event",
                0,
            ),
        ],
    ),
];

fn figures() -> impl Iterator<Item = &'static Figure> {
    SECTIONS.iter().flat_map(|(_, figures)| figures.iter())
}

/// Machine, versions, date: printed above the table and kept in the JSON.
pub struct Context {
    pub fields: Vec<(&'static str, Value)>,
}

/// The medians of all runs.
pub struct Summary<'a> {
    runs: &'a [Sample],
    medians: BTreeMap<&'static str, f64>,
}

impl<'a> Summary<'a> {
    pub fn new(runs: &'a [Sample]) -> Summary<'a> {
        let medians = figures()
            .filter_map(|f| median(&per_run(runs, f.key)).map(|m| (f.key, m)))
            .collect();
        Summary { runs, medians }
    }

    /// The table, one line per figure.
    pub fn table(&self, context: &Context) -> String {
        let mut out = String::new();
        for (name, value) in &context.fields {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            out += &format!("{name:>14}: {shown}\n");
        }
        for (section, figures) in SECTIONS {
            out += &format!(
                "\n{section:<46} {:>9}  {:<26} {:>7} {:>6}  target\n",
                "median", "per run", "x floor", "x ref"
            );
            for f in figures.iter() {
                out += &self.row(f);
            }
        }
        out
    }

    fn row(&self, f: &Figure) -> String {
        let show = |v: f64| format!("{v:.*}", f.decimals);
        let median = self.medians.get(f.key).map_or("-".into(), |&m| show(m));
        let per_run = self
            .runs
            .iter()
            .map(|r| r.get(f.key).map_or("-".into(), show))
            .collect::<Vec<_>>()
            .join(" ");
        let ratio = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.1}x"));
        let floor = ratio(self.floor_ratio(f));
        let reference = ratio(self.reference_ratio(f));
        let target = f.target.map_or(String::new(), |(_, shown)| {
            format!("{shown:<16} {}", self.verdict(f))
        });
        format!(
            "  {:<44} {median:>9}  {per_run:<26} {floor:>7} {reference:>6}  {target}\n",
            f.label
        )
    }

    fn floor_ratio(&self, f: &Figure) -> Option<f64> {
        if f.floor.is_empty() {
            return None;
        }
        let value = self.medians.get(f.key)?;
        let floor: f64 = f
            .floor
            .iter()
            .map(|k| self.medians.get(k).copied())
            .sum::<Option<f64>>()?;
        (floor > 0.0).then(|| value / floor)
    }

    fn reference_ratio(&self, f: &Figure) -> Option<f64> {
        let value = self.medians.get(f.key)?;
        let reference = self.medians.get(f.reference?)?;
        (*reference > 0.0).then(|| value / reference)
    }

    fn verdict(&self, f: &Figure) -> &'static str {
        let Some((at_most, _)) = f.target else {
            return "";
        };
        let judged = if f.key == "lost" {
            per_run(self.runs, f.key).into_iter().reduce(f64::max)
        } else {
            self.medians.get(f.key).copied()
        };
        match judged {
            Some(v) if v <= at_most => "met",
            Some(_) => "MISSED",
            None => "no data",
        }
    }

    /// One JSON object: the context, then every figure's median (rounded to
    /// microseconds / kilobytes), plus the worst `lost` of any run.
    pub fn json(&self, context: &Context) -> String {
        let mut object = Map::new();
        for (name, value) in &context.fields {
            object.insert((*name).to_string(), value.clone());
        }
        for f in figures() {
            let value = self
                .medians
                .get(f.key)
                .map_or(Value::Null, |&m| json!(round(m)));
            object.insert(f.key.to_string(), value);
        }
        let worst_lost = per_run(self.runs, "lost").into_iter().reduce(f64::max);
        object.insert("lost_max".into(), json!(worst_lost));
        Value::Object(object).to_string()
    }
}

fn per_run(runs: &[Sample], key: &str) -> Vec<f64> {
    runs.iter().filter_map(|r| r.get(key)).collect()
}

fn round(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}
