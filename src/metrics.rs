//! Prometheus metrics and the health endpoint (`--metrics-addr`).
//!
//! The agent loop updates the metrics (counters and gauges are atomics; a
//! labelled family takes its read lock only to find the series, and holds
//! no lock of ours) and publishes its [`Status`]; a small HTTP server task
//! renders the metrics on `/metrics` and answers `/healthz` from the status.
//! `render` serves its own metrics through the same server
//! (`render::RenderMetrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tracing::warn;

use crate::container::Withheld;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabel {
    field: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: &'static str,
}

/// Who is in a conflict over this host: our engine and the holder's (both
/// checked identities: `engine::EngineIdentity`) and the holder's host
/// name (from its lock key: at most 255 characters, anyone's to write, and
/// the text encoder escapes it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConflictLabel {
    engine: String,
    holder_engine: String,
    holder_hostname: String,
}

/// Everything the agent reports.
pub struct Metrics {
    registry: Registry,
    records: Gauge,
    withheld: Family<ReasonLabel, Gauge>,
    docker_events: Family<ActionLabel, Counter>,
    etcd_operations: Family<OperationLabel, Counter>,
    etcd_errors: Counter,
    /// Records removed when a container was asked to stop, before it did.
    drains: Counter,
    /// Container inputs the record could not carry, by field.
    rejected_inputs: Family<FieldLabel, Counter>,
    reconciles: Counter,
    reconcile_failures: Counter,
    reconcile_duration: Histogram,
    seconds_since_reconcile: Gauge<f64, AtomicU64>,
    connected: Family<DependencyLabel, Gauge>,
    /// 1 while this agent holds its host's lock (and so writes its records).
    host_lock_held: Gauge,
    /// 1 for the holder this agent is in conflict with (another engine).
    host_conflict: Family<ConflictLabel, Gauge>,
    /// Repairs of records another writer changed or deleted: a storm of
    /// them is a second writer fighting this agent.
    repairs: Counter,
    /// When the metrics were made: the origin of `last_reconcile_ms`.
    started: Instant,
    /// Milliseconds from `started` to the end of the last successful
    /// reconcile, plus one; 0 before the first (an atomic, so that the
    /// loop and the scrape share no lock).
    last_reconcile_ms: AtomicU64,
}

/// What `/healthz` answers: the agent loop's own view of itself, which it
/// publishes after every turn (a `watch` channel to the server task).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// The engine answers.
    pub docker_connected: bool,
    /// etcd answers.
    pub etcd_connected: bool,
    /// The last full reconcile succeeded.
    pub reconciled: bool,
    /// Another agent holds this host: this one keeps nothing in etcd.
    pub standby: bool,
    /// An agent of another engine holds this host: two engines claim one
    /// host IP, and this one writes nothing.
    pub conflict: bool,
}

impl Status {
    /// Docker and etcd reachable, the last reconcile good, not standing by.
    pub fn healthy(&self) -> bool {
        !self.standby
            && !self.conflict
            && self.reconciled
            && self.docker_connected
            && self.etcd_connected
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("docker_etcd_register");
        let records = Gauge::default();
        registry.register(
            "records",
            "Records this agent currently holds in etcd",
            records.clone(),
        );
        let withheld = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "withheld_records",
            "Containers publishing ports that are not registered because of their health (--require-healthy), by reason",
            withheld.clone(),
        );
        for reason in Withheld::ALL {
            withheld
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .set(0);
        }
        let docker_events = Family::<ActionLabel, Counter>::default();
        registry.register(
            "docker_events",
            "Docker container events handled, by action",
            docker_events.clone(),
        );
        let etcd_operations = Family::<OperationLabel, Counter>::default();
        registry.register(
            "etcd_operations",
            "Writes and deletes etcd confirmed, by operation",
            etcd_operations.clone(),
        );
        let etcd_errors = Counter::default();
        registry.register(
            "etcd_errors",
            "etcd requests that failed or were refused",
            etcd_errors.clone(),
        );
        let drains = Counter::default();
        registry.register(
            "drains",
            "Records removed when their container was asked to stop, before it stopped",
            drains.clone(),
        );
        let rejected_inputs = Family::<FieldLabel, Counter>::default();
        registry.register(
            "rejected_inputs",
            "Labels, images and port bindings of containers that their records cannot carry, by field (docs/security.md \"Trust boundary\")",
            rejected_inputs.clone(),
        );
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "Completed full reconciles",
            reconciles.clone(),
        );
        let reconcile_failures = Counter::default();
        registry.register(
            "reconcile_failures",
            "Full reconciles that failed and will be retried",
            reconcile_failures.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of completed full reconciles",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let seconds_since_reconcile = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "since_last_reconcile",
            "Time since the last successful full reconcile (-1: none yet)",
            Unit::Seconds,
            seconds_since_reconcile.clone(),
        );
        let connected = Family::<DependencyLabel, Gauge>::default();
        registry.register(
            "connected",
            "1 while the dependency (docker, etcd) is reachable, else 0",
            connected.clone(),
        );
        for dependency in ["docker", "etcd"] {
            connected
                .get_or_create(&DependencyLabel { dependency })
                .set(0);
        }
        let host_lock_held = Gauge::default();
        registry.register(
            "host_lock_held",
            "1 while this agent holds its host's lock and keeps the host's records; 0 while it waits or stands by",
            host_lock_held.clone(),
        );
        let host_conflict = Family::<ConflictLabel, Gauge>::default();
        registry.register(
            "host_conflict",
            "1 while an agent following another engine holds this host (two engines claim one host IP): this agent writes nothing",
            host_conflict.clone(),
        );
        let repairs = Counter::default();
        registry.register(
            "repairs",
            "Repairs of records that another writer changed or deleted",
            repairs.clone(),
        );
        Arc::new(Self {
            repairs,
            started: Instant::now(),
            last_reconcile_ms: AtomicU64::new(0),
            host_lock_held,
            host_conflict,
            registry,
            records,
            withheld,
            docker_events,
            etcd_operations,
            etcd_errors,
            drains,
            rejected_inputs,
            reconciles,
            reconcile_failures,
            reconcile_duration,
            seconds_since_reconcile,
            connected,
        })
    }

    pub fn set_records(&self, count: usize) {
        self.records.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The containers currently withheld, with their reasons.
    pub fn set_withheld<'a>(&self, withheld: impl Iterator<Item = &'a Withheld> + Clone) {
        for reason in Withheld::ALL {
            let count = withheld.clone().filter(|r| **r == reason).count();
            self.withheld
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn docker_event(&self, action: &'static str) {
        self.docker_events
            .get_or_create(&ActionLabel { action })
            .inc();
    }

    pub fn etcd_operation(&self, operation: &'static str) {
        self.etcd_operations
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    pub fn etcd_error(&self) {
        self.etcd_errors.inc();
    }

    pub fn set_connected(&self, dependency: &'static str, connected: bool) {
        self.connected
            .get_or_create(&DependencyLabel { dependency })
            .set(i64::from(connected));
    }

    /// Whether this agent holds its host's lock.
    pub fn set_host_lock_held(&self, held: bool) {
        self.host_lock_held.set(i64::from(held));
    }

    /// No conflict (any more), until the next `set_host_conflict`.
    pub fn clear_host_conflict(&self) {
        self.host_conflict.clear();
    }

    /// An agent of `holder_engine` on `holder_hostname` holds this host.
    pub fn set_host_conflict(&self, engine: &str, holder_engine: &str, holder_hostname: &str) {
        let label = ConflictLabel {
            engine: engine.to_owned(),
            holder_engine: holder_engine.to_owned(),
            holder_hostname: holder_hostname.to_owned(),
        };
        self.host_conflict.get_or_create(&label).set(1);
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        let since_start = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_reconcile_ms
            .store(since_start.saturating_add(1), Ordering::Relaxed);
    }

    /// A repair of records that another writer changed is on its way.
    pub fn repairing(&self) {
        self.repairs.inc();
    }

    pub fn drained(&self) {
        self.drains.inc();
    }

    pub fn rejected_input(&self, field: &'static str) {
        self.rejected_inputs
            .get_or_create(&FieldLabel { field })
            .inc();
    }

    pub fn reconcile_failed(&self) {
        self.reconcile_failures.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let since = match self.last_reconcile_ms.load(Ordering::Relaxed) {
            0 => -1.0,
            plus_one => {
                let at = Duration::from_millis(plus_one - 1);
                self.started.elapsed().saturating_sub(at).as_secs_f64()
            }
        };
        self.seconds_since_reconcile.set(since);
        encode(&self.registry)
    }
}

/// The Prometheus text exposition of `registry` (the agent's or
/// `render`'s); what was encoded, with a WARN, if the rest cannot be.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        warn!(error = %error, "cannot encode metrics");
    }
    text
}

mod server;

pub use server::{spawn, Exporter};

/// The agent's `/metrics` and `/healthz`: its metrics, and the status its
/// loop publishes after every turn.
pub struct AgentExporter {
    pub metrics: Arc<Metrics>,
    pub status: tokio::sync::watch::Receiver<Status>,
}

impl Exporter for AgentExporter {
    fn metrics(&self) -> String {
        self.metrics.render()
    }

    fn health(&self) -> Result<(), &'static str> {
        let status = *self.status.borrow();
        if status.healthy() {
            Ok(())
        } else if status.conflict {
            Err("conflict: an agent following another engine holds this host")
        } else if status.standby {
            Err("standby: another agent holds this host")
        } else {
            Err("unhealthy: Docker or etcd unreachable, or the last reconcile failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.docker_event("start");
        metrics.etcd_operation("put");
        metrics.reconciled(Duration::from_millis(3));
        metrics.set_withheld([Withheld::Starting].iter());
        let text = metrics.render();
        for name in [
            "docker_etcd_register_records ",
            "docker_etcd_register_docker_events_total{action=\"start\"} 1",
            "docker_etcd_register_etcd_operations_total{operation=\"put\"} 1",
            "docker_etcd_register_etcd_errors_total 0",
            "docker_etcd_register_reconciles_total 1",
            "docker_etcd_register_reconcile_duration_seconds_count 1",
            "docker_etcd_register_since_last_reconcile_seconds ",
            "docker_etcd_register_connected{dependency=\"docker\"} 0",
            "docker_etcd_register_withheld_records{reason=\"starting\"} 1",
            "docker_etcd_register_withheld_records{reason=\"unhealthy\"} 0",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }

    #[test]
    fn healthy_needs_both_dependencies_a_good_reconcile_and_the_host() {
        let good = Status {
            docker_connected: true,
            etcd_connected: true,
            reconciled: true,
            standby: false,
            conflict: false,
        };
        assert!(good.healthy());
        assert!(!Status::default().healthy());
        for bad in [
            Status {
                docker_connected: false,
                ..good
            },
            Status {
                etcd_connected: false,
                ..good
            },
            Status {
                reconciled: false,
                ..good
            },
            Status {
                standby: true,
                ..good
            },
            Status {
                conflict: true,
                ..good
            },
        ] {
            assert!(!bad.healthy(), "{bad:?}");
        }
    }
}
