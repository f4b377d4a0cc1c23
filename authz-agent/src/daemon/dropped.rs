//! How many dropped decision events the log has already reported.
//!
//! The kernel counts events it drops (ring buffer full) in the pinned
//! `COUNTERS` map, which outlives the daemon. When no daemon is running the
//! ring fills and the kernel keeps deciding, so a restart can find drops that
//! nobody reported. This ledger, in the state directory, remembers how much of
//! the counter the log has accounted for, so the next run reports the rest.
//! The counter lives until reboot (bpffs is not persistent), so the ledger is
//! tied to the boot it was written in.
use std::{fs, io, path::Path, path::PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "events-dropped.json";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    boot_id: String,
    reported: u64,
}

/// The ledger file and this boot's id.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    boot_id: String,
}

impl Ledger {
    pub fn new(state_dir: &Path) -> io::Result<Self> {
        Ok(Self::with_boot_id(
            state_dir,
            fs::read_to_string(BOOT_ID)?.trim().to_owned(),
        ))
    }

    fn with_boot_id(state_dir: &Path, boot_id: String) -> Self {
        Self {
            path: state_dir.join(FILE),
            boot_id,
        }
    }

    /// The part of the kernel's counter an earlier run already reported: 0
    /// when the kernel state is fresh (not adopted), when the ledger is from
    /// another boot, missing or unreadable (reporting twice beats not at all).
    pub fn reported(&self, adopted: bool, counter: u64) -> u64 {
        if !adopted {
            return 0;
        }
        let entry: Option<Entry> = fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match entry {
            Some(e) if e.boot_id == self.boot_id => e.reported.min(counter),
            _ => 0,
        }
    }

    /// Records that the log has reported the counter up to `reported`.
    pub fn save(&self, reported: u64) -> io::Result<()> {
        let entry = Entry {
            boot_id: self.boot_id.clone(),
            reported,
        };
        let bytes = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        crate::store::write_atomic(&self.path, &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("authz-dropped-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_fresh_kernel_state_has_nothing_reported() {
        let d = dir("fresh");
        let l = Ledger::with_boot_id(&d, "b1".into());
        l.save(40).unwrap();
        assert_eq!(l.reported(false, 7), 0);
    }

    #[test]
    fn an_adopted_counter_continues_from_the_ledger_of_this_boot() {
        let d = dir("adopted");
        let l = Ledger::with_boot_id(&d, "b1".into());
        assert_eq!(l.reported(true, 12), 0, "no ledger yet: report everything");
        l.save(10).unwrap();
        assert_eq!(l.reported(true, 12), 10);
        // A counter below the ledger (pins removed and recreated): never more
        // than the counter.
        assert_eq!(l.reported(true, 3), 3);
        let other_boot = Ledger::with_boot_id(&d, "b2".into());
        assert_eq!(other_boot.reported(true, 12), 0);
        fs::write(d.join(FILE), b"garbage").unwrap();
        assert_eq!(l.reported(true, 12), 0);
    }
}
