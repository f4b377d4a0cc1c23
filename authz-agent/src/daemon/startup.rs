//! Where a start's time went, for the "authz-agent enforcing" line: an
//! operator waiting on a restart (and the benchmark) sees which phase to
//! blame, e.g. `probe 610 config 2 open 540 setup 90 store 30 reconcile 25
//! attach 2400 serve 60 total 3757`.
use std::{fmt, time::Instant};

/// Durations of the phases of one start, in order.
#[derive(Debug)]
pub struct Laps {
    last: Instant,
    started: Instant,
    laps: Vec<(&'static str, u128)>,
}

impl Laps {
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            last: now,
            started: now,
            laps: Vec::new(),
        }
    }

    /// Ends the phase `name` now.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps
            .push((name, now.duration_since(self.last).as_millis()));
        self.last = now;
    }
}

impl fmt::Display for Laps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, ms) in &self.laps {
            write!(f, "{name} {ms} ")?;
        }
        write!(
            f,
            "total {}",
            self.last.duration_since(self.started).as_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_listed_in_order_with_the_total() {
        let mut laps = Laps::start();
        laps.lap("open");
        laps.lap("attach");
        let text = laps.to_string();
        assert!(text.starts_with("open "), "{text}");
        assert!(text.contains(" attach "), "{text}");
        assert!(text.contains(" total "), "{text}");
    }
}
