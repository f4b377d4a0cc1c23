//! Keys, policies, delegations and permits for tests.
use std::time::SystemTime;

use ed25519_dalek::SigningKey;

use super::{
    keys::generate,
    policy::{RootKey, TrustPolicy},
    verify::{verify, Verified, VerifyError},
};
use crate::{
    artifact::{Artifact, Body, Provenance, Scope, Subject, Validity},
    vocab::{
        delegation::{Delegation, Grant},
        fields::{ArtifactId, CgroupPath},
        keyid::KeyId,
        time::Timestamp,
    },
};

pub(crate) const HOUR: u64 = 3_600;
pub(crate) const DAY: u64 = 86_400;

pub(crate) fn cg(p: &str) -> CgroupPath {
    CgroupPath::normalize(p).unwrap()
}

/// A root key trusted for `/jobs` with a 7-day limit, a team key, and "now".
pub(crate) struct Kit {
    pub root: SigningKey,
    pub team: SigningKey,
    pub policy: TrustPolicy,
    pub now: Timestamp,
}

impl Kit {
    pub fn new() -> Self {
        let root = generate();
        let policy = TrustPolicy::new(
            1,
            vec![RootKey::new(
                Some("root".into()),
                root.verifying_key(),
                vec![cg("/jobs")],
                7 * DAY,
            )],
        );
        Self {
            root,
            team: generate(),
            policy,
            now: Timestamp::from_unix(1_750_000_000).unwrap(),
        }
    }

    pub fn at(&self, offset: i64) -> Timestamp {
        Timestamp::from_unix(self.now.unix().saturating_add_signed(offset)).unwrap()
    }

    /// A permit body for `/jobs/a`, valid for an hour from now, issued by `key`.
    pub fn body(&self, key: &SigningKey) -> Body {
        Body {
            id: ArtifactId::random(),
            issued_at: self.now,
            policy_version: 1,
            issuer: KeyId::of(&key.verifying_key()),
            subject: Subject {
                sha256: [7; 32],
                path: Some("/usr/bin/make".into()),
                name: Some("make".into()),
                exec_memory: false,
            },
            scope: Scope {
                cgroup: cg("/jobs/a"),
                descendants: true,
            },
            validity: Validity {
                not_before: self.now,
                expires: self.at(HOUR as i64),
            },
            provenance: Provenance {
                requested_by: Some("alice".into()),
                on_behalf_of: Some("ops".into()),
                reason: Some("nightly build".into()),
            },
            libraries: Vec::new(),
            chain: Vec::new(),
            hosts: None,
        }
    }

    /// A grant from `from` to `to` for `/jobs/a`, 1 day max, valid 30 days.
    pub fn grant(&self, from: &SigningKey, to: &SigningKey) -> Grant {
        Grant {
            id: ArtifactId::random(),
            issued_at: self.now,
            policy_version: 1,
            issuer: KeyId::of(&from.verifying_key()),
            delegate_key: to.verifying_key(),
            cgroup_prefixes: vec![cg("/jobs/a")],
            max_ttl_seconds: DAY,
            not_before: self.now,
            expires: self.at(30 * DAY as i64),
            exec_memory: false,
            hosts: None,
        }
    }

    /// root -> team, with `edit` applied to the grant.
    pub fn delegation(&self, edit: impl FnOnce(&mut Grant)) -> Delegation {
        let mut g = self.grant(&self.root, &self.team);
        edit(&mut g);
        Delegation::extend(None, g, &self.root).unwrap()
    }

    /// A permit signed by the root key.
    pub fn root_permit(&self, edit: impl FnOnce(&mut Body)) -> Artifact {
        let mut b = self.body(&self.root);
        edit(&mut b);
        b.sign(&self.root).unwrap()
    }

    /// A permit signed by the team key through `delegation`.
    pub fn team_permit(&self, delegation: &Delegation, edit: impl FnOnce(&mut Body)) -> Artifact {
        let mut b = self.body(&self.team);
        b.chain = delegation.links().to_vec();
        edit(&mut b);
        b.sign(&self.team).unwrap()
    }

    pub fn verify(&self, a: &Artifact) -> Result<Verified, VerifyError> {
        self.verify_at(a, self.now)
    }

    pub fn verify_at(&self, a: &Artifact, t: Timestamp) -> Result<Verified, VerifyError> {
        verify(a, &self.policy, &|_| false, t.to_system_time())
    }

    pub fn system_now(&self) -> SystemTime {
        self.now.to_system_time()
    }
}
