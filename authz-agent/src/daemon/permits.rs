//! The permit table: which kernel rows the accepted artifacts call for, and
//! where each artifact stands. Pure: no kernel, no disk, no clock of its own
//! (every question takes `now`, and expiries are turned into boot-clock
//! nanoseconds by the [`BootClock`] passed in), so it is tested on its own.
//!
//! An artifact is *placed* under the kernel rows it grants while it is live
//! (valid now and its cgroup exists): a [`RowKey`] is a use (exec, mapping,
//! executable memory: one kernel map each) and a (digest, cgroup id) key. A
//! row is computed from every artifact placed under it: the exact slot takes
//! the latest expiry of all of them, the descendants slot the latest of those
//! that include descendants. Each operation returns the rows that may have
//! changed; the agent writes exactly those (or deletes them when
//! [`PermitTable::row`] says none is left).
use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap},
    time::SystemTime,
};

use authz_common::{Digest, Permit, PermitKey};

pub use crate::control::protocol::PermitState;
pub use crate::enforcer::PermitUse;
use crate::{artifact::ArtifactId, enforcer::clock::BootClock, trust::Verified};

/// An accepted artifact.
#[derive(Clone, Debug)]
pub struct Held {
    pub verified: Verified,
    /// Its text, as submitted (the store holds the same).
    pub text: String,
    /// The rows it is placed under now.
    placed: Vec<RowKey>,
}

impl Held {
    pub fn new(verified: Verified, text: String) -> Self {
        Self {
            verified,
            text,
            placed: Vec::new(),
        }
    }
}

/// The accepted artifacts, the cgroup ids they resolve to, and the kernel
/// rows that follow.
#[derive(Debug, Default)]
pub struct PermitTable {
    held: BTreeMap<ArtifactId, Held>,
    /// cgroup path -> id (None: does not exist now).
    cgroups: HashMap<String, Option<u64>>,
    /// Artifacts placed under each row.
    placed: HashMap<RowKey, Members>,
    /// Artifacts removed so far (revoked, expired, cleared): lets a caller
    /// tell cheaply whether anything left since it last looked.
    removals: u64,
}

impl PermitTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn get(&self, id: &ArtifactId) -> Option<&Held> {
        self.held.get(id)
    }

    pub fn contains(&self, id: &ArtifactId) -> bool {
        self.held.contains_key(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ArtifactId, &Held)> {
        self.held.iter()
    }

    pub fn ids(&self) -> Vec<ArtifactId> {
        self.held.keys().copied().collect()
    }

    /// Rows that have at least one artifact placed under them.
    pub fn placed_keys(&self) -> usize {
        self.placed.len()
    }

    /// The cgroup paths accepted artifacts name, each once.
    pub fn cgroup_paths(&self) -> BTreeSet<String> {
        self.held
            .values()
            .map(|h| h.verified.cgroup.clone())
            .collect()
    }

    /// The id `path` resolved to when last told (None: missing or unknown).
    pub fn cgroup_id(&self, path: &str) -> Option<u64> {
        self.cgroups.get(path).copied().flatten()
    }

    /// Whether the table has been told about `path` at all.
    pub fn knows_cgroup(&self, path: &str) -> bool {
        self.cgroups.contains_key(path)
    }

    /// Records where the cgroup at `path` is now; returns whether that changed.
    pub fn set_cgroup(&mut self, path: &str, id: Option<u64>) -> bool {
        match self.cgroups.insert(path.to_owned(), id) {
            Some(old) => old != id,
            None => true,
        }
    }

    /// Every cgroup path the table tracks, with its id.
    pub fn cgroups(&self) -> Vec<(String, Option<u64>)> {
        self.cgroups
            .iter()
            .map(|(p, id)| (p.clone(), *id))
            .collect()
    }

    /// Where `h` stands at `now`.
    pub fn state(&self, h: &Held, now: SystemTime) -> PermitState {
        if now >= h.verified.expires {
            PermitState::Expired
        } else if now < h.verified.not_before {
            PermitState::Scheduled
        } else if self.cgroup_id(&h.verified.cgroup).is_some() {
            PermitState::Live
        } else {
            PermitState::WaitingForCgroup
        }
    }

    /// Where the artifact `id` stands at `now` (None: not held).
    pub fn state_of(&self, id: &ArtifactId, now: SystemTime) -> Option<PermitState> {
        self.held.get(id).map(|h| self.state(h, now))
    }

    /// Counts of artifacts by state.
    pub fn states(&self, now: SystemTime) -> BTreeMap<PermitState, usize> {
        let mut out = BTreeMap::new();
        for h in self.held.values() {
            *out.entry(self.state(h, now)).or_default() += 1;
        }
        out
    }

    /// The rows artifact `id` belongs under at `now` (none: not live).
    fn wanted_rows(&self, id: &ArtifactId, now: SystemTime) -> Vec<RowKey> {
        let Some(h) = self.held.get(id) else {
            return Vec::new();
        };
        if self.state(h, now) != PermitState::Live {
            return Vec::new();
        }
        let Some(cgroup_id) = self.cgroup_id(&h.verified.cgroup) else {
            return Vec::new();
        };
        grants(&h.verified)
            .into_iter()
            .map(|(use_, digest)| RowKey {
                use_,
                key: PermitKey { digest, cgroup_id },
            })
            .collect()
    }

    /// Adds (or replaces) an artifact and places it; returns the rows that
    /// may have changed. The caller has told the table about its cgroup
    /// ([`set_cgroup`](Self::set_cgroup)) or it waits for one.
    pub fn insert(&mut self, id: ArtifactId, held: Held, now: SystemTime) -> Vec<RowKey> {
        let mut touched = self.unplace(&id);
        self.held.insert(
            id,
            Held {
                placed: Vec::new(),
                ..held
            },
        );
        touched.extend(self.place(&id, now));
        touched
    }

    /// Removes an artifact; returns it and the keys whose rows may have changed.
    pub fn remove(&mut self, id: &ArtifactId) -> (Option<Held>, Vec<RowKey>) {
        let touched = self.unplace(id);
        let held = self.held.remove(id);
        self.removals += u64::from(held.is_some());
        (held, touched)
    }

    /// How many artifacts have left the table so far.
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// Removes everything; returns what was held.
    pub fn clear(&mut self) -> Vec<ArtifactId> {
        let ids = self.ids();
        self.removals += ids.len() as u64;
        self.held.clear();
        self.placed.clear();
        ids
    }

    /// The held artifacts `id` names: the artifact itself, or every artifact
    /// issued under the delegation link with that id.
    pub fn named_by(&self, id: &ArtifactId) -> Vec<ArtifactId> {
        self.held
            .iter()
            .filter(|(aid, h)| *aid == id || h.verified.delegation_ids.contains(id))
            .map(|(aid, _)| *aid)
            .collect()
    }

    /// The held artifacts past their expiry at `now`.
    pub fn expired(&self, now: SystemTime) -> Vec<ArtifactId> {
        self.held
            .iter()
            .filter(|(_, h)| now >= h.verified.expires)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The next instant after `now` at which a held artifact's window opens.
    pub fn next_start(&self, now: SystemTime) -> Option<SystemTime> {
        self.held
            .values()
            .map(|h| h.verified.not_before)
            .filter(|t| *t > now)
            .min()
    }

    /// Artifacts whose window is open at `now` but that have no rows yet (a
    /// scheduled one whose time came, one waiting for its cgroup).
    pub fn due(&self, now: SystemTime) -> Vec<ArtifactId> {
        self.held
            .iter()
            .filter(|(_, h)| {
                h.placed.is_empty() && h.verified.not_before <= now && now < h.verified.expires
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Moves every artifact to where it belongs at `now` (a scheduled one
    /// whose time came, one whose cgroup appeared, vanished or was
    /// re-created, one that expired); returns the rows that may have changed.
    pub fn replace_all(&mut self, now: SystemTime) -> Vec<RowKey> {
        let ids = self.ids();
        let mut touched = BTreeSet::new();
        for id in ids {
            touched.extend(self.place(&id, now));
        }
        touched.into_iter().collect()
    }

    /// Moves `id` to where it belongs at `now`; returns the rows that may have
    /// changed (none when it stays).
    pub fn place(&mut self, id: &ArtifactId, now: SystemTime) -> Vec<RowKey> {
        let want = self.wanted_rows(id, now);
        let have = self
            .held
            .get(id)
            .map(|h| h.placed.clone())
            .unwrap_or_default();
        if want == have {
            return Vec::new();
        }
        let mut touched = self.unplace(id);
        if let Some(h) = self.held.get_mut(id) {
            h.placed = want.clone();
        }
        for row in want {
            if let Some(h) = self.held.get(id) {
                self.placed.entry(row).or_default().add(id, &h.verified);
            }
            touched.push(row);
        }
        touched
    }

    fn unplace(&mut self, id: &ArtifactId) -> Vec<RowKey> {
        let Some(h) = self.held.get_mut(id) else {
            return Vec::new();
        };
        let rows = std::mem::take(&mut h.placed);
        let verified = &h.verified;
        for row in &rows {
            if let Some(members) = self.placed.get_mut(row) {
                members.remove(id, verified);
                if members.is_empty() {
                    self.placed.remove(row);
                }
            }
        }
        rows
    }

    /// The row the kernel should hold for `row` (None: no row).
    ///
    /// Each slot takes the latest expiry among the artifacts placed under the
    /// row (on a tie, the smallest id), read off the ordered members rather
    /// than computed over all of them: a fleet that re-issues one binary
    /// daily piles artifacts onto one row, and every submit recomputes it.
    pub fn row(&self, row: &RowKey, clock: &BootClock) -> Option<Permit> {
        let members = self.placed.get(row)?;
        let (expires_boot_ns, artifact) = latest(&members.all, clock)?;
        let mut permit = Permit {
            expires_boot_ns,
            artifact_id: artifact.0,
            ..Permit::default()
        };
        if let Some((expires, id)) = latest(&members.descendants, clock) {
            permit.descendants_expires_boot_ns = expires;
            permit.descendants_artifact_id = id.0;
        }
        Some(permit)
    }

    /// Every row the kernel should hold.
    pub fn rows(&self, clock: &BootClock) -> BTreeMap<RowKey, Permit> {
        self.placed
            .keys()
            .filter_map(|k| self.row(k, clock).map(|p| (*k, p)))
            .collect()
    }
}

/// The artifacts placed under one row, ordered by expiry and then by
/// reversed id, so that the last is the latest expiry with the smallest id.
#[derive(Debug, Default)]
struct Members {
    all: BTreeSet<(SystemTime, Reverse<ArtifactId>)>,
    /// Those that grant descendants too.
    descendants: BTreeSet<(SystemTime, Reverse<ArtifactId>)>,
}

impl Members {
    fn add(&mut self, id: &ArtifactId, v: &Verified) {
        self.all.insert((v.expires, Reverse(*id)));
        if v.descendants {
            self.descendants.insert((v.expires, Reverse(*id)));
        }
    }

    fn remove(&mut self, id: &ArtifactId, v: &Verified) {
        self.all.remove(&(v.expires, Reverse(*id)));
        self.descendants.remove(&(v.expires, Reverse(*id)));
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// The latest expiry among `set` on the boot clock, and the smallest id
/// with it; `None` when there is none or it is not after boot (0: no row).
///
/// Distinct instants convert to distinct boot-clock readings except where
/// the conversion clamps; only at the top clamp can later members share
/// the reading (at 0 the row is dropped anyway), so only there are they
/// scanned for a smaller id.
fn latest(
    set: &BTreeSet<(SystemTime, Reverse<ArtifactId>)>,
    clock: &BootClock,
) -> Option<(u64, ArtifactId)> {
    let mut members = set.iter().rev();
    let (when, Reverse(first)) = members.next()?;
    let top = clock.boot_ns(*when);
    if top == 0 {
        return None;
    }
    let mut id = *first;
    if top == u64::MAX {
        for (when, Reverse(other)) in members {
            if clock.boot_ns(*when) != top {
                break;
            }
            id = id.min(*other);
        }
    }
    Some((top, id))
}

/// What an artifact grants: an exec of its binary (which may also be mapped),
/// a mapping of each library it names, executable memory for its binary's
/// processes when it says so.
pub fn grants(v: &Verified) -> Vec<(PermitUse, Digest)> {
    let mut out = vec![(PermitUse::Exec, v.digest)];
    out.extend(v.libraries.iter().map(|d| (PermitUse::Map, *d)));
    if v.exec_memory {
        out.push((PermitUse::ExecMemory, v.digest));
    }
    out
}

/// A kernel row: its map and its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub use_: PermitUse,
    pub key: PermitKey,
}

impl PartialOrd for RowKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RowKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.use_, self.key.digest, self.key.cgroup_id).cmp(&(
            other.use_,
            other.key.digest,
            other.key.cgroup_id,
        ))
    }
}

/// One change to the kernel's permit maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowChange {
    Put(RowKey, Permit),
    Delete(RowKey),
}

/// The changes that turn `current` into `wanted`: puts first (never a moment
/// with fewer permits than both states agree on), then deletes.
pub fn plan(
    current: &BTreeMap<RowKey, Permit>,
    wanted: &BTreeMap<RowKey, Permit>,
) -> Vec<RowChange> {
    let mut out: Vec<RowChange> = wanted
        .iter()
        .filter(|(k, p)| current.get(k) != Some(p))
        .map(|(k, p)| RowChange::Put(*k, *p))
        .collect();
    out.extend(
        current
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .map(|k| RowChange::Delete(*k)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::testkit::{Kit, HOUR};
    use proptest::prelude::*;
    use std::time::Duration;

    /// A clock whose boot time started at the Unix epoch: boot ns = wall ns.
    fn clock() -> BootClock {
        BootClock::with_offset(0)
    }

    fn held(kit: &Kit, f: impl FnOnce(&mut crate::artifact::Body)) -> (ArtifactId, Held) {
        let a = kit.root_permit(f);
        let v = kit.verify(&a).unwrap();
        (v.id, Held::new(v, a.to_toml()))
    }

    fn key_of(h: &Held, cgroup_id: u64) -> RowKey {
        RowKey {
            use_: PermitUse::Exec,
            key: PermitKey {
                digest: h.verified.digest,
                cgroup_id,
            },
        }
    }

    #[test]
    fn an_artifact_goes_live_when_its_cgroup_exists_and_leaves_when_it_goes() {
        let kit = Kit::new();
        let now = kit.system_now();
        let mut t = PermitTable::new();
        let (id, h) = held(&kit, |_| {});
        let cg = h.verified.cgroup.clone();
        assert!(t.insert(id, h.clone(), now).is_empty(), "no cgroup yet");
        assert_eq!(t.state_of(&id, now), Some(PermitState::WaitingForCgroup));
        assert!(t.set_cgroup(&cg, Some(7)));
        assert!(!t.set_cgroup(&cg, Some(7)), "no change");
        let touched = t.replace_all(now);
        assert_eq!(touched, vec![key_of(&h, 7)]);
        assert_eq!(t.state_of(&id, now), Some(PermitState::Live));
        assert!(t.row(&key_of(&h, 7), &clock()).is_some());
        // Re-created with a new id: the row moves.
        t.set_cgroup(&cg, Some(9));
        let mut touched = t.replace_all(now);
        touched.sort();
        assert_eq!(touched, vec![key_of(&h, 7), key_of(&h, 9)]);
        assert!(t.row(&key_of(&h, 7), &clock()).is_none());
        assert!(t.row(&key_of(&h, 9), &clock()).is_some());
    }

    #[test]
    fn scheduling_and_expiry_are_right_at_the_boundaries() {
        let kit = Kit::new();
        let start = kit.at(HOUR as i64);
        let a = kit.root_permit(|a| {
            a.validity.not_before = start;
            a.validity.expires = kit.at(2 * HOUR as i64);
        });
        let v = kit.verify_at(&a, start).unwrap();
        let (id, h) = (v.id, Held::new(v, a.to_toml()));
        let mut t = PermitTable::new();
        t.set_cgroup(&h.verified.cgroup, Some(1));
        let nb = h.verified.not_before;
        let exp = h.verified.expires;
        t.insert(id, h, nb - Duration::from_nanos(1));
        let one_ns = Duration::from_nanos(1);
        assert_eq!(t.state_of(&id, nb - one_ns), Some(PermitState::Scheduled));
        assert_eq!(t.state_of(&id, nb), Some(PermitState::Live));
        assert_eq!(t.state_of(&id, exp - one_ns), Some(PermitState::Live));
        assert_eq!(t.state_of(&id, exp), Some(PermitState::Expired));
        assert_eq!(t.placed_keys(), 0, "scheduled: no row yet");
        assert_eq!(t.replace_all(nb).len(), 1, "goes live at not_before");
        assert_eq!(t.expired(exp - one_ns), Vec::<ArtifactId>::new());
        assert_eq!(t.expired(exp), vec![id]);
        assert_eq!(t.replace_all(exp).len(), 1, "leaves the kernel at expiry");
        assert_eq!(t.placed_keys(), 0);
    }

    #[test]
    fn a_shared_key_takes_the_latest_expiry_and_descendants_only_from_those_that_say_so() {
        let kit = Kit::new();
        let now = kit.system_now();
        let (a, ha) = held(&kit, |a| {
            a.validity.expires = kit.at(HOUR as i64);
            a.scope.descendants = false;
        });
        let (b, hb) = held(&kit, |a| {
            a.validity.expires = kit.at(2 * HOUR as i64);
            a.subject.sha256 = [8; 32];
        });
        let (c, hc) = held(&kit, |a| {
            a.validity.expires = kit.at(HOUR as i64 / 2);
            a.scope.descendants = true;
        });
        let mut t = PermitTable::new();
        for h in [&ha, &hb, &hc] {
            t.set_cgroup(&h.verified.cgroup, Some(3));
        }
        t.insert(a, ha.clone(), now);
        t.insert(c, hc, now);
        t.insert(b, hb, now);
        let row = t.row(&key_of(&ha, 3), &clock()).expect("row");
        assert_eq!(row.artifact_id, a.0);
        assert_eq!(row.descendants_artifact_id, c.0);
        assert!(row.descendants_expires_boot_ns < row.expires_boot_ns);
    }

    #[test]
    fn revoking_removes_exactly_what_the_id_names() {
        let kit = Kit::new();
        let now = kit.system_now();
        let d = kit.delegation(|_| {});
        let link = d.links()[0].grant().id;
        let under: Vec<(ArtifactId, Held)> = (0..3)
            .map(|_| {
                let a = kit.team_permit(&d, |_| {});
                let v = kit.verify(&a).unwrap();
                (v.id, Held::new(v, a.to_toml()))
            })
            .collect();
        let (other, ho) = held(&kit, |_| {});
        let mut t = PermitTable::new();
        for (id, h) in under.iter().cloned().chain([(other, ho)]) {
            t.set_cgroup(&h.verified.cgroup, Some(5));
            t.insert(id, h, now);
        }
        let mut named = t.named_by(&link);
        named.sort();
        let mut expected: Vec<ArtifactId> = under.iter().map(|(id, _)| *id).collect();
        expected.sort();
        assert_eq!(named, expected);
        for id in &named {
            t.remove(id);
        }
        assert_eq!(t.ids(), vec![other]);
        assert_eq!(t.named_by(&other), vec![other]);
    }

    /// A row as defined: over every artifact placed under it, in id order,
    /// the first with the latest expiry for each slot (what `row` computed
    /// before it read the ordered members).
    fn row_by_definition(t: &PermitTable, row: &RowKey, clock: &BootClock) -> Option<Permit> {
        let mut permit = Permit::default();
        for (id, h) in t.held.iter().filter(|(_, h)| h.placed.contains(row)) {
            let expires = clock.boot_ns(h.verified.expires);
            if expires > permit.expires_boot_ns {
                permit.expires_boot_ns = expires;
                permit.artifact_id = id.0;
            }
            if h.verified.descendants && expires > permit.descendants_expires_boot_ns {
                permit.descendants_expires_boot_ns = expires;
                permit.descendants_artifact_id = id.0;
            }
        }
        (permit.expires_boot_ns != 0).then_some(permit)
    }

    proptest! {
        /// Many artifacts on one row (a binary re-issued again and again),
        /// with equal expiries among them, added and removed in any order:
        /// the row read off the ordered members is the row by definition.
        #[test]
        fn a_row_read_off_its_ordered_members_is_the_row_by_definition(
            artifacts in prop::collection::vec((1i64..6, any::<bool>()), 1..24),
            removals in prop::collection::vec(0usize..24, 0..12),
        ) {
            let kit = Kit::new();
            let now = kit.system_now();
            let c = clock();
            let mut t = PermitTable::new();
            let mut ids = Vec::new();
            let mut key = None;
            for (hours, descendants) in artifacts {
                let (id, h) = held(&kit, |a| {
                    a.scope.descendants = descendants;
                    a.validity.expires = kit.at(hours * HOUR as i64);
                });
                key.get_or_insert(key_of(&h, 0));
                t.set_cgroup(&h.verified.cgroup, Some(7));
                t.insert(id, h, now);
                ids.push(id);
            }
            let key = RowKey { key: PermitKey { cgroup_id: 7, ..key.unwrap().key }, ..key.unwrap() };
            prop_assert!(t.row(&key, &c).is_some());
            prop_assert_eq!(t.placed.len(), 1, "every artifact is for the same binary and cgroup");
            for i in removals {
                if let Some(id) = ids.get(i) {
                    t.remove(id);
                }
                prop_assert_eq!(t.row(&key, &c), row_by_definition(&t, &key, &c));
            }
            for k in t.placed.keys() {
                prop_assert_eq!(t.row(k, &c), row_by_definition(&t, k, &c));
            }
        }

        /// Whatever the operations, the rows kept up to date key by key (what
        /// the agent writes) equal the rows computed from scratch, and a
        /// reconcile of that state plans nothing.
        #[test]
        fn incremental_rows_equal_rows_from_scratch_and_reconcile_is_idempotent(
            ops in prop::collection::vec((0u8..4, 0usize..4, 0u64..3), 1..40),
        ) {
            let kit = Kit::new();
            let now = kit.system_now();
            let artifacts: Vec<(ArtifactId, Held)> = (0..4)
                .map(|i| held(&kit, |a| {
                    a.scope.descendants = i % 2 == 0;
                    a.validity.expires = kit.at((i as i64 + 1) * HOUR as i64);
                    if i == 3 {
                        a.scope.cgroup = crate::trust::testkit::cg("/jobs/b");
                    }
                }))
                .collect();
            let mut t = PermitTable::new();
            let mut kernel: BTreeMap<RowKey, Permit> = BTreeMap::new();
            let c = clock();
            for (op, which, cg) in ops {
                let (id, h) = &artifacts[which];
                let touched = match op {
                    0 => t.insert(*id, h.clone(), now),
                    1 => t.remove(id).1,
                    2 => {
                        t.set_cgroup(&h.verified.cgroup, (cg > 0).then_some(cg));
                        t.replace_all(now)
                    }
                    _ => t.replace_all(now),
                };
                for key in touched {
                    match t.row(&key, &c) {
                        Some(p) => { kernel.insert(key, p); }
                        None => { kernel.remove(&key); }
                    }
                }
                prop_assert_eq!(&kernel, &t.rows(&c));
                prop_assert!(plan(&kernel, &t.rows(&c)).is_empty());
            }
        }

        /// A plan applied to the current rows gives the wanted rows.
        #[test]
        fn a_plan_turns_current_into_wanted(
            current in prop::collection::btree_map(0u64..6, 1u64..4, 0..6),
            wanted in prop::collection::btree_map(0u64..6, 1u64..4, 0..6),
        ) {
            let rows = |m: &BTreeMap<u64, u64>| -> BTreeMap<RowKey, Permit> {
                m.iter()
                    .map(|(k, e)| (
                        RowKey { use_: PermitUse::Exec, key: PermitKey { digest: [0; 32], cgroup_id: *k } },
                        Permit::single([1; 16], *e, false),
                    ))
                    .collect()
            };
            let (cur, want) = (rows(&current), rows(&wanted));
            let mut applied = cur.clone();
            let changes = plan(&cur, &want);
            let first_delete = changes.iter().position(|c| matches!(c, RowChange::Delete(_)));
            if let Some(i) = first_delete {
                prop_assert!(changes[i..].iter().all(|c| matches!(c, RowChange::Delete(_))), "puts first");
            }
            for c in changes {
                match c {
                    RowChange::Put(k, p) => { applied.insert(k, p); }
                    RowChange::Delete(k) => { applied.remove(&k); }
                }
            }
            prop_assert_eq!(applied, want);
        }
    }

    /// What a permit names beyond its binary reaches the kernel: each
    /// library as a mapping row, executable memory as a JIT row keyed by the
    /// binary, all in the permit's cgroup and under its id; a plain permit
    /// gets its exec row only.
    #[test]
    fn libraries_and_exec_memory_land_in_their_own_maps() {
        use crate::artifact::{Artifact, Library};
        let kit = Kit::new();
        let now = kit.system_now();
        let lib = |b: u8| Library {
            sha256: [b; 32],
            path: None,
        };
        // Through text, as the daemon receives it.
        let signed = kit.root_permit(|b| {
            b.subject.exec_memory = true;
            b.libraries = vec![lib(0xa1), lib(0xa2)];
        });
        let a = Artifact::parse(&signed.to_toml()).unwrap();
        let v = kit.verify(&a).unwrap();
        let (id, binary, cg) = (v.id, v.digest, v.cgroup.clone());
        let mut t = PermitTable::new();
        t.set_cgroup(&cg, Some(7));
        t.insert(id, Held::new(v, a.to_toml()), now);
        let row = |use_, digest| RowKey {
            use_,
            key: PermitKey {
                digest,
                cgroup_id: 7,
            },
        };
        let rows = t.rows(&clock());
        let mut keys: Vec<RowKey> = rows.keys().copied().collect();
        keys.sort();
        let mut want = vec![
            row(PermitUse::Exec, binary),
            row(PermitUse::Map, [0xa1; 32]),
            row(PermitUse::Map, [0xa2; 32]),
            row(PermitUse::ExecMemory, binary),
        ];
        want.sort();
        assert_eq!(keys, want);
        assert!(rows.values().all(|p| p.artifact_id == id.0));

        let (plain, h) = held(&kit, |b| b.id = ArtifactId([9; 16]));
        assert!(h.verified.libraries.is_empty() && !h.verified.exec_memory);
        let mut t = PermitTable::new();
        t.set_cgroup(&cg, Some(7));
        t.insert(plain, h.clone(), now);
        assert_eq!(
            t.rows(&clock()).into_keys().collect::<Vec<_>>(),
            vec![key_of(&h, 7)]
        );
    }
}
