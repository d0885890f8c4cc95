//! Supervision of the loop's dependencies: when to try again after a failure
//! ([`Retry`]), whether a dependency is down ([`Health`]), and how often a
//! record that someone else keeps changing is repaired ([`RepairBudget`]).

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// When to try a failed repair again: capped exponential backoff with jitter
/// (100 ms doubling to 2.5 s, plus up to as much again: never above 5 s).
pub struct Retry {
    /// The delays still to come; restarts from the shortest after a success.
    delays: ExponentialBackoff,
    /// When the next attempt is due; `None`: no attempt is pending.
    at: Option<Instant>,
    /// Seeds the jitter, so that a simulated run is reproducible; `None`:
    /// random.
    jitter_seed: Option<u64>,
}

impl Retry {
    pub fn new(jitter_seed: Option<u64>) -> Self {
        Self {
            delays: Self::builder(jitter_seed).build(),
            at: None,
            jitter_seed,
        }
    }

    fn builder(jitter_seed: Option<u64>) -> ExponentialBuilder {
        let builder = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(2500))
            .with_jitter()
            .without_max_times();
        match jitter_seed {
            Some(seed) => builder.with_jitter_seed(seed),
            None => builder,
        }
    }

    pub fn schedule(&mut self) {
        let delay = self.delays.next().unwrap_or(Duration::from_secs(5));
        self.at = Some(Instant::now() + delay);
    }

    /// Holds the next attempt back until `at` at the earliest.
    pub fn defer_until(&mut self, at: Instant) {
        self.at = Some(self.at.map_or(at, |scheduled| scheduled.max(at)));
    }

    /// When the next attempt is due, if one is scheduled.
    pub fn at(&self) -> Option<Instant> {
        self.at
    }

    pub fn is_scheduled(&self) -> bool {
        self.at.is_some()
    }

    pub fn clear(&mut self) {
        self.at = None;
    }

    pub fn reset(&mut self) {
        self.delays = Self::builder(self.jitter_seed).build();
        self.at = None;
    }
}

/// Whether a dependency is reachable, so that an outage is one warning when
/// it starts and one info line when it ends, not a line per retry. A single
/// failure that the first retry heals (a request that hit the one dead member
/// of a healthy cluster) is no outage: it is logged at debug only.
pub struct Health {
    /// `docker` or `etcd`: the label of its log lines and metrics.
    pub dependency: &'static str,
    /// Consecutive failures; 0 while the dependency answers.
    failures: u32,
    /// Why the last attempt failed, for `--once`, which has no retry to log it.
    pub last_error: Option<String>,
    /// When the current run of failures began, to say how long it lasted.
    down_since: Option<Instant>,
    /// Reachable: answered last time, or failed fewer than
    /// [`Health::OUTAGE`] times in a row since. `false` until it first
    /// answers.
    up: bool,
    /// Where `connected{dependency}` is reported.
    metrics: Arc<Metrics>,
}

impl Health {
    /// Failures in a row that make an outage.
    const OUTAGE: u32 = 2;

    pub fn new(dependency: &'static str, metrics: Arc<Metrics>) -> Self {
        Self {
            dependency,
            failures: 0,
            last_error: None,
            down_since: None,
            up: false,
            metrics,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error.to_string());
        let since = *self.down_since.get_or_insert_with(Instant::now);
        if self.failures == Self::OUTAGE {
            self.up = false;
            self.metrics.set_connected(self.dependency, false);
            warn!(
                dependency = self.dependency,
                error = %error,
                failing_secs = since.elapsed().as_secs_f64(),
                "dependency unavailable; retrying"
            );
        } else {
            debug!(dependency = self.dependency, error = %error, "request failed; retrying");
        }
    }

    pub fn recovered(&mut self) {
        self.up = true;
        self.metrics.set_connected(self.dependency, true);
        let failures = std::mem::take(&mut self.failures);
        self.last_error = None;
        if let Some(since) = self.down_since.take() {
            let down_secs = since.elapsed().as_secs_f64();
            if failures >= Self::OUTAGE {
                info!(dependency = self.dependency, down_secs, "dependency back");
            } else {
                debug!(
                    dependency = self.dependency,
                    down_secs, "recovered at the first retry"
                );
            }
        }
    }
}

/// How often foreign changes under our prefix are repaired. A change someone
/// else made (an operator, a script, an agent of an older version for the same
/// host) is repaired at once; one that keeps coming back is repaired with a
/// growing delay, so that two writers never fight in a write storm that fills
/// etcd's space quota for the whole cluster.
pub struct RepairBudget {
    /// Repairs of foreign changes in a row, none of them after a quiet spell.
    in_a_row: u32,
    /// The delays after the free repairs; start over after a quiet spell.
    delays: ExponentialBackoff,
    /// When the last of them ran.
    last: Option<Instant>,
}

impl Default for RepairBudget {
    fn default() -> Self {
        Self {
            in_a_row: 0,
            delays: Self::delays(),
            last: None,
        }
    }
}

impl RepairBudget {
    /// Repairs in a row that run at once.
    const FREE: u32 = 3;
    /// The first delay after the free repairs; it doubles from there.
    const FIRST_DELAY: Duration = Duration::from_millis(200);
    /// The longest delay between two repairs of foreign changes.
    pub const MAX_DELAY: Duration = Duration::from_secs(10);
    /// A spell without foreign changes this long ends a storm.
    const QUIET: Duration = Duration::from_secs(30);

    /// The delay before the next repair of a foreign change seen at `now`,
    /// counting that repair.
    pub fn next_repair(&mut self, now: Instant) -> Duration {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) >= Self::QUIET)
        {
            self.in_a_row = 0;
            self.delays = Self::delays();
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        let delay = if self.in_a_row <= Self::FREE {
            Duration::ZERO
        } else {
            self.delays.next().unwrap_or(Self::MAX_DELAY)
        };
        self.last = Some(now + delay);
        delay
    }

    fn delays() -> ExponentialBackoff {
        doubling(Self::FIRST_DELAY, Self::MAX_DELAY)
    }
}

/// Delays that start at `first` and double up to `max`, without end and
/// without jitter: for waits of one agent's own that need no spreading
/// across agents (its repairs, its retries of one container).
pub fn doubling(first: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(max)
        .without_max_times()
        .build()
}

/// Sleeps until `at`; forever when there is nothing to wait for (a branch
/// of a `select!` that never fires).
pub async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_repairs_run_at_once_then_back_off_to_a_cap() {
        let mut budget = RepairBudget::default();
        let start = Instant::now();
        let delays: Vec<u64> = (0..12)
            .map(|i| {
                budget
                    .next_repair(start + Duration::from_millis(i * 10))
                    .as_millis() as u64
            })
            .collect();
        assert_eq!(
            delays,
            [0, 0, 0, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
    }

    #[test]
    fn a_quiet_spell_ends_the_storm() {
        let mut budget = RepairBudget::default();
        let start = Instant::now();
        for i in 0..6 {
            budget.next_repair(start + Duration::from_millis(i));
        }
        let later = start + Duration::from_secs(60);
        assert_eq!(budget.next_repair(later), Duration::ZERO);
    }

    #[test]
    fn the_delay_stays_at_its_cap() {
        let mut delays = doubling(Duration::from_secs(1), Duration::from_secs(30));
        let last = delays.by_ref().take(100).last();
        assert_eq!(last, Some(Duration::from_secs(30)));
    }
}
