//! A stopwatch with named laps: where a start's time went (the
//! "authz-agent enforcing" line, e.g. `probe 610 config 2 open 540 setup 90
//! store 30 reconcile 25 attach 2400 serve 60 total 3757`), where the
//! store's load went, and where each submit's went (its phases are logged
//! in microseconds; the benchmark reads them back).
use std::{
    fmt,
    time::{Duration, Instant},
};

/// Durations of the laps of one operation, in order.
#[derive(Debug)]
pub struct Laps {
    last: Instant,
    started: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Laps {
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            last: now,
            started: now,
            laps: Vec::with_capacity(8),
        }
    }

    /// Ends the lap `name` now.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now.duration_since(self.last)));
        self.last = now;
    }

    /// Microseconds of the lap `name` (0 when there was none).
    pub fn micros(&self, name: &str) -> u64 {
        self.laps
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, d)| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// Milliseconds of each lap, then of all: `open 540 attach 2400 total 2940`.
impl fmt::Display for Laps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, d) in &self.laps {
            write!(f, "{name} {} ", d.as_millis())?;
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
        std::thread::sleep(Duration::from_millis(2));
        laps.lap("attach");
        let text = laps.to_string();
        assert!(text.starts_with("open "), "{text}");
        assert!(text.contains(" attach "), "{text}");
        assert!(text.contains(" total "), "{text}");
        assert!(laps.micros("attach") >= 2000, "{text}");
        assert_eq!(laps.micros("none"), 0);
    }
}
