//! Admission to the control socket, so that no set of non-root connections
//! can lock root out, and no single user can lock out the others.
//!
//! The socket is what an incident responder reaches for (`revoke --all`), so:
//! - at most [`MAX_CONNECTIONS`] connections are open at once (each costs a
//!   task and, while a request is being read, up to a 256 KiB line buffer:
//!   16 MiB at worst);
//! - [`ROOT_RESERVED`] of them only root may take: non-root peers share the
//!   other 56, so root always finds a place, whatever the others hold;
//! - one non-root uid holds at most [`PER_UID`] at once: the CLI uses one
//!   connection per command, 8 leaves room for parallel scripts, and it takes
//!   seven distinct users to fill the shared places;
//! - every connection runs against deadlines ([`DEADLINES`]): an idle client
//!   is dropped after 30 s, a request line must be complete 10 s after its
//!   first byte (a local socket carries 256 KiB in well under a millisecond;
//!   10 s is for a loaded host), and a response must be taken by the client
//!   within 30 s (a `list` of 100,000 permits is tens of MiB: under a second
//!   natively, seconds under emulation). A byte-at-a-time client or one that
//!   never reads holds its place for at most 30 s + 10 s.
//!
//! A refused connection is answered at once without waiting for the client
//! and closed: it never holds a place.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Most control connections open at once, root's included.
pub const MAX_CONNECTIONS: usize = 64;
/// Places only root may take.
pub const ROOT_RESERVED: usize = 8;
/// Most connections one non-root uid may hold at once.
pub const PER_UID: usize = 8;

/// How long a connection may take at each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Waiting for the first byte of the next request.
    pub idle: Duration,
    /// From a request's first byte to its newline.
    pub request: Duration,
    /// Writing a response (the client must read it).
    pub response: Duration,
}

/// The deadlines the agent uses.
pub const DEADLINES: Deadlines = Deadlines {
    idle: Duration::from_secs(30),
    request: Duration::from_secs(10),
    response: Duration::from_secs(30),
};

/// Connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub root_reserved: usize,
    pub per_uid: usize,
}

/// The limits the agent uses.
pub const LIMITS: Limits = Limits {
    total: MAX_CONNECTIONS,
    root_reserved: ROOT_RESERVED,
    per_uid: PER_UID,
};

/// Why a connection was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("uid {uid} already holds {limit} control connections, the most one user may; close one and retry")]
    PerUid { uid: u32, limit: usize },
    #[error("all {shared} control connections open to non-root users are in use; retry shortly")]
    Shared { shared: usize },
    #[error("all {total} control connections are in use; retry shortly")]
    Full { total: usize },
}

/// Who holds which places.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    open: usize,
    non_root: usize,
    per_uid: HashMap<u32, usize>,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            open: 0,
            non_root: 0,
            per_uid: HashMap::new(),
        }
    }

    /// Takes a place for a connection from `uid`, or says why not.
    pub fn admit(&mut self, uid: u32) -> Result<(), Busy> {
        let l = self.limits;
        if self.open >= l.total {
            return Err(Busy::Full { total: l.total });
        }
        if uid != 0 {
            let held = self.per_uid.get(&uid).copied().unwrap_or(0);
            if held >= l.per_uid {
                return Err(Busy::PerUid {
                    uid,
                    limit: l.per_uid,
                });
            }
            let shared = l.total.saturating_sub(l.root_reserved);
            if self.non_root >= shared {
                return Err(Busy::Shared { shared });
            }
            self.non_root += 1;
            self.per_uid.insert(uid, held + 1);
        }
        self.open += 1;
        Ok(())
    }

    /// Gives back a place taken by `uid`.
    pub fn release(&mut self, uid: u32) {
        self.open = self.open.saturating_sub(1);
        if uid == 0 {
            return;
        }
        self.non_root = self.non_root.saturating_sub(1);
        if let Some(held) = self.per_uid.get_mut(&uid) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.per_uid.remove(&uid);
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
    }
}

/// The admission table shared by every connection.
pub type Table = Arc<Mutex<Admission>>;

/// A place held by an admitted connection; given back on drop.
#[derive(Debug)]
pub struct Slot {
    table: Table,
    uid: u32,
}

/// Takes a place in `table` for `uid`.
pub fn admit(table: &Table, uid: u32) -> Result<Slot, Busy> {
    lock(table).admit(uid)?;
    Ok(Slot {
        table: table.clone(),
        uid,
    })
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).release(self.uid);
    }
}

/// The table is only ever updated by whole `admit`/`release` calls, so a
/// poisoned lock still guards consistent counts.
fn lock(table: &Table) -> std::sync::MutexGuard<'_, Admission> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(a: &mut Admission, uid: u32, n: usize) {
        for i in 0..n {
            a.admit(uid)
                .unwrap_or_else(|e| panic!("uid {uid}, connection {i}: {e}"));
        }
    }

    #[test]
    fn one_user_cannot_hold_more_than_its_share() {
        let mut a = Admission::new(LIMITS);
        fill(&mut a, 1000, PER_UID);
        assert_eq!(
            a.admit(1000),
            Err(Busy::PerUid {
                uid: 1000,
                limit: PER_UID
            })
        );
        // Another user is still served, and so is root.
        fill(&mut a, 1001, PER_UID);
        fill(&mut a, 0, 1);
        // Closing one gives that user a place again.
        a.release(1000);
        fill(&mut a, 1000, 1);
    }

    #[test]
    fn non_root_users_together_can_never_take_roots_reserved_places() {
        let mut a = Admission::new(LIMITS);
        let shared = MAX_CONNECTIONS - ROOT_RESERVED;
        let users = shared / PER_UID;
        for uid in 0..users as u32 {
            fill(&mut a, 1000 + uid, PER_UID);
        }
        assert_eq!(a.open(), shared);
        assert_eq!(a.admit(5000), Err(Busy::Shared { shared }));
        fill(&mut a, 0, ROOT_RESERVED);
        assert_eq!(
            a.admit(0),
            Err(Busy::Full {
                total: MAX_CONNECTIONS
            })
        );
        // Root may also use places the others left free.
        let mut b = Admission::new(LIMITS);
        fill(&mut b, 0, MAX_CONNECTIONS);
        assert_eq!(
            b.admit(1000),
            Err(Busy::Full {
                total: MAX_CONNECTIONS
            })
        );
    }

    #[test]
    fn releases_give_places_back_and_never_underflow() {
        let mut a = Admission::new(Limits {
            total: 2,
            root_reserved: 1,
            per_uid: 1,
        });
        fill(&mut a, 7, 1);
        assert!(a.admit(8).is_err(), "one shared place, taken");
        a.release(7);
        fill(&mut a, 8, 1);
        a.release(8);
        a.release(8);
        a.release(0);
        assert_eq!(a.open(), 0);
        fill(&mut a, 9, 1);
        fill(&mut a, 0, 1);
    }

    #[test]
    fn a_slot_gives_its_place_back_when_dropped() {
        let table: Table = Arc::new(Mutex::new(Admission::new(LIMITS)));
        let slots: Vec<Slot> = (0..PER_UID).map(|_| admit(&table, 1000).unwrap()).collect();
        assert!(admit(&table, 1000).is_err());
        drop(slots);
        assert_eq!(lock(&table).open(), 0);
        assert!(admit(&table, 1000).is_ok());
    }
}
