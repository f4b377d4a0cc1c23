//! Delegations: a key hands part of its authority to another key.
//!
//! A delegation file is a chain of links, root first. The first link is signed
//! by a root key of the trust policy; each later link by the key the previous
//! link delegated to. Each link names the key it delegates to and the limits it
//! grants (cgroup prefixes, maximum permit lifetime, its own validity window),
//! and its signature also covers the digest of the link before it, so links
//! cannot be reordered or moved into another chain.
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use toml::Spanned;

use super::{
    code::{link_extension, parse_exec_memory},
    encoding::Encoder,
    fields::{self, parse_hex, parse_id, ArtifactId, CgroupPath},
    hosts::{HostBinding, RawHosts},
    keyid::{parse_key_id, parse_public_key, KeyId},
    text::{self, conv, ArtifactError, Doc, FileError, Kind, Writer, VERSION},
    time::{format_duration, Timestamp},
};

/// Domain string that starts every link's signed message.
pub const LINK_DOMAIN: &str = "authz-delegation";
/// Most links any file may carry (trust policies allow far fewer).
pub const MAX_LINKS: usize = 16;

/// SHA-256 of a link's signed message followed by its signature.
pub type LinkDigest = [u8; 32];
/// The "previous link" digest of a chain's first link.
pub const NO_PARENT: LinkDigest = [0; 32];

/// What one link grants: the signed content of a delegation link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Unique id; revoking it revokes every permit issued under this link.
    pub id: ArtifactId,
    pub issued_at: Timestamp,
    /// Trust-policy version this delegation was issued under.
    pub policy_version: u32,
    /// Key id of the key that signs this link.
    pub issuer: KeyId,
    /// The key receiving the authority.
    pub delegate_key: VerifyingKey,
    /// Cgroups (and their descendants) the delegate may issue permits for.
    pub cgroup_prefixes: Vec<CgroupPath>,
    /// Longest lifetime (`expires - not_before`) of a permit the delegate may issue.
    pub max_ttl_seconds: u64,
    pub not_before: Timestamp,
    pub expires: Timestamp,
    /// The delegate may issue permits that grant executable memory (and
    /// delegate that on). Only an authority that has it can grant it.
    pub exec_memory: bool,
    /// The hosts everything under this link may be live on; None: any host.
    pub hosts: Option<HostBinding>,
}

/// A signed [`Grant`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationLink {
    grant: Grant,
    signature: Signature,
}

impl Grant {
    /// Checks the limits every link must respect on its own.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        let err = |field: &str, problem: &str| {
            Err(ArtifactError::field(Kind::Delegation, field, problem))
        };
        if self.cgroup_prefixes.is_empty() {
            return err("cgroup_prefixes", "must list at least one cgroup prefix");
        }
        if self.cgroup_prefixes.len() > fields::MAX_PREFIXES {
            return err("cgroup_prefixes", "too many cgroup prefixes");
        }
        if self.max_ttl_seconds == 0 {
            return err("max_ttl_seconds", "must be positive");
        }
        if self.expires <= self.not_before {
            return err("expires", "must be later than not_before");
        }
        Ok(())
    }

    /// The canonical message this link's signature covers, given the digest of
    /// the previous link ([`NO_PARENT`] for the first).
    pub fn message(&self, parent: &LinkDigest) -> Vec<u8> {
        let mut e = Encoder::new(LINK_DOMAIN, VERSION);
        e.fixed(parent)
            .fixed(&self.id.0)
            .time(self.issued_at)
            .u32(self.policy_version)
            .fixed(&self.issuer.0)
            .fixed(self.delegate_key.as_bytes())
            .count(self.cgroup_prefixes.len());
        for p in &self.cgroup_prefixes {
            e.str(p.as_str());
        }
        e.u64(self.max_ttl_seconds)
            .time(self.not_before)
            .time(self.expires);
        link_extension(&mut e, self.exec_memory);
        // Appended only when present: unbound links sign what they always did.
        if let Some(hosts) = &self.hosts {
            hosts.encode(&mut e);
        }
        e.finish()
    }

    /// Signs this grant as the link after `parent` (None: the first link).
    pub fn sign(
        self,
        parent: &LinkDigest,
        key: &SigningKey,
    ) -> Result<DelegationLink, ArtifactError> {
        self.validate()?;
        if self.issuer != KeyId::of(&key.verifying_key()) {
            return Err(ArtifactError::field(
                Kind::Delegation,
                "issuer",
                "is not the id of the signing key",
            ));
        }
        let signature = key.sign(&self.message(parent));
        Ok(DelegationLink {
            grant: self,
            signature,
        })
    }
}

impl DelegationLink {
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Key id of the key this link delegates to.
    pub fn delegate_key_id(&self) -> KeyId {
        KeyId::of(&self.grant.delegate_key)
    }

    /// This link's digest, which the next link and the permit sign.
    pub fn digest(&self, parent: &LinkDigest) -> LinkDigest {
        let mut h = Sha256::new();
        h.update(self.grant.message(parent));
        h.update(self.signature.to_bytes());
        h.finalize().into()
    }
}

/// The digest of each link of `links`, root first.
pub fn chain_digests(links: &[DelegationLink]) -> Vec<LinkDigest> {
    let mut out = Vec::with_capacity(links.len());
    let mut parent = NO_PARENT;
    for link in links {
        parent = link.digest(&parent);
        out.push(parent);
    }
    out
}

/// One `[[delegation]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLink {
    id: Spanned<String>,
    issued_at: Spanned<String>,
    policy_version: Spanned<i64>,
    issuer: Spanned<String>,
    delegate_key: Spanned<String>,
    cgroup_prefixes: Spanned<Vec<String>>,
    max_ttl_seconds: Spanned<i64>,
    not_before: Spanned<String>,
    expires: Spanned<String>,
    exec_memory: Option<Spanned<bool>>,
    signature: Spanned<String>,
    hosts: Option<RawHosts>,
}

/// A signature in its canonical spelling: 128 lowercase hex digits.
pub(crate) fn parse_signature(s: &str) -> Result<Signature, String> {
    parse_hex::<64>(s).map(|b| Signature::from_bytes(&b))
}

/// Turns `[[delegation]]` tables into links, naming `delegation[N].field`
/// (N from 1, root first) in errors.
pub(crate) fn parse_links(
    doc: &Doc<'_>,
    raw: &Spanned<Vec<RawLink>>,
) -> Result<Vec<DelegationLink>, ArtifactError> {
    if raw.get_ref().len() > MAX_LINKS {
        return Err(doc.err(
            "delegation",
            Some(raw.span()),
            format!("more than {MAX_LINKS} links"),
        ));
    }
    let mut links = Vec::with_capacity(raw.get_ref().len());
    for (i, r) in raw.get_ref().iter().enumerate() {
        let f = |name: &str| format!("delegation[{}].{name}", i + 1);
        let prefixes = doc.get(&f("cgroup_prefixes"), &r.cgroup_prefixes, |v| {
            if v.len() > fields::MAX_PREFIXES {
                return Err(format!("more than {} prefixes", fields::MAX_PREFIXES));
            }
            v.iter().map(|p| CgroupPath::parse_canonical(p)).collect()
        })?;
        let grant = Grant {
            id: doc.get(&f("id"), &r.id, |s| parse_id(s))?,
            issued_at: doc.get(&f("issued_at"), &r.issued_at, conv::time)?,
            policy_version: doc.get(&f("policy_version"), &r.policy_version, conv::u32)?,
            issuer: doc.get(&f("issuer"), &r.issuer, |s| parse_key_id(s))?,
            delegate_key: doc.get(&f("delegate_key"), &r.delegate_key, |s| parse_public_key(s))?,
            cgroup_prefixes: prefixes,
            max_ttl_seconds: doc.get(
                &f("max_ttl_seconds"),
                &r.max_ttl_seconds,
                conv::positive_u64,
            )?,
            not_before: doc.get(&f("not_before"), &r.not_before, conv::time)?,
            expires: doc.get(&f("expires"), &r.expires, conv::time)?,
            exec_memory: parse_exec_memory(doc, &f("exec_memory"), &r.exec_memory)?,
            hosts: r
                .hosts
                .as_ref()
                .map(|h| h.parse(doc, &f("hosts")))
                .transpose()?,
        };
        if let Err(ArtifactError::Field { field, problem, .. }) = grant.validate() {
            let span = match field.as_str() {
                "cgroup_prefixes" => r.cgroup_prefixes.span(),
                _ => r.expires.span(),
            };
            return Err(doc.err(&f(&field), Some(span), problem));
        }
        let signature = doc.get(&f("signature"), &r.signature, |s| parse_signature(s))?;
        links.push(DelegationLink { grant, signature });
    }
    Ok(links)
}

/// Writes `links` as `[[delegation]]` tables.
pub(crate) fn write_links(w: &mut Writer, links: &[DelegationLink]) {
    for (i, link) in links.iter().enumerate() {
        let g = &link.grant;
        w.array_table("delegation");
        w.comment(&format!(
            "link {} of {}: key {} delegates to key {}",
            i + 1,
            links.len(),
            g.issuer.short(),
            link.delegate_key_id().short()
        ));
        w.comment(&format!(
            "permits up to {} long",
            format_duration(g.max_ttl_seconds)
        ));
        w.str("id", &g.id.to_string())
            .str("issued_at", &g.issued_at.to_string())
            .int("policy_version", u64::from(g.policy_version))
            .str("issuer", &g.issuer.to_string())
            .str("delegate_key", &hex::encode(g.delegate_key.as_bytes()))
            .str_list(
                "cgroup_prefixes",
                g.cgroup_prefixes.iter().map(CgroupPath::as_str),
            )
            .int("max_ttl_seconds", g.max_ttl_seconds)
            .str("not_before", &g.not_before.to_string())
            .str("expires", &g.expires.to_string());
        if g.exec_memory {
            w.bool("exec_memory", true);
        }
        w.str("signature", &hex::encode(link.signature.to_bytes()));
        if let Some(hosts) = &g.hosts {
            w.table("delegation.hosts");
            hosts.write(w);
        }
    }
}

/// A delegation file: the chain of links that gives a key its authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegation {
    links: Vec<DelegationLink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelegation {
    format: Spanned<String>,
    version: Spanned<i64>,
    delegation: Spanned<Vec<RawLink>>,
}
text::headed!(RawDelegation);

impl Delegation {
    pub fn parse(text: &str) -> Result<Self, ArtifactError> {
        let (doc, raw): (_, RawDelegation) = Doc::parse(Kind::Delegation, text)?;
        let links = parse_links(&doc, &raw.delegation)?;
        if links.is_empty() {
            return Err(doc.err("delegation", Some(raw.delegation.span()), "has no links"));
        }
        Ok(Self { links })
    }

    pub fn read(path: &Path) -> Result<Self, FileError> {
        text::read_parsed(path, Kind::Delegation, Self::parse)
    }

    pub fn to_toml(&self) -> String {
        let mut w = Writer::new(
            Kind::Delegation,
            "authz delegation: authority handed from a root key down to a team key.\n\
             Every field is signed; editing any of them invalidates the chain.",
        );
        write_links(&mut w, &self.links);
        w.finish()
    }

    /// Links, root first (never empty).
    pub fn links(&self) -> &[DelegationLink] {
        &self.links
    }

    /// The chain `links` (root first) as a delegation; None when empty.
    pub fn from_links(links: Vec<DelegationLink>) -> Option<Self> {
        (!links.is_empty()).then_some(Self { links })
    }

    /// The last link: the authority the final key holds.
    pub fn last(&self) -> &DelegationLink {
        // `links` is never empty: parse and extend guarantee one link at least.
        &self.links[self.links.len() - 1]
    }

    /// Adds a link signed by `key` (the root, when `parent` is None; otherwise
    /// the key `parent` delegates to) granting `grant`.
    pub fn extend(
        parent: Option<&Delegation>,
        grant: Grant,
        key: &SigningKey,
    ) -> Result<Self, ArtifactError> {
        let mut links = parent.map(|p| p.links.clone()).unwrap_or_default();
        if links.len() >= MAX_LINKS {
            return Err(ArtifactError::field(
                Kind::Delegation,
                "delegation",
                format!("a chain has at most {MAX_LINKS} links"),
            ));
        }
        let parent_digest = chain_digests(&links).last().copied().unwrap_or(NO_PARENT);
        links.push(grant.sign(&parent_digest, key)?);
        Ok(Self { links })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn generate() -> SigningKey {
        SigningKey::generate(&mut rand_core::OsRng)
    }

    pub(crate) fn grant(
        issuer: &SigningKey,
        to: &VerifyingKey,
        prefixes: &[&str],
        ttl: u64,
    ) -> Grant {
        let now = Timestamp::now();
        Grant {
            id: ArtifactId::random(),
            issued_at: now,
            policy_version: 1,
            issuer: KeyId::of(&issuer.verifying_key()),
            delegate_key: *to,
            cgroup_prefixes: prefixes
                .iter()
                .map(|p| CgroupPath::normalize(p).unwrap())
                .collect(),
            max_ttl_seconds: ttl,
            not_before: now,
            expires: now.checked_add(30 * 86_400).unwrap(),
            exec_memory: false,
            hosts: None,
        }
    }

    #[test]
    fn delegations_round_trip() {
        let (root, team, sub) = (generate(), generate(), generate());
        let d1 = Delegation::extend(
            None,
            grant(&root, &team.verifying_key(), &["/jobs"], 86_400),
            &root,
        )
        .unwrap();
        let d2 = Delegation::extend(
            Some(&d1),
            grant(&team, &sub.verifying_key(), &["/jobs/a"], 3_600),
            &team,
        )
        .unwrap();
        assert_eq!(d2.links().len(), 2);
        let text = d2.to_toml();
        assert_eq!(Delegation::parse(&text).unwrap(), d2);
        let digests = chain_digests(d2.links());
        assert_eq!(digests[0], d2.links()[0].digest(&NO_PARENT));
        assert_eq!(digests[1], d2.last().digest(&digests[0]));
    }

    #[test]
    fn a_link_may_let_its_delegate_grant_exec_memory() {
        let (root, team) = (generate(), generate());
        let g = grant(&root, &team.verifying_key(), &["/jobs"], 60);
        let plain = g.message(&NO_PARENT);
        let mut jit = g.clone();
        jit.exec_memory = true;
        // Without the flag, the bytes a link had before the flag existed;
        // with it, those bytes and the tag.
        let with = jit.message(&NO_PARENT);
        assert_eq!(&with[..plain.len()], &plain[..]);
        assert_eq!(&with[plain.len()..], b"\0\0\0\x0aauthz-code\x01");
        let d = Delegation::extend(None, jit, &root).unwrap();
        let text = d.to_toml();
        assert!(text.contains("\nexec_memory = true\n"), "{text}");
        assert_eq!(Delegation::parse(&text).unwrap(), d);
        let e = Delegation::parse(&text.replace("exec_memory = true", "exec_memory = false"))
            .unwrap_err();
        assert!(e.to_string().contains("delegation[1].exec_memory"), "{e}");
        let d = Delegation::extend(None, g, &root).unwrap();
        assert!(!d.to_toml().contains("exec_memory"));
    }

    #[test]
    fn only_the_issuer_can_sign() {
        let (root, team) = (generate(), generate());
        let g = grant(&root, &team.verifying_key(), &["/"], 60);
        assert!(g.sign(&NO_PARENT, &team).is_err());
    }

    #[test]
    fn bad_links_are_refused_with_their_field() {
        let (root, team) = (generate(), generate());
        let mut g = grant(&root, &team.verifying_key(), &["/jobs"], 60);
        g.expires = g.not_before;
        let e = Delegation::extend(None, g, &root).unwrap_err();
        assert!(e.to_string().contains("expires"), "{e}");
        let d = Delegation::extend(
            None,
            grant(&root, &team.verifying_key(), &["/jobs"], 60),
            &root,
        )
        .unwrap();
        let text = d.to_toml().replace(
            "cgroup_prefixes = [\"/jobs\"]",
            "cgroup_prefixes = [\"/jobs/\"]",
        );
        let e = Delegation::parse(&text).unwrap_err();
        assert!(
            e.to_string().contains("delegation[1].cgroup_prefixes"),
            "{e}"
        );
        assert!(e.to_string().contains("line"), "{e}");
        let text = d
            .to_toml()
            .replace("cgroup_prefixes = [\"/jobs\"]", "cgroup_prefixes = []");
        assert!(Delegation::parse(&text)
            .unwrap_err()
            .to_string()
            .contains("at least one"));
    }
}
