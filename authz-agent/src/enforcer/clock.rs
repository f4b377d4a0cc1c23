//! The one conversion between the wall clock (what artifacts and the log
//! speak) and `CLOCK_BOOTTIME` (what the kernel program compares permit
//! expiries with, and stamps its events with).
//!
//! The two drift apart when the wall clock is stepped: a [`BootClock`] is one
//! reading of both, so many instants convert consistently, and the sweep
//! rewrites kernel expiries when the offset between them moves.
use std::time::{Duration, SystemTime};

/// Nanoseconds on `CLOCK_BOOTTIME`, the clock the kernel program compares
/// permit expiry with.
pub fn boot_time_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Wall clock minus boot clock, in nanoseconds, now.
pub fn offset_ns() -> i128 {
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    wall - boot_time_ns() as i128
}

/// One reading of both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootClock {
    offset_ns: i128,
}

impl BootClock {
    /// Both clocks, read now.
    pub fn now() -> Self {
        Self::with_offset(offset_ns())
    }

    /// A clock with a given wall-minus-boot offset (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// `when` on the boot clock (0 when before boot: already expired).
    pub fn boot_ns(&self, when: SystemTime) -> u64 {
        let wall = match when.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(_) => 0,
        };
        (wall - self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }

    /// The wall-clock instant of a boot-clock reading.
    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let wall_ns = (i128::from(boot_ns) + self.offset_ns).max(0) as u128;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(wall_ns.min(u64::MAX as u128) as u64)
    }
}

/// Converts a wall-clock instant into `CLOCK_BOOTTIME` nanoseconds (0 when it
/// is before boot, i.e. already expired).
pub fn wall_to_boot_ns(when: SystemTime) -> u64 {
    BootClock::now().boot_ns(when)
}

/// The wall-clock instant of a kernel `CLOCK_BOOTTIME` reading.
pub fn boot_to_wall(boot_ns: u64) -> SystemTime {
    BootClock::now().wall(boot_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_maps_onto_boot_clock() {
        let now = boot_time_ns();
        let in_an_hour = wall_to_boot_ns(SystemTime::now() + Duration::from_secs(3600));
        let delta = in_an_hour - now;
        assert!(
            (3_599_000_000_000..3_601_000_000_000).contains(&delta),
            "{delta}"
        );
        assert!(wall_to_boot_ns(SystemTime::UNIX_EPOCH) < now);
    }

    #[test]
    fn a_boot_clock_converts_both_ways() {
        let c = BootClock::with_offset(1_000);
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(5_000);
        assert_eq!(c.boot_ns(t), 4_000);
        assert_eq!(c.wall(4_000), t);
        assert_eq!(c.boot_ns(SystemTime::UNIX_EPOCH), 0, "before boot: expired");
    }
}
