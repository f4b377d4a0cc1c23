//! Property tests over random artifacts: they round-trip through TOML, they
//! verify, and changing any one signed value (or any byte of the text) never
//! yields a different artifact that still verifies.
use proptest::{collection::vec, option, prelude::*};

use super::{
    keys::generate,
    testkit::{cg, Kit, DAY},
    verify,
};
use crate::{
    artifact::{Artifact, Body, Library, Provenance, Scope, Subject, Validity},
    vocab::{
        delegation::Delegation,
        fields::{ArtifactId, CgroupPath},
        time::Timestamp,
    },
};

/// Text for optional fields, with characters TOML must escape.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _./@:\"\\\\é☃-]{1,40}"
}

fn cgroup_under_jobs() -> impl Strategy<Value = CgroupPath> {
    vec("[a-z0-9_-][a-z0-9._-]{0,7}", 0..4).prop_map(|parts| {
        let mut p = String::from("/jobs/a");
        for part in parts {
            p.push('/');
            p.push_str(&part);
        }
        CgroupPath::normalize(&p).unwrap()
    })
}

#[derive(Debug, Clone)]
struct Shape {
    id: [u8; 16],
    digest: [u8; 32],
    path: Option<String>,
    name: Option<String>,
    cgroup: CgroupPath,
    descendants: bool,
    start_offset: i64,
    lifetime: u64,
    requested_by: Option<String>,
    on_behalf_of: Option<String>,
    reason: Option<String>,
    delegated: bool,
    exec_memory: bool,
    libraries: Vec<Library>,
}

/// Up to four libraries with distinct digests.
fn libraries() -> impl Strategy<Value = Vec<Library>> {
    vec((any::<[u8; 32]>(), option::of(text())), 0..4).prop_map(|v| {
        let mut out: Vec<Library> = Vec::new();
        for (sha256, path) in v {
            if !out.iter().any(|l| l.sha256 == sha256) {
                out.push(Library { sha256, path });
            }
        }
        out
    })
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        (
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            option::of(text()),
            option::of(text()),
        ),
        (
            cgroup_under_jobs(),
            any::<bool>(),
            -3_600i64..=0,
            1u64..=DAY,
        ),
        (
            option::of(text()),
            option::of(text()),
            option::of(text()),
            any::<bool>(),
        ),
        (any::<bool>(), libraries()),
    )
        .prop_map(
            |(
                (id, digest, path, name),
                (cgroup, descendants, start_offset, lifetime),
                (requested_by, on_behalf_of, reason, delegated),
                (exec_memory, libraries),
            )| Shape {
                id,
                digest,
                path,
                name,
                cgroup,
                descendants,
                start_offset,
                lifetime,
                requested_by,
                on_behalf_of,
                reason,
                delegated,
                exec_memory,
                libraries,
            },
        )
}

/// A valid artifact of shape `s`, signed by the kit's root or, through a
/// delegation, by its team key.
fn build(kit: &Kit, d: &Delegation, s: &Shape) -> Artifact {
    let key = if s.delegated { &kit.team } else { &kit.root };
    let mut b = kit.body(key);
    b.id = ArtifactId(s.id);
    b.subject = Subject {
        sha256: s.digest,
        path: s.path.clone(),
        name: s.name.clone(),
        exec_memory: s.exec_memory,
    };
    b.libraries = s.libraries.clone();
    b.scope = Scope {
        cgroup: s.cgroup.clone(),
        descendants: s.descendants,
    };
    let start = kit.at(s.start_offset);
    // Stay valid at `kit.now`: the window must include it.
    b.validity = Validity {
        not_before: start,
        expires: start
            .checked_add(s.lifetime.max(s.start_offset.unsigned_abs() + 1))
            .unwrap(),
    };
    b.provenance = Provenance {
        requested_by: s.requested_by.clone(),
        on_behalf_of: s.on_behalf_of.clone(),
        reason: s.reason.clone(),
    };
    if s.delegated {
        b.chain = d.links().to_vec();
    }
    b.sign(key).unwrap()
}

/// Changes signed value number `which` of `b` to a different valid value.
fn change(b: &mut Body, which: usize) {
    let flip = |s: &mut Option<String>| *s = if s.is_some() { None } else { Some("x".into()) };
    match which {
        0 => b.id.0[0] ^= 1,
        1 => b.issued_at = b.issued_at.checked_add(1).unwrap(),
        2 => b.policy_version += 1,
        3 => b.subject.sha256[31] ^= 0x80,
        4 => flip(&mut b.subject.path),
        5 => flip(&mut b.subject.name),
        6 => b.scope.cgroup = cg(&format!("{}/z", b.scope.cgroup)),
        7 => b.scope.descendants = !b.scope.descendants,
        8 => {
            b.validity.not_before = Timestamp::from_unix(b.validity.not_before.unix() - 1).unwrap()
        }
        9 => b.validity.expires = b.validity.expires.checked_add(1).unwrap(),
        10 => flip(&mut b.provenance.requested_by),
        11 => flip(&mut b.provenance.on_behalf_of),
        12 => flip(&mut b.provenance.reason),
        13 => b.subject.exec_memory = !b.subject.exec_memory,
        14 => match b.libraries.last_mut() {
            Some(l) => l.sha256[0] ^= 1,
            None => b.libraries.push(Library {
                sha256: [1; 32],
                path: None,
            }),
        },
        15 => match b.libraries.last_mut() {
            Some(l) => flip(&mut l.path),
            None => b.libraries.push(Library {
                sha256: [2; 32],
                path: Some("/lib/x".into()),
            }),
        },
        _ => {
            if b.chain.is_empty() {
                b.issued_at = b.issued_at.checked_add(2).unwrap();
            } else {
                b.chain.clear();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_artifacts_round_trip_and_verify(s in shape()) {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.exec_memory = s.exec_memory);
        let a = build(&kit, &d, &s);
        let text = a.to_toml();
        let back = Artifact::parse(&text).unwrap();
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(back.to_toml(), text);
        let v = kit.verify(&back).unwrap();
        prop_assert_eq!(v.digest, s.digest);
        prop_assert_eq!(v.cgroup, s.cgroup.as_str());
        prop_assert_eq!(v.exec_memory, s.exec_memory);
        prop_assert_eq!(v.libraries, s.libraries.iter().map(|l| l.sha256).collect::<Vec<_>>());
    }

    #[test]
    fn changing_any_one_signed_value_fails(s in shape(), which in 0usize..17) {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.exec_memory = s.exec_memory);
        let a = build(&kit, &d, &s);
        let mut body = a.body().clone();
        change(&mut body, which);
        prop_assume!(body != *a.body());
        let forged = Artifact::forged(body, *a.signature());
        prop_assert!(kit.verify(&forged).is_err());
        // Through the text too.
        if let Ok(reparsed) = Artifact::parse(&forged.to_toml()) {
            prop_assert!(kit.verify(&reparsed).is_err());
        }
    }

    #[test]
    fn corrupted_text_never_panics_and_never_verifies_differently(
        s in shape(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.exec_memory = s.exec_memory);
        let a = build(&kit, &d, &s);
        let mut bytes = a.to_toml().into_bytes();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(b) = Artifact::parse(text) {
                // Either the edit touched no signed value (a comment, spacing)
                // or the artifact must fail verification.
                if b != a {
                    prop_assert!(kit.verify(&b).is_err(), "{}", text);
                }
                prop_assert_eq!(Artifact::parse(&b.to_toml()).unwrap(), b);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = Artifact::parse(&text);
        let _ = Delegation::parse(&text);
        let _ = super::keys::PublicKey::parse(&text);
        let _ = super::keys::parse_secret_key(&text);
        let _ = super::TrustPolicy::from_config_str(&text);
    }

    #[test]
    fn delegations_round_trip(prefixes in vec(cgroup_under_jobs(), 1..5), ttl in 1u64..=DAY) {
        let kit = Kit::new();
        let sub = generate();
        let d1 = kit.delegation(|_| {});
        let mut g = kit.grant(&kit.team, &sub);
        g.cgroup_prefixes = prefixes;
        g.max_ttl_seconds = ttl;
        let d2 = Delegation::extend(Some(&d1), g, &kit.team).unwrap();
        prop_assert_eq!(Delegation::parse(&d2.to_toml()).unwrap(), d2.clone());
        let ok = verify::verify_delegation(&d2, &kit.policy, &|_| false, kit.system_now());
        prop_assert!(ok.is_ok(), "{:?}", ok);
    }
}
