//! Drain before stop (docs/behaviour.md: "Drain before stop"): a container sent its
//! stop signal keeps running while it shuts down, up to its stop timeout,
//! and should receive no new requests meanwhile. Its record goes at the
//! signal; whatever the engine says of it until it dies counts as "no
//! record", unless it is still running well after its stop timeout (it
//! survived the signal), when it gets its record back.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::container::{Container, StopTimeout};

/// How long after its stop timeout a container that survived its stop
/// signal is registered again: `docker stop` kills it at the timeout, and
/// its `die` normally follows within moments.
pub(super) const SURVIVAL_GRACE: Duration = Duration::from_secs(5);

/// The containers draining, each until when.
#[derive(Debug, Default)]
pub(super) struct Drains {
    /// Container id → when it is registered again if still running; `None`:
    /// not before it stops (its stop waits for ever, or its owner's timeout
    /// lies beyond any instant the clock can hold).
    until: BTreeMap<String, Option<Instant>>,
}

impl Drains {
    /// `container` was sent `signal`: whether it starts draining now.
    pub(super) fn signalled(&mut self, container: &Container, signal: i32, now: Instant) -> bool {
        if !container.running || !container.drains_on(signal) {
            return false;
        }
        let until = match container.stop_timeout {
            StopTimeout::After(timeout) => timeout
                .checked_add(SURVIVAL_GRACE)
                .and_then(|wait| now.checked_add(wait)),
            StopTimeout::Never => None,
        };
        self.until.insert(container.id.clone(), until);
        true
    }

    pub(super) fn is_draining(&self, id: &str) -> bool {
        self.until.contains_key(id)
    }

    /// It stopped, or started again: the drain is over.
    pub(super) fn end(&mut self, id: &str) {
        self.until.remove(id);
    }

    /// When the next drain runs out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.until.values().flatten().min().copied()
    }

    /// The containers whose drain ran out by `now`: they survived their
    /// stop signal. They drain no more.
    pub(super) fn take_expired(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .until
            .iter()
            .filter(|(_, until)| until.is_some_and(|until| until <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.until.remove(id);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(id: &str) -> Container {
        Container {
            id: id.to_owned(),
            running: true,
            stop_timeout: StopTimeout::After(Duration::from_secs(30)),
            ..Container::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_signal_drains_until_the_stop_timeout_and_a_grace() {
        let mut drains = Drains::default();
        let now = Instant::now();
        assert!(!drains.signalled(&running("a"), 1, now), "SIGHUP: a reload");
        assert!(drains.signalled(&running("a"), 15, now));
        assert!(drains.is_draining("a"));
        let until = now + Duration::from_secs(30) + SURVIVAL_GRACE;
        assert_eq!(drains.next_deadline(), Some(until));
        assert!(drains
            .take_expired(until - Duration::from_millis(1))
            .is_empty());
        assert_eq!(drains.take_expired(until), ["a"]);
        assert!(!drains.is_draining("a"));
        assert_eq!(drains.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_that_waits_for_ever_or_beyond_the_clock_drains_until_the_container_stops() {
        let mut drains = Drains::default();
        let now = Instant::now();
        let forever = Container {
            stop_timeout: StopTimeout::Never,
            ..running("a")
        };
        let beyond = Container {
            stop_timeout: StopTimeout::After(Duration::from_secs(u64::MAX)),
            ..running("b")
        };
        assert!(drains.signalled(&forever, 15, now));
        assert!(drains.signalled(&beyond, 15, now));
        assert_eq!(drains.next_deadline(), None);
        assert!(drains
            .take_expired(now + Duration::from_secs(86_400 * 365))
            .is_empty());
        assert!(drains.is_draining("a") && drains.is_draining("b"));
        drains.end("a");
        assert!(!drains.is_draining("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_container_does_not_drain_and_an_end_ends_it() {
        let mut drains = Drains::default();
        let now = Instant::now();
        let stopped = Container {
            running: false,
            ..running("b")
        };
        assert!(!drains.signalled(&stopped, 9, now));
        assert!(drains.signalled(&running("b"), 9, now));
        drains.end("b");
        assert!(!drains.is_draining("b"));
    }
}
