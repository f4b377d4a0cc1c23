//! Applying a signed revocation list: verify it ([`crate::trust::revocations`]),
//! refuse a replayed or older serial, then revoke each id in scope exactly as
//! `revoke ID` would (revocation list written durably, then the permits
//! removed from the kernel and the store), and finally record the serial.
//!
//! A crash after the revocations are written but before the serial is
//! recorded leaves the list applicable again: applying it twice changes
//! nothing more, so the order is safe.
use std::{collections::BTreeSet, time::SystemTime};

use super::{
    agent::{Agent, Refusal},
    revocations::revocation_until,
};
use crate::{
    artifact::{time::Timestamp, ArtifactId},
    control::protocol::{RefusalKind, RevocationListResult},
    revocation_list::RevocationList,
    store::{AppliedList, Revocation},
    trust::{
        revocations::{check_serial, may_revoke, verify_list, ListAuthority},
        HostCheck, Verified,
    },
};

/// What a verified list does, given what the agent holds and has revoked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListPlan {
    /// In scope, not revoked yet.
    pub fresh: Vec<ArtifactId>,
    /// In scope, revoked before.
    pub already: Vec<ArtifactId>,
    /// A delegate's ids the agent cannot place under its link.
    pub out_of_scope: Vec<ArtifactId>,
}

/// Sorts `ids` by what applying them means.
pub fn plan(
    ids: &[ArtifactId],
    authority: &ListAuthority,
    held: &[&Verified],
    revoked: impl Fn(&ArtifactId) -> bool,
) -> ListPlan {
    let mut p = ListPlan::default();
    for id in ids {
        if !may_revoke(authority, id, held.iter().copied()) {
            p.out_of_scope.push(*id);
        } else if revoked(id) {
            p.already.push(*id);
        } else {
            p.fresh.push(*id);
        }
    }
    p
}

fn internal(message: String) -> Refusal {
    Refusal::new(RefusalKind::Internal, message)
}

impl Agent {
    /// A signed revocation list (`submit` of an `authz-revocations` file).
    #[tracing::instrument(skip_all, fields(signer, serial))]
    pub fn apply_revocation_list(
        &mut self,
        text: &str,
        now: SystemTime,
    ) -> Result<RevocationListResult, Refusal> {
        let list = RevocationList::parse(text)
            .map_err(|e| Refusal::new(RefusalKind::Malformed, e.to_string()))?;
        let span = tracing::Span::current();
        span.record("signer", tracing::field::display(list.issuer));
        span.record("serial", list.serial);
        let verified = verify_list(
            &list,
            self.verifier.policy(),
            HostCheck::This(self.verifier.host()),
            &|id| self.revocations.contains(id),
            now,
        )
        .map_err(|e| Refusal::new(RefusalKind::of_list(&e), crate::error_chain(&e)))?;
        let mut applied = self
            .store
            .applied_lists()
            .map_err(|e| internal(format!("cannot read the applied revocation lists: {e}")))?;
        let digest = hex::encode(list.digest());
        let mut result = RevocationListResult {
            signer: verified.signer.to_string(),
            serial: verified.serial,
            revoked: 0,
            already_revoked: 0,
            removed: 0,
            out_of_scope: Vec::new(),
            already_applied: false,
        };
        let last = applied.get(&verified.signer);
        if last.is_some_and(|a| a.digest == digest) {
            result.already_applied = true;
            return Ok(result);
        }
        check_serial(&verified, last.map(|a| a.serial))
            .map_err(|e| Refusal::new(RefusalKind::of_list(&e), e.to_string()))?;

        let held: Vec<&Verified> = self.permits.iter().map(|(_, h)| &h.verified).collect();
        let p = plan(&list.revoked, &verified.authority, &held, |id| {
            self.revocations.contains(id)
        });
        let affected: BTreeSet<ArtifactId> = p
            .fresh
            .iter()
            .flat_map(|id| self.permits.named_by(id))
            .collect();
        let stamp = Timestamp::from_system_time(now);
        let reason = format!(
            "revocation list {} from key {}{}",
            list.serial,
            list.issuer.short(),
            list.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        let entries: Vec<Revocation> = p
            .fresh
            .iter()
            .map(|id| {
                let until = revocation_until(self.permits.iter().map(|(_, h)| &h.verified), id);
                Revocation::new(
                    id,
                    stamp,
                    until.map(Timestamp::from_system_time),
                    Some(reason.clone()),
                )
            })
            .collect();
        let added = self.revocations.add(entries);
        if let Err(e) = self.revocations.save(&self.store, now) {
            self.revocations.undo(&added);
            return Err(internal(format!("cannot record the revocations: {e}")));
        }
        for a in &affected {
            self.forget(a)
                .map_err(|e| internal(crate::error_chain(&e)))?;
        }
        applied.insert(
            verified.signer,
            AppliedList {
                signer: verified.signer.to_string(),
                serial: verified.serial,
                digest,
                applied_at: stamp.to_string(),
            },
        );
        self.store.save_applied_lists(&applied).map_err(|e| {
            internal(format!(
                "the list's ids are revoked, but its serial could not be recorded: {e}"
            ))
        })?;
        result.revoked = p.fresh.len();
        result.already_revoked = p.already.len();
        result.removed = affected.len();
        result.out_of_scope = p.out_of_scope.iter().map(ToString::to_string).collect();
        tracing::warn!(
            revoked = result.revoked,
            already = result.already_revoked,
            removed = result.removed,
            out_of_scope = result.out_of_scope.len(),
            "revocation list applied"
        );
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::testkit::Kit;

    #[test]
    fn the_plan_splits_fresh_already_and_out_of_scope() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let link = d.last().grant().id;
        let under = kit.verify(&kit.team_permit(&d, |_| {})).unwrap();
        let other = kit.verify(&kit.root_permit(|_| {})).unwrap();
        let held = [&under, &other];
        let gone = ArtifactId([9; 16]);
        let ids = [under.id, other.id, link, gone];

        let root = plan(&ids, &ListAuthority::Root, &held, |id| *id == gone);
        assert_eq!(root.fresh, [under.id, other.id, link]);
        assert_eq!(root.already, [gone]);
        assert!(root.out_of_scope.is_empty());

        let delegate = ListAuthority::Delegate { link };
        let p = plan(&ids, &delegate, &held, |_| false);
        assert_eq!(p.fresh, [under.id, link]);
        assert_eq!(p.out_of_scope, [other.id, gone]);
    }
}
