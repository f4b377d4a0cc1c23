//! Deciding whether a permit is valid: signatures, chain of authority, scope,
//! lifetime, time window, policy version, retirement and revocation.
use std::{collections::HashSet, fmt, sync::Mutex, time::SystemTime};

use ed25519_dalek::{Signature, VerifyingKey};

use super::{
    host::{HostCheck, HostIdentity},
    policy::{RootKey, TrustPolicy},
};
use crate::{
    artifact::{Artifact, Body},
    vocab::{
        delegation::{Delegation, DelegationLink, Grant, LinkDigest, NO_PARENT},
        fields::{join_prefixes, ArtifactId, CgroupPath, Digest},
        hosts::HostBinding,
        keyid::KeyId,
        time::{format_duration, Timestamp},
    },
};

/// What a check is about: the permit itself or one link of its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Permit(ArtifactId),
    /// Link `index` (from 1, root first) of a chain of `of` links.
    Delegation {
        index: usize,
        of: usize,
        id: ArtifactId,
    },
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Permit(id) => write!(f, "permit {id}"),
            Part::Delegation { index, of, id } => write!(f, "delegation {index} of {of} ({id})"),
        }
    }
}

/// Who granted authority: a root key of the trust policy or a delegation link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authority {
    Root(KeyId),
    Delegation { index: usize, of: usize, to: KeyId },
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authority::Root(id) => write!(f, "root key {id}"),
            Authority::Delegation { index, of, to } => {
                write!(f, "delegation {index} of {of} (to key {to})")
            }
        }
    }
}

/// `versions 2 to 3` or `only version 3`.
struct Accepted(u32, u32);

impl fmt::Display for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == self.1 {
            write!(f, "only version {}", self.1)
        } else {
            write!(f, "versions {} to {}", self.0, self.1)
        }
    }
}

/// Why a well-formed permit is not valid. One line each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("issuer key {key_id} is not a trusted root key")]
    UnknownIssuer { key_id: KeyId },
    #[error("key {key_id} is retired by the trust policy")]
    RetiredKey { key_id: KeyId },
    #[error("{part} is signed by key {signer}, but the chain gives authority to key {expected}")]
    BrokenChain {
        part: Part,
        signer: KeyId,
        expected: KeyId,
    },
    #[error("bad signature on {part}")]
    BadSignature { part: Part },
    #[error("{part} is not valid before {not_before}")]
    NotYetValid { part: Part, not_before: Timestamp },
    #[error("{part} expired at {expires}")]
    Expired { part: Part, expires: Timestamp },
    #[error(
        "permit lifetime {} is over the limit of {} set by {authority}",
        format_duration(*.lifetime_seconds),
        format_duration(*.limit_seconds)
    )]
    LifetimeOverLimit {
        lifetime_seconds: u64,
        limit_seconds: u64,
        authority: Authority,
    },
    #[error("permit expires at {expires}, after {authority}, which expires at {limit}")]
    OutlivesDelegation {
        expires: Timestamp,
        limit: Timestamp,
        authority: Authority,
    },
    #[error("cgroup {cgroup} is outside the scope of {authority} ({})", join_prefixes(.allowed))]
    CgroupOutsideScope {
        cgroup: CgroupPath,
        authority: Authority,
        allowed: Vec<CgroupPath>,
    },
    #[error("{part} widens the authority it received from {from}: {what}")]
    DelegationWidens {
        part: Part,
        from: Authority,
        what: String,
    },
    #[error("permit {id} grants executable memory, which {authority} does not allow")]
    ExecMemoryNotDelegated {
        id: ArtifactId,
        authority: Authority,
    },
    #[error("the delegation chain has {len} links; the trust policy allows at most {max}")]
    ChainTooLong { len: usize, max: usize },
    #[error("{part} was issued under trust policy version {version}; this policy accepts {}", Accepted(*.min, *.current))]
    PolicyVersionMismatch {
        part: Part,
        version: u32,
        min: u32,
        current: u32,
    },
    #[error("{part} is revoked")]
    Revoked { part: Part },
    #[error("{part} is bound to other hosts ({binding}); this host: {host}")]
    WrongHost {
        part: Part,
        binding: String,
        host: String,
    },
}

/// A validity window: from `not_before` (inclusive) until `expires` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub not_before: Timestamp,
    pub expires: Timestamp,
}

impl Window {
    /// The instants in both windows.
    pub fn intersect(self, other: Window) -> Window {
        Window {
            not_before: self.not_before.max(other.not_before),
            expires: self.expires.min(other.expires),
        }
    }

    /// Whether no instant is in the window.
    pub fn is_empty(self) -> bool {
        self.expires <= self.not_before
    }
}

/// When every link of a chain is valid: the intersection of their windows
/// (None for no links).
pub fn chain_window(links: &[DelegationLink]) -> Option<Window> {
    links
        .iter()
        .map(|link| Window {
            not_before: link.grant().not_before,
            expires: link.grant().expires,
        })
        .reduce(Window::intersect)
}

/// When a permit can be valid at all: its own window intersected with the
/// window of every link of its chain (a permit is valid only while each link
/// is). Empty when they do not overlap.
pub fn effective_window(artifact: &Artifact) -> Window {
    let own = Window {
        not_before: artifact.validity.not_before,
        expires: artifact.validity.expires,
    };
    chain_window(&artifact.chain).map_or(own, |chain| own.intersect(chain))
}

/// A valid permit: what the daemon needs to enforce it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub id: ArtifactId,
    /// SHA-256 of the binary allowed to run.
    pub digest: Digest,
    /// SHA-256 of each file the permit allows to be mapped executable (its
    /// libraries and loader), not exec'd.
    pub libraries: Vec<Digest>,
    /// The binary's processes may make memory executable (a JIT).
    pub exec_memory: bool,
    /// Canonical cgroup path (`/a/b`).
    pub cgroup: String,
    pub descendants: bool,
    /// Start of the effective window ([`effective_window`]): the latest
    /// `not_before` of the permit and its links.
    pub not_before: SystemTime,
    /// End of the effective window: the earliest `expires` of the permit and
    /// its links.
    pub expires: SystemTime,
    /// The permit's own `validity.not_before`, before its chain narrows it.
    pub permit_not_before: SystemTime,
    /// The permit's own `validity.expires`, before its chain narrows it.
    pub permit_expires: SystemTime,
    /// The root key the authority comes from.
    pub issuer: KeyId,
    /// Key ids from the root to the key that signed the permit.
    pub chain: Vec<KeyId>,
    /// Ids of the delegation links, root first (revoking one revokes the permit).
    pub delegation_ids: Vec<ArtifactId>,
    /// Each link's own `expires`, in the order of `delegation_ids`: after it,
    /// nothing issued under that link verifies.
    pub delegation_expires: Vec<SystemTime>,
    pub policy_version: u32,
    pub requested_by: Option<String>,
    pub on_behalf_of: Option<String>,
    pub reason: Option<String>,
    pub subject_path: Option<String>,
    pub subject_name: Option<String>,
}

/// The authority held at some point of a chain.
#[derive(Clone, Debug)]
pub(crate) struct Limits<'a> {
    who: Authority,
    key: VerifyingKey,
    key_id: KeyId,
    prefixes: &'a [CgroupPath],
    max_ttl_seconds: u64,
    /// Delegations expire; root keys do not (they are retired instead).
    expires: Option<Timestamp>,
    /// May grant executable memory: root keys may, a delegate only when its
    /// link says so.
    exec_memory: bool,
}

impl<'a> Limits<'a> {
    fn root(root: &'a RootKey) -> Self {
        Self {
            who: Authority::Root(root.key_id),
            key: root.key,
            key_id: root.key_id,
            prefixes: &root.cgroup_prefixes,
            max_ttl_seconds: root.max_ttl_seconds,
            expires: None,
            exec_memory: true,
        }
    }

    /// The authority link `index` (0-based) of `of` hands to its delegate.
    pub(crate) fn link(index: usize, of: usize, link: &'a DelegationLink) -> Self {
        let g = link.grant();
        let key_id = link.delegate_key_id();
        Self {
            who: Authority::Delegation {
                index: index + 1,
                of,
                to: key_id,
            },
            key: g.delegate_key,
            key_id,
            prefixes: &g.cgroup_prefixes,
            max_ttl_seconds: g.max_ttl_seconds,
            expires: Some(g.expires),
            exec_memory: g.exec_memory,
        }
    }

    /// Checks that `grant` hands on no more than this authority holds.
    pub(crate) fn check_narrows(&self, grant: &Grant, part: &Part) -> Result<(), VerifyError> {
        let widens = |what: String| {
            Err(VerifyError::DelegationWidens {
                part: part.clone(),
                from: self.who.clone(),
                what,
            })
        };
        if let Some(p) = grant
            .cgroup_prefixes
            .iter()
            .find(|p| !self.prefixes.iter().any(|mine| mine.contains(p)))
        {
            return widens(format!(
                "cgroup prefix {p} is outside {}",
                join_prefixes(self.prefixes)
            ));
        }
        if grant.max_ttl_seconds > self.max_ttl_seconds {
            return widens(format!(
                "max ttl {} is over {}",
                format_duration(grant.max_ttl_seconds),
                format_duration(self.max_ttl_seconds)
            ));
        }
        if let Some(limit) = self.expires.filter(|&limit| grant.expires > limit) {
            return widens(format!("it expires at {}, after {limit}", grant.expires));
        }
        if grant.exec_memory && !self.exec_memory {
            return widens("it lets its delegate grant executable memory".into());
        }
        Ok(())
    }

    /// Checks that a permit's scope and lifetime fit within this authority.
    pub(crate) fn check_permit(&self, body: &Body) -> Result<(), VerifyError> {
        let cgroup = &body.scope.cgroup;
        if !self.prefixes.iter().any(|p| p.contains(cgroup)) {
            return Err(VerifyError::CgroupOutsideScope {
                cgroup: cgroup.clone(),
                authority: self.who.clone(),
                allowed: self.prefixes.to_vec(),
            });
        }
        if body.subject.exec_memory && !self.exec_memory {
            return Err(VerifyError::ExecMemoryNotDelegated {
                id: body.id,
                authority: self.who.clone(),
            });
        }
        let lifetime = body.lifetime_seconds();
        if lifetime > self.max_ttl_seconds {
            return Err(VerifyError::LifetimeOverLimit {
                lifetime_seconds: lifetime,
                limit_seconds: self.max_ttl_seconds,
                authority: self.who.clone(),
            });
        }
        if let Some(limit) = self.expires.filter(|&limit| body.validity.expires > limit) {
            return Err(VerifyError::OutlivesDelegation {
                expires: body.validity.expires,
                limit,
                authority: self.who.clone(),
            });
        }
        Ok(())
    }
}

/// Remembers delegation links whose signatures have been checked, keyed by the
/// link's digest (which covers its message and signature) and the verifying
/// key. Only the signature check is skipped; every other check runs each time.
#[derive(Debug, Default)]
struct LinkCache {
    seen: Mutex<HashSet<(LinkDigest, [u8; 32])>>,
}

/// How many permits [`Verifier::verify_batch`] checks in one batch.
pub const BATCH: usize = 64;

/// Entries kept before the cache starts over.
const LINK_CACHE_CAPACITY: usize = 4096;

impl LinkCache {
    fn contains(&self, digest: &LinkDigest, key: &VerifyingKey) -> bool {
        self.seen
            .lock()
            .map(|s| s.contains(&(*digest, key.to_bytes())))
            .unwrap_or(false)
    }

    fn insert(&self, digest: LinkDigest, key: &VerifyingKey) {
        if let Ok(mut s) = self.seen.lock() {
            if s.len() >= LINK_CACHE_CAPACITY {
                s.clear();
            }
            s.insert((digest, key.to_bytes()));
        }
    }
}

fn check_signature(
    key: &VerifyingKey,
    message: &[u8],
    signature: &Signature,
    part: &Part,
) -> Result<(), VerifyError> {
    key.verify_strict(message, signature)
        .map_err(|_| VerifyError::BadSignature { part: part.clone() })
}

fn check_window(
    now: Timestamp,
    not_before: Timestamp,
    expires: Timestamp,
    part: &Part,
) -> Result<(), VerifyError> {
    if now < not_before {
        return Err(VerifyError::NotYetValid {
            part: part.clone(),
            not_before,
        });
    }
    if now >= expires {
        return Err(VerifyError::Expired {
            part: part.clone(),
            expires,
        });
    }
    Ok(())
}

fn check_version(policy: &TrustPolicy, version: u32, part: &Part) -> Result<(), VerifyError> {
    if policy.accepts_version(version) {
        return Ok(());
    }
    Err(VerifyError::PolicyVersionMismatch {
        part: part.clone(),
        version,
        min: policy.min_version,
        current: policy.version,
    })
}

/// A part bound to hosts may be live only on one of them.
fn check_host(
    host: HostCheck<'_>,
    binding: Option<&HostBinding>,
    part: &Part,
) -> Result<(), VerifyError> {
    match binding {
        Some(b) if !host.allows(b) => Err(VerifyError::WrongHost {
            part: part.clone(),
            binding: b.to_string(),
            host: match host {
                HostCheck::This(h) => h.to_string(),
                HostCheck::Anywhere => "any".into(),
            },
        }),
        _ => Ok(()),
    }
}

fn check_not_retired(policy: &TrustPolicy, key_id: KeyId) -> Result<(), VerifyError> {
    if policy.is_retired(&key_id) {
        return Err(VerifyError::RetiredKey { key_id });
    }
    Ok(())
}

/// Where a walk down a chain ended.
struct ChainEnd<'a> {
    limits: Limits<'a>,
    key_ids: Vec<KeyId>,
    link_ids: Vec<ArtifactId>,
    digests: Vec<LinkDigest>,
}

/// Checks the links of a chain from the root `first_signer` down, and returns
/// the authority its last key holds.
fn walk_chain<'a>(
    links: &'a [DelegationLink],
    first_signer: KeyId,
    policy: &'a TrustPolicy,
    host: HostCheck<'_>,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: Timestamp,
    cache: Option<&LinkCache>,
) -> Result<ChainEnd<'a>, VerifyError> {
    if links.len() > policy.max_chain_length {
        return Err(VerifyError::ChainTooLong {
            len: links.len(),
            max: policy.max_chain_length,
        });
    }
    check_not_retired(policy, first_signer)?;
    let root = policy
        .root(&first_signer)
        .ok_or(VerifyError::UnknownIssuer {
            key_id: first_signer,
        })?;
    let mut end = ChainEnd {
        limits: Limits::root(root),
        key_ids: Vec::with_capacity(links.len() + 1),
        link_ids: Vec::with_capacity(links.len()),
        digests: Vec::with_capacity(links.len()),
    };
    end.key_ids.push(root.key_id);
    let mut parent = NO_PARENT;
    for (i, link) in links.iter().enumerate() {
        let g = link.grant();
        let part = Part::Delegation {
            index: i + 1,
            of: links.len(),
            id: g.id,
        };
        if g.issuer != end.limits.key_id {
            return Err(VerifyError::BrokenChain {
                part,
                signer: g.issuer,
                expected: end.limits.key_id,
            });
        }
        let digest = link.digest(&parent);
        let key = &end.limits.key;
        if !cache.is_some_and(|c| c.contains(&digest, key)) {
            check_signature(key, &g.message(&parent), link.signature(), &part)?;
            if let Some(c) = cache {
                c.insert(digest, key);
            }
        }
        check_version(policy, g.policy_version, &part)?;
        end.limits.check_narrows(g, &part)?;
        let delegate = link.delegate_key_id();
        check_not_retired(policy, delegate)?;
        if revoked(&g.id) {
            return Err(VerifyError::Revoked { part });
        }
        check_window(now, g.not_before, g.expires, &part)?;
        check_host(host, g.hosts.as_ref(), &part)?;
        end.limits = Limits::link(i, links.len(), link);
        end.key_ids.push(delegate);
        end.link_ids.push(g.id);
        end.digests.push(digest);
        parent = digest;
    }
    Ok(end)
}

/// A permit whose chain has been checked and whose own signature is next.
struct Prepared<'a> {
    end: ChainEnd<'a>,
    first_signer: KeyId,
    message: Vec<u8>,
    part: Part,
}

/// Everything up to the permit's own signature: the chain, and that the permit
/// is signed by the key the chain ends with.
fn prepare<'a>(
    artifact: &'a Artifact,
    policy: &'a TrustPolicy,
    host: HostCheck<'_>,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: Timestamp,
    cache: Option<&LinkCache>,
) -> Result<Prepared<'a>, VerifyError> {
    let first_signer = artifact
        .chain
        .first()
        .map_or(artifact.issuer, |l| l.grant().issuer);
    let end = walk_chain(
        &artifact.chain,
        first_signer,
        policy,
        host,
        revoked,
        now,
        cache,
    )?;
    let part = Part::Permit(artifact.id);
    if artifact.issuer != end.limits.key_id {
        return Err(VerifyError::BrokenChain {
            part,
            signer: artifact.issuer,
            expected: end.limits.key_id,
        });
    }
    Ok(Prepared {
        message: artifact.message_with(&end.digests),
        end,
        first_signer,
        part,
    })
}

/// Everything after the permit's signature has been found good.
fn complete(
    artifact: &Artifact,
    policy: &TrustPolicy,
    host: HostCheck<'_>,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: Timestamp,
    prepared: Prepared<'_>,
) -> Result<Verified, VerifyError> {
    let Prepared {
        end,
        first_signer,
        part,
        ..
    } = prepared;
    check_version(policy, artifact.policy_version, &part)?;
    if revoked(&artifact.id) {
        return Err(VerifyError::Revoked { part });
    }
    end.limits.check_permit(artifact)?;
    check_window(
        now,
        artifact.validity.not_before,
        artifact.validity.expires,
        &part,
    )?;
    check_host(host, artifact.hosts.as_ref(), &part)?;
    let window = effective_window(artifact);
    tracing::debug!(id = %artifact.id, cgroup = %artifact.scope.cgroup, not_before = %window.not_before, expires = %window.expires, "permit is valid");
    Ok(Verified {
        id: artifact.id,
        digest: artifact.subject.sha256,
        cgroup: artifact.scope.cgroup.as_str().to_owned(),
        descendants: artifact.scope.descendants,
        not_before: window.not_before.to_system_time(),
        expires: window.expires.to_system_time(),
        permit_not_before: artifact.validity.not_before.to_system_time(),
        permit_expires: artifact.validity.expires.to_system_time(),
        issuer: first_signer,
        chain: end.key_ids,
        delegation_ids: end.link_ids,
        delegation_expires: artifact
            .chain
            .iter()
            .map(|l| l.grant().expires.to_system_time())
            .collect(),
        policy_version: artifact.policy_version,
        requested_by: artifact.provenance.requested_by.clone(),
        on_behalf_of: artifact.provenance.on_behalf_of.clone(),
        reason: artifact.provenance.reason.clone(),
        subject_path: artifact.subject.path.clone(),
        subject_name: artifact.subject.name.clone(),
        libraries: artifact.libraries.iter().map(|l| l.sha256).collect(),
        exec_memory: artifact.subject.exec_memory,
    })
}

fn verify_with(
    artifact: &Artifact,
    policy: &TrustPolicy,
    host: HostCheck<'_>,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: SystemTime,
    cache: Option<&LinkCache>,
) -> Result<Verified, VerifyError> {
    let _span = tracing::debug_span!("verify", id = %artifact.id).entered();
    let now = Timestamp::from_system_time(now);
    let prepared = prepare(artifact, policy, host, revoked, now, cache)?;
    check_signature(
        &prepared.end.limits.key,
        &prepared.message,
        artifact.signature(),
        &prepared.part,
    )?;
    complete(artifact, policy, host, revoked, now, prepared)
}

/// Verifies `artifact` against `policy` at time `now`; `revoked` says whether
/// a permit or delegation id has been revoked. Checks every signature. No
/// host is known: an artifact bound to hosts is refused ([`verify_on`]
/// names the host).
pub fn verify(
    artifact: &Artifact,
    policy: &TrustPolicy,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let host = HostIdentity::unknown();
    verify_with(artifact, policy, HostCheck::This(&host), revoked, now, None)
}

/// [`verify`] on the host `host` says (a binding it does not match is
/// [`VerifyError::WrongHost`]).
pub fn verify_on(
    artifact: &Artifact,
    policy: &TrustPolicy,
    host: HostCheck<'_>,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    verify_with(artifact, policy, host, revoked, now, None)
}

/// A valid delegation chain: the authority its last key holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDelegation {
    /// Key ids from the root to the last delegate.
    pub chain: Vec<KeyId>,
    pub cgroup_prefixes: Vec<CgroupPath>,
    pub max_ttl_seconds: u64,
    pub expires: SystemTime,
    /// The last delegate may issue permits granting executable memory.
    pub exec_memory: bool,
}

/// Verifies a delegation file on its own: every link, as [`verify`] would
/// (no host known: a link bound to hosts is refused).
pub fn verify_delegation(
    delegation: &Delegation,
    policy: &TrustPolicy,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: SystemTime,
) -> Result<VerifiedDelegation, VerifyError> {
    let host = HostIdentity::unknown();
    verify_delegation_on(delegation, policy, HostCheck::This(&host), revoked, now)
}

/// [`verify_delegation`] on the host `host` says.
pub fn verify_delegation_on(
    delegation: &Delegation,
    policy: &TrustPolicy,
    host: HostCheck<'_>,
    revoked: &dyn Fn(&ArtifactId) -> bool,
    now: SystemTime,
) -> Result<VerifiedDelegation, VerifyError> {
    let links = delegation.links();
    let first = links
        .first()
        .map(|l| l.grant().issuer)
        .unwrap_or(KeyId([0; 32]));
    let end = walk_chain(
        links,
        first,
        policy,
        host,
        revoked,
        Timestamp::from_system_time(now),
        None,
    )?;
    let last = delegation.last().grant();
    Ok(VerifiedDelegation {
        chain: end.key_ids,
        cgroup_prefixes: last.cgroup_prefixes.clone(),
        max_ttl_seconds: last.max_ttl_seconds,
        expires: last.expires.to_system_time(),
        exec_memory: last.exec_memory,
    })
}

/// Verifies many permits against one policy, remembering which delegation
/// links it has already checked so that permits sharing a chain cost one
/// signature check each. Safe to share between threads.
#[derive(Debug)]
pub struct Verifier {
    policy: TrustPolicy,
    /// The host permits are verified for.
    host: HostIdentity,
    cache: LinkCache,
}

impl Verifier {
    /// A verifier that knows no host: artifacts bound to hosts are refused.
    pub fn new(policy: TrustPolicy) -> Self {
        Self::for_host(policy, HostIdentity::unknown())
    }

    /// A verifier for permits to enforce on `host`.
    pub fn for_host(policy: TrustPolicy, host: HostIdentity) -> Self {
        Self {
            policy,
            host,
            cache: LinkCache::default(),
        }
    }

    pub fn policy(&self) -> &TrustPolicy {
        &self.policy
    }

    pub fn host(&self) -> &HostIdentity {
        &self.host
    }

    /// Verifies many permits, giving each the result [`Verifier::verify`]
    /// would, at up to twice the speed: the permits' own signatures are
    /// checked together with ed25519 batch verification, in groups of
    /// [`BATCH`]. When a group fails, its signatures are checked one by one to
    /// find the bad ones.
    ///
    /// Batch verification accepts every signature that single verification
    /// accepts. The converse fails only for signatures built on purpose with
    /// small-order components, which only the holder of the signing key can
    /// make: such a signature is no forgery, the key holder could have signed
    /// normally.
    pub fn verify_batch<'a>(
        &self,
        artifacts: impl IntoIterator<Item = &'a Artifact>,
        revoked: &dyn Fn(&ArtifactId) -> bool,
        now: SystemTime,
    ) -> Vec<Result<Verified, VerifyError>> {
        let artifacts: Vec<&Artifact> = artifacts.into_iter().collect();
        let _span = tracing::debug_span!("verify_batch", n = artifacts.len()).entered();
        let t = Timestamp::from_system_time(now);
        let mut results = Vec::with_capacity(artifacts.len());
        for group in artifacts.chunks(BATCH) {
            let prepared: Vec<_> = group
                .iter()
                .map(|a| {
                    prepare(
                        a,
                        &self.policy,
                        HostCheck::This(&self.host),
                        revoked,
                        t,
                        Some(&self.cache),
                    )
                })
                .collect();
            let (mut messages, mut signatures, mut keys) = (Vec::new(), Vec::new(), Vec::new());
            for (a, p) in group.iter().zip(&prepared) {
                if let Ok(p) = p {
                    messages.push(p.message.as_slice());
                    signatures.push(*a.signature());
                    keys.push(p.end.limits.key);
                }
            }
            let all_good = ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
            for (a, p) in group.iter().zip(prepared) {
                results.push(p.and_then(|p| {
                    if !all_good {
                        check_signature(&p.end.limits.key, &p.message, a.signature(), &p.part)?;
                    }
                    complete(a, &self.policy, HostCheck::This(&self.host), revoked, t, p)
                }));
            }
        }
        results
    }

    /// Same result as [`verify`], faster for permits with a known chain.
    pub fn verify(
        &self,
        artifact: &Artifact,
        revoked: &dyn Fn(&ArtifactId) -> bool,
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        verify_with(
            artifact,
            &self.policy,
            HostCheck::This(&self.host),
            revoked,
            now,
            Some(&self.cache),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        trust::{keys::generate, testkit::*},
        vocab::hosts::MachineId,
    };

    #[test]
    fn a_root_signed_permit_is_valid() {
        let kit = Kit::new();
        let a = kit.root_permit(|_| {});
        let v = kit.verify(&a).unwrap();
        assert_eq!(v.id, a.id);
        assert_eq!(v.digest, [7; 32]);
        assert_eq!(v.cgroup, "/jobs/a");
        assert!(v.descendants);
        assert_eq!(v.issuer, KeyId::of(&kit.root.verifying_key()));
        assert_eq!(v.chain, vec![v.issuer]);
        assert_eq!(v.expires, kit.at(HOUR as i64).to_system_time());
        assert_eq!(v.requested_by.as_deref(), Some("alice"));
        assert_eq!(v.subject_name.as_deref(), Some("make"));
        // Valid at not_before, not at expires.
        assert!(kit.verify_at(&a, kit.at(HOUR as i64 - 1)).is_ok());
    }

    #[test]
    fn a_delegated_permit_is_valid_and_names_its_chain() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let a = kit.team_permit(&d, |_| {});
        let v = kit.verify(&a).unwrap();
        let root = KeyId::of(&kit.root.verifying_key());
        let team = KeyId::of(&kit.team.verifying_key());
        assert_eq!(v.issuer, root);
        assert_eq!(v.chain, vec![root, team]);
        assert_eq!(v.delegation_ids, vec![d.links()[0].grant().id]);
        let verified = verify_delegation(&d, &kit.policy, &|_| false, kit.system_now()).unwrap();
        assert_eq!(verified.chain, vec![root, team]);
        assert_eq!(verified.max_ttl_seconds, DAY);
    }

    #[test]
    fn a_two_link_chain_is_valid_when_each_link_narrows() {
        let mut kit = Kit::new();
        kit.policy.max_chain_length = 2;
        let sub = generate();
        let d1 = kit.delegation(|_| {});
        let mut g = kit.grant(&kit.team, &sub);
        g.cgroup_prefixes = vec![cg("/jobs/a/b")];
        g.max_ttl_seconds = HOUR;
        let d2 = Delegation::extend(Some(&d1), g, &kit.team).unwrap();
        let mut b = kit.body(&sub);
        b.chain = d2.links().to_vec();
        b.scope.cgroup = cg("/jobs/a/b/c");
        let a = b.sign(&sub).unwrap();
        assert_eq!(kit.verify(&a).unwrap().chain.len(), 3);
    }

    #[test]
    fn unknown_issuer() {
        let kit = Kit::new();
        let stranger = generate();
        let a = kit.body(&stranger).sign(&stranger).unwrap();
        let e = kit.verify(&a).unwrap_err();
        assert_eq!(
            e,
            VerifyError::UnknownIssuer {
                key_id: KeyId::of(&stranger.verifying_key())
            }
        );
        assert!(e.to_string().contains("is not a trusted root key"), "{e}");
    }

    #[test]
    fn retired_root_and_retired_delegate() {
        let mut kit = Kit::new();
        let d = kit.delegation(|_| {});
        let a = kit.team_permit(&d, |_| {});
        let team = KeyId::of(&kit.team.verifying_key());
        kit.policy.retired.insert(team);
        assert_eq!(
            kit.verify(&a).unwrap_err(),
            VerifyError::RetiredKey { key_id: team }
        );
        let root = KeyId::of(&kit.root.verifying_key());
        kit.policy.retired.insert(root);
        let e = kit.verify(&kit.root_permit(|_| {})).unwrap_err();
        assert_eq!(e, VerifyError::RetiredKey { key_id: root });
        assert!(e.to_string().contains("retired"), "{e}");
    }

    #[test]
    fn broken_chain() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        // The root signs a permit but attaches a delegation to the team key.
        let mut b = kit.body(&kit.root);
        b.chain = d.links().to_vec();
        let a = b.sign(&kit.root).unwrap();
        let e = kit.verify(&a).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::BrokenChain {
                    part: Part::Permit(_),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_signature_on_permit_and_on_link() {
        let kit = Kit::new();
        let a = kit.root_permit(|_| {});
        let forged = Artifact::parse(&a.to_toml().replace("/jobs/a", "/jobs/b")).unwrap();
        let e = kit.verify(&forged).unwrap_err();
        assert_eq!(
            e,
            VerifyError::BadSignature {
                part: Part::Permit(a.id)
            }
        );
        assert_eq!(e.to_string(), format!("bad signature on permit {}", a.id));

        let d = kit.delegation(|_| {});
        let a = kit.team_permit(&d, |_| {});
        let forged = a
            .to_toml()
            .replace("max_ttl_seconds = 86400", "max_ttl_seconds = 86401");
        let e = kit.verify(&Artifact::parse(&forged).unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::BadSignature {
                    part: Part::Delegation { index: 1, .. }
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn not_yet_valid_and_expired() {
        let kit = Kit::new();
        let a = kit.root_permit(|_| {});
        let e = kit.verify_at(&a, kit.at(-1)).unwrap_err();
        assert_eq!(
            e,
            VerifyError::NotYetValid {
                part: Part::Permit(a.id),
                not_before: kit.now
            }
        );
        let e = kit.verify_at(&a, kit.at(HOUR as i64)).unwrap_err();
        assert_eq!(
            e,
            VerifyError::Expired {
                part: Part::Permit(a.id),
                expires: kit.at(HOUR as i64)
            }
        );
        assert!(e.to_string().contains("expired at"), "{e}");

        let d = kit.delegation(|g| g.not_before = kit.at(60));
        let a = kit.team_permit(&d, |_| {});
        let e = kit.verify(&a).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::NotYetValid {
                    part: Part::Delegation { .. },
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_permit_is_in_force_only_where_its_window_overlaps_every_links() {
        let mut kit = Kit::new();
        // The delegation starts in a minute; the permit "from now".
        let d = kit.delegation(|g| g.not_before = kit.at(60));
        let a = kit.team_permit(&d, |_| {});
        assert!(matches!(
            kit.verify(&a),
            Err(VerifyError::NotYetValid {
                part: Part::Delegation { .. },
                ..
            })
        ));
        let v = kit.verify_at(&a, kit.at(60)).unwrap();
        assert_eq!(v.not_before, kit.at(60).to_system_time());
        assert_eq!(v.expires, kit.at(HOUR as i64).to_system_time());
        assert_eq!(v.permit_not_before, kit.system_now());
        assert_eq!(v.permit_expires, v.expires);
        assert_eq!(
            v.delegation_expires,
            vec![kit.at(30 * DAY as i64).to_system_time()]
        );

        // Two links: the latest start and the earliest end of all three win.
        kit.policy.max_chain_length = 2;
        let sub = generate();
        let mut g = kit.grant(&kit.team, &sub);
        g.not_before = kit.at(120);
        g.expires = kit.at(1800);
        g.max_ttl_seconds = HOUR;
        let d2 = Delegation::extend(Some(&d), g, &kit.team).unwrap();
        let mut b = kit.body(&sub);
        b.chain = d2.links().to_vec();
        b.validity.expires = kit.at(1800);
        let a = b.sign(&sub).unwrap();
        let inside = Window {
            not_before: kit.at(120),
            expires: kit.at(1800),
        };
        assert_eq!(effective_window(&a), inside);
        assert!(kit.verify_at(&a, kit.at(119)).is_err());
        let v = kit.verify_at(&a, kit.at(120)).unwrap();
        assert_eq!(v.not_before, inside.not_before.to_system_time());
        assert!(kit.verify_at(&a, kit.at(1799)).is_ok());
        assert!(kit.verify_at(&a, kit.at(1800)).is_err());

        // A permit that outlives a link is bounded by it (and invalid).
        let late = kit.team_permit(&d, |b| b.validity.expires = kit.at(31 * DAY as i64));
        assert_eq!(effective_window(&late).expires, kit.at(30 * DAY as i64));
    }

    #[test]
    fn a_permit_whose_window_misses_its_delegations_is_never_valid() {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.not_before = kit.at(2 * HOUR as i64));
        let a = kit.team_permit(&d, |_| {});
        assert!(effective_window(&a).is_empty());
        for t in [0, HOUR as i64 - 1, 2 * HOUR as i64, 3 * HOUR as i64] {
            assert!(kit.verify_at(&a, kit.at(t)).is_err(), "valid at +{t}s");
        }
    }

    #[test]
    fn lifetime_over_the_limit() {
        let kit = Kit::new();
        let a = kit.root_permit(|b| b.validity.expires = kit.at(8 * DAY as i64));
        let e = kit.verify(&a).unwrap_err();
        assert!(
            matches!(e, VerifyError::LifetimeOverLimit { limit_seconds, .. } if limit_seconds == 7 * DAY),
            "{e}"
        );
        assert!(e.to_string().contains("is over the limit of 7days"), "{e}");
        let d = kit.delegation(|g| g.max_ttl_seconds = HOUR);
        let a = kit.team_permit(&d, |b| b.validity.expires = kit.at(2 * HOUR as i64));
        assert!(matches!(
            kit.verify(&a).unwrap_err(),
            VerifyError::LifetimeOverLimit { .. }
        ));
    }

    #[test]
    fn permit_outliving_its_delegation() {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.expires = kit.at(HOUR as i64));
        let a = kit.team_permit(&d, |b| b.validity.expires = kit.at(2 * HOUR as i64));
        let e = kit.verify(&a).unwrap_err();
        assert!(matches!(e, VerifyError::OutlivesDelegation { .. }), "{e}");
    }

    #[test]
    fn cgroup_outside_scope() {
        let kit = Kit::new();
        let a = kit.root_permit(|b| b.scope.cgroup = cg("/jobsx"));
        let e = kit.verify(&a).unwrap_err();
        assert!(matches!(e, VerifyError::CgroupOutsideScope { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("cgroup /jobsx is outside the scope of root key"),
            "{e}"
        );
        let d = kit.delegation(|_| {});
        let a = kit.team_permit(&d, |b| b.scope.cgroup = cg("/jobs/b"));
        assert!(matches!(
            kit.verify(&a).unwrap_err(),
            VerifyError::CgroupOutsideScope { .. }
        ));
    }

    /// Verifies a permit under `first` and a second link `edit` changed;
    /// asserts that link is refused as widening, and returns the error.
    fn second_link_widens(
        kit: &mut Kit,
        first: &Delegation,
        edit: impl FnOnce(&mut Grant, &Kit),
    ) -> VerifyError {
        kit.policy.max_chain_length = 2;
        let sub = generate();
        let mut g = kit.grant(&kit.team, &sub);
        edit(&mut g, kit);
        let d2 = Delegation::extend(Some(first), g, &kit.team).unwrap();
        let mut b = kit.body(&sub);
        b.chain = d2.links().to_vec();
        let e = kit.verify(&b.sign(&sub).unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::DelegationWidens {
                    part: Part::Delegation { index: 2, .. },
                    ..
                }
            ),
            "{e}"
        );
        e
    }

    #[test]
    fn delegation_widens_authority() {
        let mut kit = Kit::new();
        for edit in [
            (|g: &mut Grant| g.cgroup_prefixes = vec![cg("/")]) as fn(&mut Grant),
            |g| g.max_ttl_seconds = 8 * DAY,
        ] {
            let d = kit.delegation(edit);
            let e = kit.verify(&kit.team_permit(&d, |_| {})).unwrap_err();
            assert!(matches!(e, VerifyError::DelegationWidens { .. }), "{e}");
        }
        // A second link may not outlive the first.
        let d1 = kit.delegation(|_| {});
        let e = second_link_widens(&mut kit, &d1, |g, kit| g.expires = kit.at(31 * DAY as i64));
        assert!(
            e.to_string()
                .contains("widens the authority it received from delegation 1 of 2"),
            "{e}"
        );
    }

    #[test]
    fn exec_memory_needs_an_authority_that_may_grant_it() {
        let mut kit = Kit::new();
        let jit = |b: &mut Body| b.subject.exec_memory = true;
        // A root key may grant it.
        let v = kit.verify(&kit.root_permit(jit)).unwrap();
        assert!(v.exec_memory);
        // A delegate may not, unless its link says so.
        let plain = kit.delegation(|_| {});
        let e = kit.verify(&kit.team_permit(&plain, jit)).unwrap_err();
        assert!(
            matches!(
                &e,
                VerifyError::ExecMemoryNotDelegated {
                    authority: Authority::Delegation {
                        index: 1,
                        of: 1,
                        ..
                    },
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("grants executable memory, which delegation 1 of 1"),
            "{e}"
        );
        let allowed = kit.delegation(|g| g.exec_memory = true);
        assert!(
            kit.verify(&kit.team_permit(&allowed, jit))
                .unwrap()
                .exec_memory
        );
        // Nor may a second link hand on what the first did not give.
        let e = second_link_widens(&mut kit, &plain, |g, _| g.exec_memory = true);
        assert!(e.to_string().contains("grant executable memory"), "{e}");
    }

    #[test]
    fn libraries_need_no_more_than_the_permits_own_scope() {
        use crate::artifact::Library;
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let libs = |b: &mut Body| {
            b.libraries = vec![
                Library {
                    sha256: [1; 32],
                    path: Some("/lib/x86_64-linux-gnu/libc.so.6".into()),
                },
                Library {
                    sha256: [2; 32],
                    path: None,
                },
            ]
        };
        let v = kit.verify(&kit.team_permit(&d, libs)).unwrap();
        assert_eq!(v.libraries, vec![[1; 32], [2; 32]]);
        assert!(!v.exec_memory);
        // They are signed: dropping one breaks the signature.
        let a = kit.team_permit(&d, libs);
        let mut body = a.body().clone();
        body.libraries.pop();
        let e = kit
            .verify(&Artifact::forged(body, *a.signature()))
            .unwrap_err();
        assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
        // And bounded by the permit's own scope: outside it, refused as any permit.
        let e = kit
            .verify(&kit.team_permit(&d, |b| {
                libs(b);
                b.scope.cgroup = cg("/jobs/b");
            }))
            .unwrap_err();
        assert!(matches!(e, VerifyError::CgroupOutsideScope { .. }), "{e}");
    }

    #[test]
    fn chain_too_long() {
        let mut kit = Kit::new();
        kit.policy.max_chain_length = 0;
        let d = kit.delegation(|_| {});
        let e = kit.verify(&kit.team_permit(&d, |_| {})).unwrap_err();
        assert_eq!(e, VerifyError::ChainTooLong { len: 1, max: 0 });
    }

    #[test]
    fn policy_version_mismatch() {
        let mut kit = Kit::new();
        kit.policy.version = 3;
        kit.policy.min_version = 2;
        let a = kit.root_permit(|b| b.policy_version = 1);
        let e = kit.verify(&a).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::PolicyVersionMismatch {
                    version: 1,
                    min: 2,
                    current: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().ends_with("accepts versions 2 to 3"), "{e}");
        let a = kit.root_permit(|b| b.policy_version = 4);
        assert!(matches!(
            kit.verify(&a).unwrap_err(),
            VerifyError::PolicyVersionMismatch { .. }
        ));
        let d = kit.delegation(|g| g.policy_version = 1);
        let a = kit.team_permit(&d, |b| b.policy_version = 3);
        let e = kit.verify(&a).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::PolicyVersionMismatch {
                    part: Part::Delegation { .. },
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn revoked_permit_and_revoked_delegation() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let a = kit.team_permit(&d, |_| {});
        let permit_id = a.id;
        let e = verify(&a, &kit.policy, &|id| *id == permit_id, kit.system_now()).unwrap_err();
        assert_eq!(
            e,
            VerifyError::Revoked {
                part: Part::Permit(a.id)
            }
        );
        let link_id = d.links()[0].grant().id;
        let e = verify(&a, &kit.policy, &|id| *id == link_id, kit.system_now()).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Revoked {
                    part: Part::Delegation { .. }
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn the_caching_verifier_agrees_and_still_checks_everything() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let verifier = Verifier::new(kit.policy.clone());
        let good = kit.team_permit(&d, |_| {});
        for _ in 0..2 {
            assert_eq!(
                verifier.verify(&good, &|_| false, kit.system_now()),
                kit.verify(&good)
            );
        }
        // A cached link does not excuse a bad permit signature, a later
        // expiry, or a forged link.
        let forged = Artifact::parse(&good.to_toml().replace("\"alice\"", "\"mallory\"")).unwrap();
        assert!(matches!(
            verifier.verify(&forged, &|_| false, kit.system_now()),
            Err(VerifyError::BadSignature { .. })
        ));
        let late = kit.at(31 * DAY as i64).to_system_time();
        assert!(matches!(
            verifier.verify(&good, &|_| false, late),
            Err(VerifyError::Expired { .. })
        ));
        let link_forged = good
            .to_toml()
            .replace("max_ttl_seconds = 86400", "max_ttl_seconds = 86399");
        let e = verifier.verify(
            &Artifact::parse(&link_forged).unwrap(),
            &|_| false,
            kit.system_now(),
        );
        assert!(
            matches!(
                e,
                Err(VerifyError::BadSignature {
                    part: Part::Delegation { .. }
                })
            ),
            "{e:?}"
        );
        assert_eq!(verifier.policy(), &kit.policy);
    }

    #[test]
    fn batch_verification_gives_the_single_results() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let verifier = Verifier::new(kit.policy.clone());
        let mut permits: Vec<Artifact> = (0..BATCH + 10)
            .map(|i| {
                if i % 2 == 0 {
                    kit.root_permit(|_| {})
                } else {
                    kit.team_permit(&d, |_| {})
                }
            })
            .collect();
        let all = verifier.verify_batch(&permits, &|_| false, kit.system_now());
        assert!(all.iter().all(Result::is_ok));
        // Spoil some: a forged field, an expired permit, a stranger's key.
        permits[3] =
            Artifact::parse(&permits[3].to_toml().replace("\"alice\"", "\"eve\"")).unwrap();
        permits[8] = kit.root_permit(|b| {
            b.validity.not_before = kit.at(-(2 * HOUR as i64));
            b.validity.expires = kit.at(-(HOUR as i64));
        });
        let stranger = generate();
        permits[BATCH + 1] = kit.body(&stranger).sign(&stranger).unwrap();
        let batch = verifier.verify_batch(&permits, &|_| false, kit.system_now());
        let single: Vec<_> = permits.iter().map(|a| kit.verify(a)).collect();
        assert_eq!(batch, single);
        assert!(matches!(batch[3], Err(VerifyError::BadSignature { .. })));
        assert!(matches!(batch[8], Err(VerifyError::Expired { .. })));
        assert!(matches!(
            batch[BATCH + 1],
            Err(VerifyError::UnknownIssuer { .. })
        ));
        assert_eq!(batch.iter().filter(|r| r.is_err()).count(), 3);
    }

    fn bound(ids: &[u8], labels: &[&str]) -> Option<HostBinding> {
        Some(
            HostBinding::new(
                ids.iter().map(|b| MachineId([*b; 16])).collect(),
                labels.iter().map(|l| l.parse().unwrap()).collect(),
            )
            .unwrap(),
        )
    }

    fn host(id: Option<u8>, labels: &[&str]) -> HostIdentity {
        HostIdentity {
            machine_id: id.map(|b| MachineId([b; 16])),
            labels: labels.iter().map(|l| l.parse().unwrap()).collect(),
        }
    }

    fn verify_here(kit: &Kit, a: &Artifact, h: &HostIdentity) -> Result<Verified, VerifyError> {
        verify_on(
            a,
            &kit.policy,
            HostCheck::This(h),
            &|_| false,
            kit.system_now(),
        )
    }

    #[test]
    fn a_bound_permit_is_valid_only_on_its_hosts() {
        let kit = Kit::new();
        let a = kit.root_permit(|b| b.hosts = bound(&[1], &["build"]));
        assert!(verify_here(&kit, &a, &host(Some(1), &[])).is_ok());
        assert!(verify_here(&kit, &a, &host(Some(2), &["build", "x"])).is_ok());
        let e = verify_here(&kit, &a, &host(Some(2), &["eu"])).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::WrongHost {
                    part: Part::Permit(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("bound to other hosts"), "{e}");
        assert!(e.to_string().contains("labels eu"), "{e}");
        // A verifier told no host refuses it; an unbound permit is valid anywhere.
        assert!(matches!(kit.verify(&a), Err(VerifyError::WrongHost { .. })));
        let unbound = kit.root_permit(|_| {});
        assert!(verify_here(&kit, &unbound, &host(None, &[])).is_ok());
        assert!(kit.verify(&unbound).is_ok());
        // Issuers check anywhere.
        assert!(verify_on(
            &a,
            &kit.policy,
            HostCheck::Anywhere,
            &|_| false,
            kit.system_now()
        )
        .is_ok());
        // The binding is signed: taking it out breaks the signature.
        let text = a.to_toml();
        let stripped: Vec<&str> = text
            .lines()
            .filter(|l| {
                !["[hosts]", "machine_ids =", "labels ="]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .collect();
        let stripped = stripped.join("\n");
        assert!(!stripped.contains("[hosts]"), "{stripped}");
        let stripped = Artifact::parse(&stripped).unwrap();
        assert_eq!(stripped.hosts, None);
        assert!(matches!(
            verify_here(&kit, &stripped, &host(Some(1), &[])),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_bound_delegation_narrows_every_permit_under_it() {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.hosts = bound(&[], &["eu"]));
        let unbound = kit.team_permit(&d, |_| {});
        let build = kit.team_permit(&d, |b| b.hosts = bound(&[], &["build"]));
        let eu = host(None, &["eu"]);
        let both = host(None, &["eu", "build"]);
        assert!(verify_here(&kit, &unbound, &eu).is_ok());
        let e = verify_here(&kit, &unbound, &host(None, &["build"])).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::WrongHost {
                    part: Part::Delegation { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(
            verify_here(&kit, &build, &eu),
            Err(VerifyError::WrongHost {
                part: Part::Permit(_),
                ..
            })
        ));
        assert!(verify_here(&kit, &build, &both).is_ok());
        let verifier = Verifier::for_host(kit.policy.clone(), eu.clone());
        let batch = verifier.verify_batch([&unbound, &build], &|_| false, kit.system_now());
        assert!(batch[0].is_ok());
        assert!(matches!(batch[1], Err(VerifyError::WrongHost { .. })));
        assert_eq!(verifier.host(), &eu);
        assert!(verify_delegation_on(
            &d,
            &kit.policy,
            HostCheck::This(&eu),
            &|_| false,
            kit.system_now()
        )
        .is_ok());
        assert!(verify_delegation(&d, &kit.policy, &|_| false, kit.system_now()).is_err());
        // The link's binding round-trips through the delegation file.
        assert_eq!(Delegation::parse(&d.to_toml()).unwrap(), d);
        assert_eq!(Artifact::parse(&build.to_toml()).unwrap(), build);
    }

    #[test]
    fn error_messages_are_single_lines() {
        let kit = Kit::new();
        let id = ArtifactId::random();
        let key_id = KeyId::of(&kit.root.verifying_key());
        let part = Part::Permit(id);
        let errors = [
            VerifyError::UnknownIssuer { key_id },
            VerifyError::RetiredKey { key_id },
            VerifyError::BrokenChain {
                part: part.clone(),
                signer: key_id,
                expected: key_id,
            },
            VerifyError::BadSignature { part: part.clone() },
            VerifyError::NotYetValid {
                part: part.clone(),
                not_before: kit.now,
            },
            VerifyError::Expired {
                part: part.clone(),
                expires: kit.now,
            },
            VerifyError::LifetimeOverLimit {
                lifetime_seconds: 2,
                limit_seconds: 1,
                authority: Authority::Root(key_id),
            },
            VerifyError::OutlivesDelegation {
                expires: kit.now,
                limit: kit.now,
                authority: Authority::Delegation {
                    index: 1,
                    of: 1,
                    to: key_id,
                },
            },
            VerifyError::CgroupOutsideScope {
                cgroup: cg("/x"),
                authority: Authority::Root(key_id),
                allowed: vec![cg("/y")],
            },
            VerifyError::ExecMemoryNotDelegated {
                id,
                authority: Authority::Root(key_id),
            },
            VerifyError::DelegationWidens {
                part: part.clone(),
                from: Authority::Root(key_id),
                what: "x".into(),
            },
            VerifyError::ChainTooLong { len: 3, max: 2 },
            VerifyError::PolicyVersionMismatch {
                part: part.clone(),
                version: 1,
                min: 2,
                current: 2,
            },
            VerifyError::WrongHost {
                part: part.clone(),
                binding: "labels a".into(),
                host: "no machine id, no labels".into(),
            },
            VerifyError::Revoked { part },
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.is_empty(), "{s}");
        }
    }

    proptest::proptest! {
        /// A delegated permit verifies at exactly the instants of its
        /// effective window.
        #[test]
        fn valid_exactly_in_the_effective_window(
            link_start in -7200i64..7200,
            link_length in 1i64..7200,
            permit_start in -7200i64..7200,
            permit_length in 1i64..3600,
            at in -10_000i64..10_000,
        ) {
            let kit = Kit::new();
            let d = kit.delegation(|g| {
                g.not_before = kit.at(link_start);
                g.expires = kit.at(link_start + link_length);
            });
            let a = kit.team_permit(&d, |b| {
                b.validity.not_before = kit.at(permit_start);
                b.validity.expires = kit.at(permit_start + permit_length);
            });
            let w = effective_window(&a);
            let t = kit.at(at);
            let outlives = a.validity.expires > d.last().grant().expires;
            let inside = w.not_before <= t && t < w.expires;
            match kit.verify_at(&a, t) {
                Ok(v) => {
                    proptest::prop_assert!(inside && !outlives);
                    proptest::prop_assert_eq!(v.not_before, w.not_before.to_system_time());
                    proptest::prop_assert_eq!(v.expires, w.expires.to_system_time());
                }
                Err(e) => proptest::prop_assert!(!inside || outlives, "{}", e),
            }
        }
    }
}
