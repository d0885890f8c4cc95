//! The figures of one run, computed from what the engine's event stream and
//! the independent etcd watch saw: latency distributions, rates, lost
//! containers.

use crate::clock::{ms_between, Seen};
use crate::docker::{EngineEvent, EngineTimes, EventReader};
use crate::etcd::{KeySeen, WatchLog};
use crate::report::{percentile, sorted, Sample};
use crate::run::progress;

/// Lost containers of the burst, and how fast the engine delivered its events.
pub fn burst_figures(
    sample: &mut Sample,
    burst: &[String],
    events: &EventReader,
    watch: &WatchLog,
) {
    let seen: Vec<(EngineTimes, KeySeen)> = burst
        .iter()
        .map(|id| (events.times(id), watch.get(id)))
        .collect();
    let delivered: Vec<f64> = seen
        .iter()
        .flat_map(|(e, _)| [e.start, e.die])
        .flatten()
        .map(|e| ms_between(e.time_ns, e.received_ns))
        .collect();
    sample.set_distribution("event_delivery", &delivered);

    let never_registered = seen.iter().filter(|(_, k)| k.put.is_none()).count();
    let never_removed = seen
        .iter()
        .filter(|(_, k)| k.put.is_some() && k.deleted.is_none())
        .count();
    if never_registered + never_removed > 0 {
        progress(&format!(
            "LOST: {never_registered} never registered, {never_removed} never removed"
        ));
    }
    sample.set("lost", (never_registered + never_removed) as f64);
    let no_event = seen
        .iter()
        .filter(|(e, _)| e.start.is_none() || e.die.is_none())
        .count();
    sample.set("no_engine_event", no_event as f64);
}

/// From `(engine event, watch receipt)` pairs: the latency distribution, the
/// event rate, the p50 of each quarter (in the engine's event order), the
/// p50 of what follows the event's delivery to a subscriber, and how many
/// keys each etcd revision carried.
pub fn latency_figures(sample: &mut Sample, name: &str, mut pairs: Vec<(EngineEvent, Seen)>) {
    if pairs.is_empty() {
        return;
    }
    pairs.sort_by_key(|(event, _)| event.time_ns);
    let ms: Vec<f64> = pairs
        .iter()
        .map(|(event, seen)| ms_between(event.time_ns, seen.wall_ns))
        .collect();
    sample.set_distribution(name, &ms);
    let span_ms = ms_between(pairs[0].0.time_ns, pairs[pairs.len() - 1].0.time_ns);
    if span_ms > 0.0 {
        sample.set(
            format!("{name}_events_per_s"),
            (pairs.len() - 1) as f64 / span_ms * 1e3,
        );
    }
    for (q, quarter) in ms.chunks(ms.len().div_ceil(4)).enumerate() {
        sample.set(
            format!("{name}_q{}_p50_ms", q + 1),
            percentile(&sorted(quarter), 50.0),
        );
    }
    let after: Vec<f64> = pairs
        .iter()
        .map(|(event, seen)| ms_between(event.received_ns, seen.wall_ns))
        .collect();
    sample.set(
        format!("{name}_after_delivery_p50_ms"),
        percentile(&sorted(&after), 50.0),
    );
    let revisions = pairs.iter().map(|(_, seen)| seen.revision);
    sample.set(
        format!("{name}_keys_per_write"),
        keys_per_revision(revisions),
    );
}

/// Keys per distinct etcd revision: 1 when every key had its own write, the
/// batch size when several went in one transaction.
pub fn keys_per_revision(revisions: impl Iterator<Item = i64>) -> f64 {
    let all: Vec<i64> = revisions.collect();
    let mut distinct = all.clone();
    distinct.sort_unstable();
    distinct.dedup();
    all.len() as f64 / distinct.len().max(1) as f64
}
