//! The figures of a run and their two outputs: a table (per proxy, each
//! stage after `docker run` returned, what each step adds, the failed
//! requests) and one JSON object on the last line of stdout.

use serde_json::{json, Map, Value};

use crate::proxy::{Kind, Proxy, Takes};
use crate::stages::StartTimes;
use crate::Options;

/// The requests of one proxy's client during the rolling replacements.
#[derive(Debug, Clone, Copy)]
pub struct Failures {
    pub requests: usize,
    pub failed: usize,
}

/// p50, p90 and max of a distribution, in ms.
#[derive(Debug, Clone, Copy)]
struct Spread {
    p50: f64,
    p90: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut sorted: Vec<f64> = values.into_iter().collect();
        sorted.sort_by(f64::total_cmp);
        Spread {
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            max: percentile(&sorted, 100.0),
        }
    }

    fn row(&self, label: &str) -> String {
        format!(
            "{label:<46}{:>9.1}{:>9.1}{:>9.1}",
            self.p50, self.p90, self.max
        )
    }

    fn insert(&self, json: &mut Map<String, Value>, name: &str) {
        json.insert(format!("{name}_p50_ms"), round(self.p50));
        json.insert(format!("{name}_p90_ms"), round(self.p90));
        json.insert(format!("{name}_max_ms"), round(self.max));
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(ms: f64) -> Value {
    json!((ms * 100.0).round() / 100.0)
}

/// One proxy's figures.
struct ProxyFigures {
    kind: Kind,
    debounce_ms: u64,
    /// `docker run` returned → its file held the backend.
    file: Spread,
    /// `docker run` returned → the backend served a request through it.
    served: Spread,
    /// Record in etcd → file (`render`: its debounce, the rendering, the
    /// check), each start's own difference.
    render: Spread,
    /// File → served (the proxy noticing and applying the file).
    apply: Spread,
    failures: Failures,
}

pub struct Figures {
    starts: usize,
    /// `docker run` returned → the record in etcd.
    record: Spread,
    proxies: Vec<ProxyFigures>,
}

impl Figures {
    pub fn new(proxies: &[Proxy], starts: &[StartTimes], failures: &[Failures]) -> Figures {
        let proxies = proxies
            .iter()
            .zip(failures)
            .enumerate()
            .map(|(i, (proxy, failures))| ProxyFigures {
                kind: proxy.kind,
                debounce_ms: proxy.debounce_ms,
                file: Spread::of(starts.iter().map(|s| s.file_ms[i])),
                served: Spread::of(starts.iter().map(|s| s.served_ms[i])),
                render: Spread::of(starts.iter().map(|s| s.file_ms[i] - s.record_ms)),
                apply: Spread::of(starts.iter().map(|s| s.served_ms[i] - s.file_ms[i])),
                failures: *failures,
            })
            .collect();
        Figures {
            starts: starts.len(),
            record: Spread::of(starts.iter().map(|s| s.record_ms)),
            proxies,
        }
    }

    pub fn print(&self, options: &Options) {
        let debounces: Vec<String> = self
            .proxies
            .iter()
            .map(|p| {
                format!(
                    "{} {} ms ({})",
                    p.kind.name(),
                    p.debounce_ms,
                    p.kind.takes().describe()
                )
            })
            .collect();
        println!("render --debounce: {}", debounces.join(", "));
        println!();
        let header = format!("docker run returned → (ms, {} starts)", self.starts);
        println!("{header:<46}{:>9}{:>9}{:>9}", "p50", "p90", "max");
        println!(
            "{}",
            self.record.row("record in etcd (the agent; one for all)")
        );
        for p in &self.proxies {
            let name = p.kind.name();
            println!(
                "{}",
                p.file.row(&format!("{name:<9}file holds the backend"))
            );
            println!(
                "{}",
                p.served.row(&format!("{:<9}first request served", ""))
            );
        }
        println!();
        println!(
            "{:<46}{:>9}{:>9}{:>9}",
            "each step alone (ms)", "p50", "p90", "max"
        );
        for p in &self.proxies {
            let name = p.kind.name();
            let render = format!("{name:<9}record → file (render)");
            println!("{}", p.render.row(&render));
            let apply = match p.kind.takes() {
                Takes::Reload => "file → served (reload)",
                Takes::InProcess => "file → served (its watch)",
            };
            println!("{}", p.apply.row(&format!("{:<9}{apply}", "")));
        }
        println!();
        println!(
            "failed requests during {} rolling replacements (haproxy in {} mode):",
            options.replacements, options.haproxy_mode
        );
        for p in &self.proxies {
            println!(
                "  {:<9}{} of {}",
                p.kind.name(),
                p.failures.failed,
                p.failures.requests
            );
        }
        println!("{}", self.json(options));
    }

    fn json(&self, options: &Options) -> Value {
        let mut top = Map::new();
        top.insert("starts".into(), json!(self.starts));
        top.insert("replacements".into(), json!(options.replacements));
        top.insert("haproxy_mode".into(), json!(options.haproxy_mode));
        self.record.insert(&mut top, "record");
        let mut proxies = Map::new();
        for p in &self.proxies {
            let mut one = Map::new();
            one.insert("debounce_ms".into(), json!(p.debounce_ms));
            one.insert("takes".into(), json!(p.kind.takes().describe()));
            p.file.insert(&mut one, "file");
            p.served.insert(&mut one, "served");
            p.render.insert(&mut one, "render");
            p.apply.insert(&mut one, "apply");
            one.insert("requests".into(), json!(p.failures.requests));
            one.insert("failed_requests".into(), json!(p.failures.failed));
            proxies.insert(p.kind.name().into(), Value::Object(one));
        }
        top.insert("proxies".into(), Value::Object(proxies));
        Value::Object(top)
    }
}
