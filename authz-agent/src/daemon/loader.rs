//! Verifying artifacts for the daemon: on start, every stored artifact on
//! every core with batch signature checks; at submit, one at a time. An
//! artifact valid only later is verified at the instant its effective window
//! opens, so it can be accepted ahead of time and scheduled.
use std::time::SystemTime;

use super::index::{digest_of, Index};
use crate::{
    artifact::{Artifact, ArtifactId},
    parallel::on_every_core,
    store::StoredArtifact,
    trust::{effective_window, Verified, Verifier, VerifyError},
};

/// Why a stored artifact was not loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotLoaded {
    /// Past its expiry: it can be removed from the store.
    Expired(String),
    /// Malformed or invalid (kept on disk, reported).
    Invalid(String),
}

/// With a verified index whose seal and bound inputs were found good: the
/// result for each stored artifact the index lists with exactly these bytes,
/// without checking its signatures again, but with its expiry checked at
/// `now` and its id and each delegation link's id checked against
/// `revoked`. `None` for the others: they are verified in full. One entry
/// per input, in order; hashing is spread over every core.
pub fn check_indexed(
    index: &Index,
    revoked: &(dyn Fn(&ArtifactId) -> bool + Sync),
    stored: &[StoredArtifact],
    now: SystemTime,
) -> Vec<Option<Result<Verified, NotLoaded>>> {
    on_every_core(
        stored,
        |part| {
            part.iter()
                .map(|s| {
                    index
                        .lookup(s, &digest_of(&s.text))
                        .map(|v| still_valid(v.clone(), revoked, now))
                })
                .collect()
        },
        || None,
    )
}

/// What verification checks of an indexed permit that can change without
/// its bytes changing: time and revocations.
fn still_valid(
    v: Verified,
    revoked: &(dyn Fn(&ArtifactId) -> bool + Sync),
    now: SystemTime,
) -> Result<Verified, NotLoaded> {
    if now >= v.expires {
        return Err(NotLoaded::Expired(format!(
            "it expired at {}",
            crate::artifact::time::Timestamp::from_system_time(v.expires)
        )));
    }
    if let Some(id) = std::iter::once(&v.id)
        .chain(&v.delegation_ids)
        .find(|id| revoked(id))
    {
        return Err(NotLoaded::Invalid(format!("{id} is revoked")));
    }
    Ok(v)
}

/// Verifies `stored` on up to 16 threads; one result per input, in order.
pub fn verify_store(
    verifier: &Verifier,
    revoked: &(dyn Fn(&ArtifactId) -> bool + Sync),
    stored: &[StoredArtifact],
    now: SystemTime,
) -> Vec<Result<Verified, NotLoaded>> {
    // Parsing and signature checks dominate start-up with many artifacts:
    // spread them over every core (the verifier is shared and thread-safe).
    on_every_core(
        stored,
        |part| verify_chunk(verifier, revoked, part, now),
        || Err(NotLoaded::Invalid("its verification failed".into())),
    )
}

/// Parses and verifies stored artifacts with batch signature verification
/// (about twice the single-check rate).
fn verify_chunk(
    verifier: &Verifier,
    revoked: &(dyn Fn(&ArtifactId) -> bool + Sync),
    stored: &[StoredArtifact],
    now: SystemTime,
) -> Vec<Result<Verified, NotLoaded>> {
    let parsed: Vec<Result<Artifact, String>> = stored
        .iter()
        .map(|s| match Artifact::parse(&s.text) {
            Ok(a) if a.id == s.id => Ok(a),
            Ok(a) => Err(format!("its id {} does not match its file name", a.id)),
            Err(e) => Err(format!("malformed: {e}")),
        })
        .collect();
    let good: Vec<&Artifact> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
    let mut verified = verify_parsed(verifier, revoked, &good, now).into_iter();
    parsed
        .iter()
        .map(|p| match p {
            Err(why) => Err(NotLoaded::Invalid(why.clone())),
            Ok(_) => match verified.next() {
                Some(result) => result.map_err(|e| match e {
                    VerifyError::Expired { .. } => NotLoaded::Expired(e.to_string()),
                    other => NotLoaded::Invalid(other.to_string()),
                }),
                None => Err(NotLoaded::Invalid("it was not verified".into())),
            },
        })
        .collect()
}

/// [`verify_ahead`] for each of `artifacts`, with batch signature checks;
/// one result per input, in order.
fn verify_parsed(
    verifier: &Verifier,
    revoked: &(dyn Fn(&ArtifactId) -> bool + Sync),
    artifacts: &[&Artifact],
    now: SystemTime,
) -> Vec<Result<Verified, VerifyError>> {
    let mut batch = verifier
        .verify_batch(artifacts.iter().copied(), revoked, now)
        .into_iter();
    artifacts
        .iter()
        .map(|a| match batch.next() {
            Some(Err(VerifyError::NotYetValid { .. })) | None => {
                verify_ahead(verifier, revoked, a, now)
            }
            Some(other) => other,
        })
        .collect()
}

/// [`verify_ahead`] for each of `artifacts` (a burst of submissions), on
/// every core with batch signature checks: the same results, one per input
/// in order. A chunk whose thread failed is verified again one by one.
pub fn verify_many(
    verifier: &Verifier,
    revoked: &(dyn Fn(&ArtifactId) -> bool + Sync),
    artifacts: &[&Artifact],
    now: SystemTime,
) -> Vec<Result<Verified, VerifyError>> {
    on_every_core(
        artifacts,
        |part| {
            verify_parsed(verifier, revoked, part, now)
                .into_iter()
                .map(Some)
                .collect()
        },
        || None,
    )
    .into_iter()
    .zip(artifacts)
    .map(|(r, a)| r.unwrap_or_else(|| verify_ahead(verifier, revoked, a, now)))
    .collect()
}

/// Verifies `artifact` at `now`; one valid only later is verified at the
/// instant its effective window opens (the latest `not_before` of the permit
/// and its links). One whose windows never overlap gets the reason it is not
/// valid now.
pub fn verify_ahead(
    verifier: &Verifier,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    artifact: &Artifact,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let window = effective_window(artifact);
    let at = if window.is_empty() {
        now
    } else {
        now.max(window.not_before.to_system_time())
    };
    verifier.verify(artifact, revoked, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::testkit::{Kit, HOUR};

    fn verifier(kit: &Kit) -> Verifier {
        Verifier::new(kit.policy.clone())
    }

    #[test]
    fn a_permit_is_scheduled_until_its_delegation_starts() {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.not_before = kit.at(60));
        let a = kit.team_permit(&d, |_| {});
        let v = verify_ahead(&verifier(&kit), &|_| false, &a, kit.system_now()).unwrap();
        assert_eq!(v.not_before, kit.at(60).to_system_time());
        assert_eq!(v.permit_not_before, kit.system_now());
        // What the permit table compares: not live before the delegation starts.
        assert!(kit.system_now() < v.not_before);
    }

    #[test]
    fn a_permit_never_in_force_is_refused_with_the_reason_it_is_not_valid_now() {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.not_before = kit.at(2 * HOUR as i64));
        let a = kit.team_permit(&d, |_| {});
        let e = verify_ahead(&verifier(&kit), &|_| false, &a, kit.system_now()).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::NotYetValid {
                    part: crate::trust::Part::Delegation { .. },
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn stored_artifacts_load_in_order_with_the_reason_for_each_refusal() {
        let kit = Kit::new();
        let good = kit.root_permit(|_| {});
        let expired = kit.root_permit(|b| {
            b.validity.not_before = kit.at(-2 * HOUR as i64);
            b.validity.expires = kit.at(-(HOUR as i64));
        });
        let stored = |a: &Artifact| StoredArtifact {
            id: a.id,
            path: std::path::PathBuf::from("x"),
            text: a.to_toml(),
        };
        let mut wrong_name = stored(&good);
        wrong_name.id = ArtifactId::random();
        let items = [stored(&good), stored(&expired), wrong_name];
        let results = verify_store(&verifier(&kit), &|_| false, &items, kit.system_now());
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(NotLoaded::Expired(_))));
        assert!(matches!(&results[2], Err(NotLoaded::Invalid(w)) if w.contains("file name")));
    }

    /// A burst checked together gets, for each artifact, exactly what
    /// checking it alone gives: valid, expired, scheduled, never in force,
    /// revoked, badly signed, in any order and across thread chunks.
    #[test]
    fn a_burst_verified_together_gets_what_each_would_get_alone() {
        let kit = Kit::new();
        let later = kit.delegation(|g| g.not_before = kit.at(60));
        let never = kit.delegation(|g| g.not_before = kit.at(2 * HOUR as i64));
        let revoked_one = kit.root_permit(|_| {});
        // One permit's body under another's signature.
        let forged = Artifact::forged(
            kit.root_permit(|_| {}).body().clone(),
            *kit.root_permit(|_| {}).signature(),
        );
        let mut artifacts = Vec::new();
        for i in 0..40 {
            artifacts.push(match i % 7 {
                0 => kit.root_permit(|b| {
                    b.validity.not_before = kit.at(-2 * HOUR as i64);
                    b.validity.expires = kit.at(-(HOUR as i64));
                }),
                1 => kit.team_permit(&later, |_| {}),
                2 => kit.team_permit(&never, |_| {}),
                3 => revoked_one.clone(),
                4 => forged.clone(),
                _ => kit.root_permit(|_| {}),
            });
        }
        let revoked = |id: &ArtifactId| *id == revoked_one.id;
        let v = verifier(&kit);
        let now = kit.system_now();
        let refs: Vec<&Artifact> = artifacts.iter().collect();
        let together = verify_many(&v, &revoked, &refs, now);
        assert_eq!(together.len(), artifacts.len());
        let mut kinds = std::collections::BTreeSet::new();
        for (a, got) in artifacts.iter().zip(&together) {
            let alone = verify_ahead(&v, &revoked, a, now);
            assert_eq!(format!("{got:?}"), format!("{alone:?}"), "{}", a.id);
            kinds.insert(match got {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{e}")
                    .split_whitespace()
                    .last()
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        assert!(
            kinds.len() >= 4,
            "the burst covered too few outcomes: {kinds:?}"
        );
    }

    fn stored(a: &Artifact) -> StoredArtifact {
        StoredArtifact {
            id: a.id,
            path: std::path::PathBuf::from("x"),
            text: a.to_toml(),
        }
    }

    #[test]
    fn an_indexed_artifact_loads_without_verification_but_expiry_still_applies() {
        let kit = Kit::new();
        let a = kit.root_permit(|_| {});
        let v = verifier(&kit)
            .verify(&a, &|_| false, kit.system_now())
            .unwrap();
        let s = stored(&a);
        let index = Index::of([(s.text.as_str(), &v)]);
        let now = kit.system_now();
        let r = check_indexed(&index, &|_| false, std::slice::from_ref(&s), now);
        assert_eq!(r, vec![Some(Ok(v.clone()))]);
        let later = kit.at(2 * HOUR as i64).to_system_time();
        let r = check_indexed(&index, &|_| false, std::slice::from_ref(&s), later);
        assert!(matches!(r[..], [Some(Err(NotLoaded::Expired(_)))]), "{r:?}");
    }

    #[test]
    fn an_indexed_artifact_revoked_after_the_index_was_written_is_not_loaded() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let a = kit.team_permit(&d, |_| {});
        let v = verifier(&kit)
            .verify(&a, &|_| false, kit.system_now())
            .unwrap();
        let s = stored(&a);
        let index = Index::of([(s.text.as_str(), &v)]);
        let link = d.links()[0].grant().id;
        for gone in [a.id, link] {
            let r = check_indexed(
                &index,
                &|id| *id == gone,
                std::slice::from_ref(&s),
                kit.system_now(),
            );
            assert!(
                matches!(&r[..], [Some(Err(NotLoaded::Invalid(w)))] if w.contains("revoked")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn an_artifact_whose_bytes_differ_from_the_index_is_verified_in_full_and_refused() {
        let kit = Kit::new();
        let a = kit.root_permit(|_| {});
        let v = verifier(&kit)
            .verify(&a, &|_| false, kit.system_now())
            .unwrap();
        let good = stored(&a);
        let index = Index::of([(good.text.as_str(), &v)]);
        // The attacker widens the scope in the file; the index is left as it was.
        let mut forged = good.clone();
        forged.text = good.text.replace("/jobs/a", "/jobs");
        assert_ne!(forged.text, good.text);
        let r = check_indexed(
            &index,
            &|_| false,
            std::slice::from_ref(&forged),
            kit.system_now(),
        );
        assert_eq!(r, vec![None]);
        let full = verify_store(&verifier(&kit), &|_| false, &[forged], kit.system_now());
        assert!(
            matches!(&full[..], [Err(NotLoaded::Invalid(w))] if w.contains("signature")),
            "{full:?}"
        );
        // An artifact the index does not list at all is verified in full too.
        let other = kit.root_permit(|_| {});
        let r = check_indexed(&index, &|_| false, &[stored(&other)], kit.system_now());
        assert_eq!(r, vec![None]);
    }
}
