//! `render`'s own metrics and health (`render --metrics-addr`), served by
//! the agent's metrics server (`metrics::spawn`): whether the files hold
//! the latest rendering, what held one back, and whether etcd is followed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::Exporter;

/// Where a rendering was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A template failed on these records.
    Template,
    /// A file could not be written (a full disk, a missing directory).
    Write,
    /// `--check` refused a file.
    Check,
    /// `--reload` failed.
    Reload,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Template, Stage::Write, Stage::Check, Stage::Reload];

    fn as_str(self) -> &'static str {
        match self {
            Stage::Template => "template",
            Stage::Write => "write",
            Stage::Check => "check",
            Stage::Reload => "reload",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// Everything `render` reports.
pub struct RenderMetrics {
    registry: Registry,
    /// Renderings of the templates, published or not.
    renderings: Counter,
    /// Renderings (or their reloads) held back, by stage.
    failures: Family<StageLabel, Counter>,
    /// 1 while every file holds the latest rendering and the reload after
    /// it succeeded; what an alert waits on.
    up_to_date: Gauge,
    /// 1 while etcd's watch is followed; 0 while the records are read
    /// again from scratch, e.g. because etcd is unreachable.
    etcd_watching: Gauge,
    /// Keys under the root that are not records (docs/security.md "Trust boundary").
    skipped_keys: Gauge,
}

impl RenderMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("docker_etcd_register_render");
        let renderings = Counter::default();
        registry.register(
            "renderings",
            "Renderings of the templates, published or not",
            renderings.clone(),
        );
        let failures = Family::<StageLabel, Counter>::default();
        registry.register(
            "failures",
            "Renderings or reloads held back, by stage (template, write, check, reload)",
            failures.clone(),
        );
        for stage in Stage::ALL {
            // Every stage exported from the start, at 0.
            let _series = failures.get_or_create(&StageLabel {
                stage: stage.as_str(),
            });
        }
        let up_to_date = Gauge::default();
        registry.register(
            "up_to_date",
            "1 while every file holds the latest rendering and its reload succeeded, else 0",
            up_to_date.clone(),
        );
        let etcd_watching = Gauge::default();
        registry.register(
            "etcd_watching",
            "1 while etcd's watch of the records is followed, 0 while they are read again or etcd is unreachable",
            etcd_watching.clone(),
        );
        let skipped_keys = Gauge::default();
        registry.register(
            "skipped_keys",
            "Keys under the root that are not records and are skipped",
            skipped_keys.clone(),
        );
        Self {
            registry,
            renderings,
            failures,
            up_to_date,
            etcd_watching,
            skipped_keys,
        }
    }

    pub fn rendering(&self) {
        self.renderings.inc();
    }

    pub fn failed(&self, stage: Stage) {
        self.failures
            .get_or_create(&StageLabel {
                stage: stage.as_str(),
            })
            .inc();
    }

    pub fn set_up_to_date(&self, up_to_date: bool) {
        self.up_to_date.set(i64::from(up_to_date));
    }

    pub fn set_etcd_watching(&self, watching: bool) {
        self.etcd_watching.set(i64::from(watching));
    }

    pub fn set_skipped_keys(&self, count: usize) {
        self.skipped_keys
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

impl Default for RenderMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Exporter for RenderMetrics {
    fn metrics(&self) -> String {
        crate::metrics::encode(&self.registry)
    }

    fn health(&self) -> Result<(), &'static str> {
        if self.etcd_watching.get() != 1 {
            Err("unhealthy: not following etcd (unreachable, or reading the records again)")
        } else if self.up_to_date.get() != 1 {
            Err("unhealthy: a file or its reload is held back (see the log)")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_exported_from_the_start_and_health_follows_the_gauges() {
        let metrics = RenderMetrics::new();
        metrics.failed(Stage::Check);
        let text = metrics.metrics();
        for line in [
            "docker_etcd_register_render_renderings_total 0",
            "docker_etcd_register_render_failures_total{stage=\"template\"} 0",
            "docker_etcd_register_render_failures_total{stage=\"check\"} 1",
            "docker_etcd_register_render_up_to_date 0",
            "docker_etcd_register_render_etcd_watching 0",
            "docker_etcd_register_render_skipped_keys 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(metrics.health().is_err());
        metrics.set_etcd_watching(true);
        assert!(metrics.health().is_err());
        metrics.set_up_to_date(true);
        assert_eq!(metrics.health(), Ok(()));
    }
}
