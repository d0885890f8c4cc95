//! Pure: when gathered changes are rendered. The window opens at the first
//! change and is not pushed back by later ones, so a cluster that changes
//! all the time is still rendered at least once per window.

use std::time::Duration;

use tokio::time::Instant;

/// The pending rendering, if any change is waiting for one.
#[derive(Debug, Clone)]
pub struct Debounce {
    /// How long changes are gathered after the first one.
    window: Duration,
    /// When the gathered changes are rendered; `None` while nothing waits.
    due: Option<Instant>,
}

impl Debounce {
    pub fn new(window: Duration) -> Self {
        Self { window, due: None }
    }

    /// A change arrived at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.due.get_or_insert(now + self.window);
    }

    /// When to render; `None` while no change waits.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether to render at `now`; the window closes if so.
    pub fn take_if_due(&mut self, now: Instant) -> bool {
        match self.due {
            Some(due) if due <= now => {
                self.due = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(200);

    #[test]
    fn nothing_is_due_without_a_change() {
        let mut debounce = Debounce::new(WINDOW);
        assert_eq!(debounce.due(), None);
        assert!(!debounce.take_if_due(Instant::now() + WINDOW * 10));
    }

    #[test]
    fn changes_in_one_window_make_one_rendering_at_its_end() {
        let start = Instant::now();
        let mut debounce = Debounce::new(WINDOW);
        debounce.changed(start);
        debounce.changed(start + Duration::from_millis(150));
        assert_eq!(debounce.due(), Some(start + WINDOW));
        assert!(!debounce.take_if_due(start + Duration::from_millis(199)));
        assert!(debounce.take_if_due(start + WINDOW));
        assert!(!debounce.take_if_due(start + WINDOW));
        assert_eq!(debounce.due(), None);
    }

    #[test]
    fn a_steady_stream_of_changes_does_not_postpone_the_rendering() {
        let start = Instant::now();
        let mut debounce = Debounce::new(WINDOW);
        let mut renderings = 0;
        for ms in (0..1000).step_by(10) {
            let now = start + Duration::from_millis(ms);
            debounce.changed(now);
            if debounce.take_if_due(now) {
                renderings += 1;
            }
        }
        assert!(renderings >= 4, "{renderings}");
    }

    #[test]
    fn a_zero_window_renders_at_once() {
        let now = Instant::now();
        let mut debounce = Debounce::new(Duration::ZERO);
        debounce.changed(now);
        assert!(debounce.take_if_due(now));
    }
}
