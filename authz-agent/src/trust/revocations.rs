//! Whether a signed revocation list ([`crate::revocation_list`]) may be
//! applied, and which of its ids.
//!
//! A list signed by a root key of the trust policy revokes every id it names.
//! A list signed by a delegate carries the delegate's chain, which must verify
//! on this host as a delegation file would (a revoked, expired, retired or
//! wrong-host link refuses the whole list); it may revoke only what was issued
//! under its own last link: that link, delegation links below it, and permits
//! whose chain passes through it. Ids the agent cannot place under that link
//! (nothing held names them) are not applied, and say so: a delegate cannot
//! pre-emptively revoke what it cannot be shown to have issued.
//!
//! The serial check (a list must be above the last one applied from the same
//! signer) needs the agent's state and is [`check_serial`].
use std::time::SystemTime;

use ed25519_dalek::VerifyingKey;

use super::{
    host::HostCheck,
    policy::TrustPolicy,
    verify::{verify_delegation_on, Verified, VerifyError},
};
use crate::{
    revocation_list::RevocationList,
    vocab::{delegation::Delegation, fields::ArtifactId, keyid::KeyId},
};

/// Why a well-formed revocation list is not applied. One line each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("revocation list signer {key_id} is not a trusted root key")]
    UnknownSigner { key_id: KeyId },
    #[error("revocation list signer {key_id} is retired by the trust policy")]
    RetiredSigner { key_id: KeyId },
    #[error("the revocation list's delegation chain is not valid")]
    Chain(#[source] VerifyError),
    #[error(
        "revocation list is signed by key {signer}, but its delegation chain gives authority to key {expected}"
    )]
    NotTheDelegate { signer: KeyId, expected: KeyId },
    #[error("bad signature on revocation list {serial}")]
    BadSignature { serial: u64 },
    #[error(
        "revocation list serial {serial} is not above {last}, the last applied from key {signer}; an older list cannot be replayed"
    )]
    StaleSerial {
        signer: KeyId,
        serial: u64,
        last: u64,
    },
}

/// Where a valid list's authority comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListAuthority {
    /// A root key: every id applies.
    Root,
    /// A delegate: only what was issued under this link (its chain's last).
    Delegate { link: ArtifactId },
}

/// A list whose signature and authority have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedList {
    pub signer: KeyId,
    pub serial: u64,
    pub authority: ListAuthority,
}

/// Verifies `list`'s signer and signature against `policy` (not its serial:
/// [`check_serial`]).
pub fn verify_list(
    list: &RevocationList,
    policy: &TrustPolicy,
    host: HostCheck<'_>,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: SystemTime,
) -> Result<VerifiedList, ListError> {
    let signer = list.issuer;
    if policy.is_retired(&signer) {
        return Err(ListError::RetiredSigner { key_id: signer });
    }
    let (key, authority): (VerifyingKey, _) = match Delegation::from_links(list.chain.clone()) {
        None => {
            let root = policy
                .root(&signer)
                .ok_or(ListError::UnknownSigner { key_id: signer })?;
            (root.key, ListAuthority::Root)
        }
        Some(chain) => {
            verify_delegation_on(&chain, policy, host, revoked, now).map_err(ListError::Chain)?;
            let last = chain.last();
            if last.delegate_key_id() != signer {
                return Err(ListError::NotTheDelegate {
                    signer,
                    expected: last.delegate_key_id(),
                });
            }
            (
                last.grant().delegate_key,
                ListAuthority::Delegate {
                    link: last.grant().id,
                },
            )
        }
    };
    key.verify_strict(&list.message(), list.signature())
        .map_err(|_| ListError::BadSignature {
            serial: list.serial,
        })?;
    Ok(VerifiedList {
        signer,
        serial: list.serial,
        authority,
    })
}

/// Refuses a list whose serial is not above `last`, the serial of the last
/// list applied from the same signer (None: none yet).
pub fn check_serial(list: &VerifiedList, last: Option<u64>) -> Result<(), ListError> {
    match last {
        Some(last) if list.serial <= last => Err(ListError::StaleSerial {
            signer: list.signer,
            serial: list.serial,
            last,
        }),
        _ => Ok(()),
    }
}

/// Whether `authority` may revoke `id`, given the permits the agent holds
/// (the only evidence of what was issued under a delegate's link).
pub fn may_revoke<'a>(
    authority: &ListAuthority,
    id: &ArtifactId,
    held: impl IntoIterator<Item = &'a Verified>,
) -> bool {
    let link = match authority {
        ListAuthority::Root => return true,
        ListAuthority::Delegate { link } => link,
    };
    if id == link {
        return true;
    }
    held.into_iter().any(|v| {
        v.delegation_ids
            .iter()
            .position(|l| l == link)
            .is_some_and(|at| v.id == *id || v.delegation_ids[at + 1..].contains(id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        revocation_list::{issue, ListBody},
        trust::testkit::{Kit, HOUR},
    };

    fn none(_: &ArtifactId) -> bool {
        false
    }

    fn check(kit: &Kit, list: &RevocationList) -> Result<VerifiedList, ListError> {
        verify_list(
            list,
            &kit.policy,
            HostCheck::Anywhere,
            &none,
            kit.system_now(),
        )
    }

    fn ids(n: u8) -> Vec<ArtifactId> {
        (0..n).map(|i| ArtifactId([i + 1; 16])).collect()
    }

    #[test]
    fn a_root_list_applies_everything_and_serials_only_go_up() {
        let kit = Kit::new();
        let list = issue(ids(2), 5, None, &kit.root, None, kit.now).unwrap();
        let v = check(&kit, &list).unwrap();
        assert_eq!(v.authority, ListAuthority::Root);
        assert!(may_revoke(&v.authority, &ids(1)[0], []));
        assert_eq!(check_serial(&v, None), Ok(()));
        assert_eq!(check_serial(&v, Some(4)), Ok(()));
        for last in [5, 6] {
            assert!(matches!(
                check_serial(&v, Some(last)),
                Err(ListError::StaleSerial { serial: 5, .. })
            ));
        }
    }

    #[test]
    fn untrusted_retired_or_tampered_lists_are_refused() {
        let kit = Kit::new();
        let list = issue(ids(1), 1, None, &kit.team, None, kit.now).unwrap();
        assert!(matches!(
            check(&kit, &list),
            Err(ListError::UnknownSigner { .. })
        ));

        let good = issue(ids(2), 3, None, &kit.root, None, kit.now).unwrap();
        // Same signature over a raised serial: the text is re-signed by nobody.
        let text = good.to_toml().replace("serial = 3", "serial = 4");
        let forged = RevocationList::parse(&text).unwrap();
        assert_eq!(
            check(&kit, &forged),
            Err(ListError::BadSignature { serial: 4 })
        );
        // One id swapped for another.
        let swapped = good
            .to_toml()
            .replace(&ids(2)[1].to_string(), &ids(3)[2].to_string());
        let swapped = RevocationList::parse(&swapped).unwrap();
        assert_eq!(
            check(&kit, &swapped),
            Err(ListError::BadSignature { serial: 3 })
        );
        assert_eq!(check(&kit, &good).map(|v| v.serial), Ok(3));

        let mut policy = kit.policy.clone();
        policy.retired.insert(KeyId::of(&kit.root.verifying_key()));
        let e = verify_list(&good, &policy, HostCheck::Anywhere, &none, kit.system_now());
        assert!(matches!(e, Err(ListError::RetiredSigner { .. })), "{e:?}");
    }

    #[test]
    fn a_delegate_revokes_only_what_was_issued_under_its_link() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let link = d.last().grant().id;
        let list = issue(ids(1), 1, None, &kit.team, Some(&d), kit.now).unwrap();
        let v = check(&kit, &list).unwrap();
        assert_eq!(v.authority, ListAuthority::Delegate { link });

        let under = kit.verify(&kit.team_permit(&d, |_| {})).unwrap();
        let root_permit = kit.verify(&kit.root_permit(|_| {})).unwrap();
        let held = [under.clone(), root_permit.clone()];
        assert!(may_revoke(&v.authority, &under.id, &held));
        assert!(may_revoke(&v.authority, &link, &held));
        assert!(!may_revoke(&v.authority, &root_permit.id, &held));
        assert!(!may_revoke(&v.authority, &ids(1)[0], &held));

        // A revoked or expired chain refuses the whole list.
        let revoked = |id: &ArtifactId| *id == link;
        let e = verify_list(
            &list,
            &kit.policy,
            HostCheck::Anywhere,
            &revoked,
            kit.system_now(),
        );
        assert!(
            matches!(e, Err(ListError::Chain(VerifyError::Revoked { .. }))),
            "{e:?}"
        );
        let later = kit.at(400 * 24 * HOUR as i64).to_system_time();
        let e = verify_list(&list, &kit.policy, HostCheck::Anywhere, &none, later);
        assert!(
            matches!(e, Err(ListError::Chain(VerifyError::Expired { .. }))),
            "{e:?}"
        );

        // Signed by the root but carrying a chain that delegates to the team key.
        let body = ListBody {
            issuer: KeyId::of(&kit.root.verifying_key()),
            ..list.body().clone()
        };
        let wrong = body.sign(&kit.root).unwrap();
        assert!(matches!(
            check(&kit, &wrong),
            Err(ListError::NotTheDelegate { .. })
        ));
    }
}
