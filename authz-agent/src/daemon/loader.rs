//! Verifying artifacts for the daemon: on start, every stored artifact on
//! every core with batch signature checks; at submit, one at a time. An
//! artifact valid only later is verified at the instant its effective window
//! opens, so it can be accepted ahead of time and scheduled.
use std::time::SystemTime;

use crate::{
    artifact::{Artifact, ArtifactId},
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

/// Verifies `stored` on up to 16 threads; one result per input, in order.
pub fn verify_store(
    verifier: &Verifier,
    revoked: &(dyn Fn(&ArtifactId) -> bool + Sync),
    stored: &[StoredArtifact],
    now: SystemTime,
) -> Vec<Result<Verified, NotLoaded>> {
    // Parsing and signature checks dominate start-up with many artifacts:
    // spread them over every core (the verifier is shared and thread-safe).
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let chunk = stored.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = stored
            .chunks(chunk)
            .map(|part| scope.spawn(move || verify_chunk(verifier, revoked, part, now)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
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
    let mut batch = verifier
        .verify_batch(good.iter().copied(), revoked, now)
        .into_iter();
    parsed
        .iter()
        .map(|p| match p {
            Err(why) => Err(NotLoaded::Invalid(why.clone())),
            Ok(a) => match batch.next() {
                Some(Err(VerifyError::NotYetValid { .. })) | None => {
                    verify_ahead(verifier, revoked, a, now)
                }
                Some(other) => other,
            }
            .map_err(|e| match e {
                VerifyError::Expired { .. } => NotLoaded::Expired(e.to_string()),
                other => NotLoaded::Invalid(other.to_string()),
            }),
        })
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
}
