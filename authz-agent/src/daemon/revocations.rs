//! The revocation list as the daemon holds it: what is revoked, the real time
//! observed since (for the compaction rule in [`crate::store`]), and when the
//! list was last written.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    artifact::{time::Timestamp, ArtifactId},
    enforcer::boot_time_ns,
    store::{ObservedClock, Revocation, Store, StoreError},
    trust::Verified,
};

/// How often the real time observed for the revocation list is written to
/// disk when nothing else rewrites it (a crash loses at most this much, which
/// only delays compaction).
pub const OBSERVED_SAVE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What is revoked.
#[derive(Debug)]
pub struct Revocations {
    list: BTreeMap<ArtifactId, Revocation>,
    /// Real time passing, for the compaction rule.
    observed: ObservedClock,
    /// When the list was last written.
    saved: Instant,
}

impl Revocations {
    pub fn new(list: BTreeMap<ArtifactId, Revocation>) -> Self {
        Self {
            list,
            observed: ObservedClock::starting_at(boot_time_ns()),
            saved: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, id: &ArtifactId) -> Option<&Revocation> {
        self.list.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ArtifactId, &Revocation)> {
        self.list.iter()
    }

    pub fn contains(&self, id: &ArtifactId) -> bool {
        self.list.contains_key(id)
    }

    /// Adds revocations (not yet written: [`save`](Self::save) next). The
    /// existing ones are first credited with the time observed so far, and
    /// the new ones with none of it.
    pub fn add(&mut self, entries: impl IntoIterator<Item = Revocation>) -> Vec<ArtifactId> {
        self.observe();
        self.observed.drop_fraction();
        let mut ids = Vec::new();
        for r in entries {
            if let Ok(id) = r.id.parse::<ArtifactId>() {
                ids.push(id);
                self.list.insert(id, r);
            }
        }
        ids
    }

    /// Takes back revocations that could not be written.
    pub fn undo(&mut self, ids: &[ArtifactId]) {
        for id in ids {
            self.list.remove(id);
        }
    }

    /// Writes the list (dropping what may be compacted at `now`).
    pub fn save(&mut self, store: &Store, now: SystemTime) -> Result<(), StoreError> {
        store.save_revocations(&self.list, Timestamp::from_system_time(now))?;
        self.saved = Instant::now();
        Ok(())
    }

    /// Credits every revocation with the real time observed since the last
    /// reading of the boot clock.
    fn observe(&mut self) {
        let seconds = self.observed.elapsed_seconds(boot_time_ns());
        if seconds > 0 {
            for r in self.list.values_mut() {
                r.observe(seconds);
            }
        }
    }

    /// Records the real time observed (on stop, and from the sweep every
    /// [`OBSERVED_SAVE_INTERVAL`]).
    pub fn save_observed_time(&mut self, store: &Store, now: SystemTime) {
        self.observe();
        if self.is_empty() {
            return;
        }
        if let Err(e) = self.save(store, now) {
            tracing::warn!(error = %e, "cannot record the time observed for the revocation list");
        }
    }

    /// Periodic: credit the time observed, compact what the rule allows, and
    /// write the list when it changed or is due.
    pub fn sweep(&mut self, store: &Store, now: SystemTime) {
        self.observe();
        let stamp = Timestamp::from_system_time(now);
        if self.list.values().any(|r| r.compactable(stamp)) {
            let before = self.list.len();
            self.list.retain(|_, r| !r.compactable(stamp));
            tracing::info!(
                dropped = before - self.list.len(),
                "revocations past their end compacted"
            );
            if let Err(e) = self.save(store, now) {
                tracing::warn!(error = %e, "cannot compact the revocation list");
            }
        } else if self.saved.elapsed() >= OBSERVED_SAVE_INTERVAL {
            self.save_observed_time(store, now);
        }
    }
}

/// Until when anything `id` names could still verify, as far as the held
/// permits tell: a held permit's effective expiry, or the own `expires` of a
/// delegation link in a held permit's chain, which bounds every permit ever
/// issued under that link (not only the ones held now). None when no held
/// permit knows `id`: then the revocation must last for good.
pub fn revocation_until<'a>(
    held: impl IntoIterator<Item = &'a Verified>,
    id: &ArtifactId,
) -> Option<SystemTime> {
    held.into_iter()
        .flat_map(|v| {
            let permit = (v.id == *id).then_some(v.expires);
            let links = v
                .delegation_ids
                .iter()
                .zip(&v.delegation_expires)
                .filter(|(link, _)| *link == id)
                .map(|(_, expires)| *expires);
            permit.into_iter().chain(links)
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        daemon::loader::verify_ahead,
        trust::{
            testkit::{Kit, DAY, HOUR},
            Verifier, VerifyError,
        },
    };

    #[test]
    fn revoking_a_delegation_lasts_until_the_delegation_expires_not_its_permits() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let link = d.links()[0].grant().id;
        let held = kit.verify(&kit.team_permit(&d, |_| {})).unwrap();
        assert_eq!(held.expires, kit.at(HOUR as i64).to_system_time());
        assert_eq!(
            revocation_until([&held], &link),
            Some(kit.at(30 * DAY as i64).to_system_time()),
            "the delegation's own expiry, not its permit's"
        );
        assert_eq!(revocation_until([&held], &held.id), Some(held.expires));
        assert_eq!(revocation_until([&held], &ArtifactId::random()), None);
    }

    #[test]
    fn a_delegation_revoked_while_nothing_under_it_is_held_blocks_later_permits() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let link = d.links()[0].grant().id;
        let until = revocation_until([], &link);
        assert_eq!(until, None, "nothing held tells its expiry");
        let mut revoked = BTreeMap::new();
        revoked.insert(
            link,
            Revocation {
                observed_seconds: Some(u64::MAX),
                ..Revocation::new(&link, kit.now, until.map(Timestamp::from_system_time), None)
            },
        );
        assert!(!revoked[&link].compactable(kit.at(10 * 365 * DAY as i64)));
        let later = kit.team_permit(&d, |_| {});
        let is_revoked = |id: &ArtifactId| revoked.contains_key(id);
        let e = verify_ahead(
            &Verifier::new(kit.policy.clone()),
            &is_revoked,
            &later,
            kit.system_now(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Revoked {
                    part: crate::trust::Part::Delegation { .. }
                }
            ),
            "{e}"
        );
    }
}
