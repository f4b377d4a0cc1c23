//! Which kernel decisions the log holds, by the kernel's own sequence number.
//!
//! The kernel numbers every event it puts on the ring (`ExecEvent::seq`, one
//! counter per epoch of the pinned maps). The log records each event's number,
//! so after any crash the agent knows exactly which decisions never reached the
//! log: the ones it took off the ring but had not written when it died. Those
//! get an explicit `events-missing` record, with the time span they fall in.
//! (Events the kernel could not queue at all, ring full, are counted by the
//! kernel and reported as `events-dropped`; they never get a number.)
//!
//! Numbers are taken after the ring slot is reserved, so two CPUs can queue
//! them slightly out of order: a hole is declared missing only when it stays
//! open for [`GAP_GRACE`] after a later number arrived.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// How long a hole in the numbers may stay open before it is reported.
pub const GAP_GRACE: Duration = Duration::from_secs(1);

/// What to do with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// New: log it.
    Log,
    /// Already in the log (read again after a restart): skip it.
    Duplicate,
}

/// Numbers that will never reach the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
    /// Boot-clock time of the last event logged before the gap, when known.
    pub after_boot_ns: Option<u64>,
    /// Boot-clock time of the first event logged after it.
    pub before_boot_ns: u64,
}

impl Gap {
    pub fn count(&self) -> u64 {
        self.to - self.from + 1
    }
}

/// The accounting for one epoch.
#[derive(Debug)]
pub struct Sequence {
    epoch: u64,
    /// Every number below this is accounted for (logged or reported missing);
    /// `None` until the first event when nothing was known at start.
    low: Option<u64>,
    /// Numbers at or above `low` already logged: when they arrived, and their
    /// boot-clock time.
    ahead: BTreeMap<u64, (Instant, u64)>,
    /// Boot-clock time of the event numbered `low - 1`, when known.
    last_boot_ns: Option<u64>,
}

impl Sequence {
    /// Accounting that starts at `low` (`None`: from the first event seen),
    /// with `logged` numbers at or above it already in the log.
    pub fn new(epoch: u64, low: Option<u64>, logged: impl IntoIterator<Item = u64>) -> Self {
        let mut s = Self {
            epoch,
            low,
            ahead: BTreeMap::new(),
            last_boot_ns: None,
        };
        let now = Instant::now();
        for n in logged {
            if s.low.is_none_or(|low| n >= low) {
                s.ahead.insert(n, (now, 0));
            }
        }
        s.advance();
        s
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Every number below this is accounted for.
    pub fn low(&self) -> Option<u64> {
        self.low
    }

    /// Decides about the event numbered `seq` (0: the kernel could not number
    /// it; always logged).
    pub fn admit(&mut self, seq: u64, boot_ns: u64, now: Instant) -> Admit {
        if seq == 0 {
            return Admit::Log;
        }
        let low = *self.low.get_or_insert(seq);
        if seq < low || self.ahead.contains_key(&seq) {
            return Admit::Duplicate;
        }
        self.ahead.insert(seq, (now, boot_ns));
        self.advance();
        Admit::Log
    }

    /// The oldest hole that stayed open for `grace`, now accounted as missing.
    pub fn overdue(&mut self, now: Instant, grace: Duration) -> Option<Gap> {
        let low = self.low?;
        let (&first, &(arrived, boot_ns)) = self.ahead.iter().next()?;
        if now.duration_since(arrived) < grace {
            return None;
        }
        let gap = Gap {
            from: low,
            to: first - 1,
            after_boot_ns: self.last_boot_ns,
            before_boot_ns: boot_ns,
        };
        self.low = Some(first);
        self.advance();
        Some(gap)
    }

    /// Numbers up to `to` were reported missing (read back from the log).
    pub fn reported_missing(&mut self, to: u64) {
        if self.low.is_none_or(|low| low <= to) {
            self.low = Some(to + 1);
            self.ahead.retain(|n, _| *n > to);
        }
        self.advance();
    }

    /// Rebuilds the accounting from what the log says about `epoch` (oldest
    /// first); `fresh` when the maps (and so the numbering) are new.
    pub fn recover(epoch: u64, fresh: bool, seen: &[crate::audit::KernelSeen]) -> Self {
        use crate::audit::KernelSeen;
        let mut low = if fresh { Some(1) } else { None };
        let mut start = 0;
        for (i, s) in seen.iter().enumerate() {
            if let KernelSeen::Checkpoint { low: l } = s {
                low = Some(*l);
                start = i + 1;
            }
        }
        let mut sequence = Self::new(epoch, low, []);
        let t = Instant::now();
        for s in &seen[start..] {
            match s {
                KernelSeen::Logged(n) => {
                    sequence.admit(*n, 0, t);
                }
                KernelSeen::Missing { to, .. } => sequence.reported_missing(*to),
                KernelSeen::Checkpoint { .. } => {}
            }
        }
        sequence
    }

    fn advance(&mut self) {
        let Some(mut low) = self.low else { return };
        while let Some((_, boot_ns)) = self.ahead.remove(&low) {
            if boot_ns != 0 {
                self.last_boot_ns = Some(boot_ns);
            }
            low += 1;
        }
        self.low = Some(low);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LATER: Duration = Duration::from_secs(5);

    #[test]
    fn in_order_numbers_leave_nothing_open() {
        let mut s = Sequence::new(7, Some(1), []);
        let t = Instant::now();
        for n in 1..=10 {
            assert_eq!(s.admit(n, n * 100, t), Admit::Log);
        }
        assert_eq!(s.low(), Some(11));
        assert_eq!(s.overdue(t + LATER, GAP_GRACE), None);
    }

    #[test]
    fn a_reordered_pair_is_not_a_gap() {
        let mut s = Sequence::new(7, Some(1), []);
        let t = Instant::now();
        s.admit(2, 200, t);
        assert_eq!(s.overdue(t, GAP_GRACE), None, "within the grace period");
        s.admit(1, 100, t);
        assert_eq!(s.low(), Some(3));
        assert_eq!(s.overdue(t + LATER, GAP_GRACE), None);
    }

    #[test]
    fn a_hole_that_stays_open_is_reported_once_with_its_time_span() {
        let mut s = Sequence::new(7, Some(1), []);
        let t = Instant::now();
        s.admit(1, 100, t);
        s.admit(5, 500, t);
        s.admit(6, 600, t);
        let gap = s.overdue(t + LATER, GAP_GRACE).expect("gap");
        assert_eq!(
            gap,
            Gap {
                from: 2,
                to: 4,
                after_boot_ns: Some(100),
                before_boot_ns: 500
            }
        );
        assert_eq!(gap.count(), 3);
        assert_eq!(s.low(), Some(7));
        assert_eq!(s.overdue(t + LATER, GAP_GRACE), None);
        // A straggler from the reported hole is not logged twice.
        assert_eq!(s.admit(3, 300, t + LATER), Admit::Duplicate);
    }

    #[test]
    fn numbers_already_in_the_log_are_duplicates_after_a_restart() {
        let mut s = Sequence::new(7, Some(10), [10, 11, 13]);
        assert_eq!(s.low(), Some(12));
        let t = Instant::now();
        assert_eq!(s.admit(11, 0, t), Admit::Duplicate);
        assert_eq!(s.admit(13, 0, t), Admit::Duplicate);
        assert_eq!(s.admit(12, 0, t), Admit::Log);
        assert_eq!(s.low(), Some(14));
    }

    #[test]
    fn recovery_starts_at_the_last_checkpoint_and_replays_what_follows() {
        use crate::audit::KernelSeen::*;
        let seen = [
            Logged(1),
            Checkpoint { low: 2 },
            Logged(2),
            Missing { from: 3, to: 5 },
            Logged(7),
        ];
        let s = Sequence::recover(9, false, &seen);
        assert_eq!(s.low(), Some(6), "6 is still open, 7 is logged");
        assert_eq!(Sequence::recover(9, true, &[]).low(), Some(1));
        assert_eq!(Sequence::recover(9, false, &[]).low(), None);
    }

    #[test]
    fn unknown_start_begins_at_the_first_event() {
        let mut s = Sequence::new(7, None, []);
        let t = Instant::now();
        assert_eq!(s.overdue(t + LATER, GAP_GRACE), None);
        assert_eq!(s.admit(40, 0, t), Admit::Log);
        assert_eq!(s.low(), Some(41));
        assert_eq!(s.admit(0, 0, t), Admit::Log, "unnumbered events are logged");
    }

    proptest! {
        /// Whatever the arrival order and whatever is lost, once the grace
        /// has passed every number up to the highest seen is either logged
        /// exactly once or inside exactly one reported gap.
        #[test]
        fn every_number_is_logged_or_reported_exactly_once(
            n in 1u64..60,
            lost in prop::collection::btree_set(1u64..60, 0..20),
            seed in any::<u64>(),
        ) {
            let mut order: Vec<u64> = (1..=n).filter(|x| !lost.contains(x)).collect();
            // Deterministic shuffle of neighbours (CPUs reorder nearby numbers).
            let mut r = seed;
            for i in 1..order.len() {
                r = r.wrapping_mul(6364136223846793005).wrapping_add(1);
                if r % 3 == 0 { order.swap(i - 1, i); }
            }
            let mut s = Sequence::new(1, Some(1), []);
            let t = Instant::now();
            let mut logged = std::collections::BTreeSet::new();
            for x in &order {
                if s.admit(*x, *x, t) == Admit::Log {
                    prop_assert!(logged.insert(*x));
                }
            }
            let mut reported = std::collections::BTreeSet::new();
            while let Some(g) = s.overdue(t + LATER, GAP_GRACE) {
                for x in g.from..=g.to {
                    prop_assert!(reported.insert(x));
                    prop_assert!(!logged.contains(&x));
                }
            }
            let top = order.iter().copied().max().unwrap_or(0);
            for x in 1..=top {
                prop_assert!(logged.contains(&x) ^ reported.contains(&x), "{}", x);
            }
        }
    }
}
