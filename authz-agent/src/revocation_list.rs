//! Signed revocation lists (`authz-revocations`): fleet-wide revocation by
//! dropping one file everywhere.
//!
//! A list names permit and delegation ids and carries a `serial`. It is signed
//! by a root key of the trust policy, or by a delegate (the list then carries
//! the delegate's chain, like a permit does). The agent applies every entry,
//! persists it, and refuses a list whose serial is not above the last one it
//! applied from the same signer, so an old list cannot be replayed. Whether a list is valid, and what a
//! delegate's list may revoke, is [`crate::trust::revocations`]'s to decide;
//! this module is the file: fields, text, signed bytes, signing.
use std::{collections::BTreeSet, ops::Deref, path::Path};

use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use toml::Spanned;

use crate::vocab::{
    delegation::{self, chain_digests, Delegation, DelegationLink, LinkDigest, RawLink, MAX_LINKS},
    encoding::Encoder,
    fields::{check_opt_text, parse_id, ArtifactId, MAX_REASON},
    keyid::{parse_key_id, KeyId},
    text::{self, conv, ArtifactError, Doc, FileError, Kind, Writer, VERSION},
    time::Timestamp,
};

/// Domain string that starts every revocation list's signed message.
pub const REVOCATIONS_DOMAIN: &str = "authz-revocations";
/// Most ids one list may name (a list is at most 64 KiB anyway; revoking a
/// delegation id revokes everything issued under it).
pub const MAX_REVOKED: usize = 1024;

/// Everything a revocation list's signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListBody {
    /// Key id of the signing key: a root key, or the key the last link of
    /// `chain` delegates to.
    pub issuer: KeyId,
    /// Above every earlier list from the same signer (from 1).
    pub serial: u64,
    pub issued_at: Timestamp,
    /// Permit and delegation ids, in file order, each once.
    pub revoked: Vec<ArtifactId>,
    /// Why (free text, signed, recorded with every entry).
    pub reason: Option<String>,
    /// The signer's delegation chain, root first; empty for a root key.
    pub chain: Vec<DelegationLink>,
}

/// A parsed, well-formed (not necessarily valid) revocation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationList {
    body: ListBody,
    signature: Signature,
}

impl Deref for RevocationList {
    type Target = ListBody;

    fn deref(&self) -> &ListBody {
        &self.body
    }
}

impl ListBody {
    /// Checks every limit that needs no trust policy.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        let field = |f: &str, p: String| Err(ArtifactError::field(Kind::Revocations, f, p));
        if self.serial == 0 {
            return field("serial", "must be at least 1".into());
        }
        if self.revoked.is_empty() {
            return field("revoked", "must name at least one id".into());
        }
        if self.revoked.len() > MAX_REVOKED {
            return field("revoked", format!("more than {MAX_REVOKED} ids"));
        }
        let mut seen = BTreeSet::new();
        if let Some(id) = self.revoked.iter().find(|id| !seen.insert(**id)) {
            return field("revoked", format!("{id} is listed twice"));
        }
        check_opt_text(self.reason.as_deref(), MAX_REASON).or_else(|p| field("reason", p))?;
        if self.chain.len() > MAX_LINKS {
            return field("delegation", format!("more than {MAX_LINKS} links"));
        }
        for link in &self.chain {
            link.grant().validate()?;
        }
        Ok(())
    }

    /// The canonical message the signature covers.
    pub fn message(&self) -> Vec<u8> {
        self.message_with(&chain_digests(&self.chain))
    }

    /// The message, given the digests of the chain's links (root first).
    pub fn message_with(&self, link_digests: &[LinkDigest]) -> Vec<u8> {
        let mut e = Encoder::new(REVOCATIONS_DOMAIN, VERSION);
        e.fixed(&self.issuer.0)
            .u64(self.serial)
            .time(self.issued_at)
            .count(self.revoked.len());
        for id in &self.revoked {
            e.fixed(&id.0);
        }
        e.opt_str(self.reason.as_deref()).count(link_digests.len());
        for d in link_digests {
            e.fixed(d);
        }
        e.finish()
    }

    /// Validates and signs with `key`, which must be the issuer's key.
    pub fn sign(self, key: &SigningKey) -> Result<RevocationList, ArtifactError> {
        self.validate()?;
        if self.issuer != KeyId::of(&key.verifying_key()) {
            return Err(ArtifactError::field(
                Kind::Revocations,
                "issuer",
                "is not the id of the signing key",
            ));
        }
        let signature = key.sign(&self.message());
        Ok(RevocationList {
            body: self,
            signature,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    format: Spanned<String>,
    version: Spanned<i64>,
    issuer: Spanned<String>,
    serial: Spanned<i64>,
    issued_at: Spanned<String>,
    revoked: Spanned<Vec<String>>,
    reason: Option<Spanned<String>>,
    signature: Spanned<String>,
    delegation: Option<Spanned<Vec<RawLink>>>,
}
text::headed!(RawList);

impl RevocationList {
    /// Parses a revocation list's text (at most 64 KiB).
    pub fn parse(text: &str) -> Result<Self, ArtifactError> {
        let (doc, raw): (_, RawList) = Doc::parse(Kind::Revocations, text)?;
        let chain = match &raw.delegation {
            Some(links) => delegation::parse_links(&doc, links)?,
            None => Vec::new(),
        };
        let revoked = doc.get("revoked", &raw.revoked, |ids| {
            if ids.len() > MAX_REVOKED {
                return Err(format!("more than {MAX_REVOKED} ids"));
            }
            ids.iter()
                .map(|s| parse_id(s))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let body = ListBody {
            issuer: doc.get("issuer", &raw.issuer, |s| parse_key_id(s))?,
            serial: doc.get("serial", &raw.serial, |v| {
                u64::try_from(*v)
                    .ok()
                    .filter(|&v| v > 0)
                    .ok_or_else(|| format!("{v} must be a positive integer"))
            })?,
            issued_at: doc.get("issued_at", &raw.issued_at, conv::time)?,
            revoked,
            reason: doc.get_opt("reason", &raw.reason, conv::text(MAX_REASON))?,
            chain,
        };
        if let Err(ArtifactError::Field { field, problem, .. }) = body.validate() {
            let span = match field.as_str() {
                "revoked" => Some(raw.revoked.span()),
                _ => None,
            };
            return Err(doc.err(&field, span, problem));
        }
        let signature = doc.get("signature", &raw.signature, |s| {
            delegation::parse_signature(s)
        })?;
        Ok(Self { body, signature })
    }

    /// Reads and parses a list file, refusing files over 64 KiB unread.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        text::read_parsed(path, Kind::Revocations, Self::parse)
    }

    /// The list as TOML; [`RevocationList::parse`] gives back an equal list.
    pub fn to_toml(&self) -> String {
        let b = &self.body;
        let mut w = Writer::new(
            Kind::Revocations,
            &format!(
                "authz revocation list {} from key {}: revokes {} id{} (permits, or\n\
                 delegations and everything issued under them), for good.\n\
                 Every field is signed; an agent applies a list only when its serial is\n\
                 above the last it applied from this key.",
                b.serial,
                b.issuer.short(),
                b.revoked.len(),
                if b.revoked.len() == 1 { "" } else { "s" }
            ),
        );
        w.str("issuer", &b.issuer.to_string())
            .int("serial", b.serial)
            .str("issued_at", &b.issued_at.to_string())
            .str_list(
                "revoked",
                b.revoked
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            )
            .opt_str("reason", b.reason.as_deref())
            .str("signature", &hex::encode(self.signature.to_bytes()));
        delegation::write_links(&mut w, &b.chain);
        w.finish()
    }

    pub fn body(&self) -> &ListBody {
        &self.body
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// SHA-256 of the signed message and the signature: the same list
    /// delivered twice (whatever its comments or spacing) has the same one.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.message());
        h.update(self.signature.to_bytes());
        h.finalize().into()
    }
}

/// Signs a list revoking `ids` with `key`, carrying `delegation` (whose last
/// link must delegate to `key`) when the key is not a root key.
pub fn issue(
    ids: Vec<ArtifactId>,
    serial: u64,
    reason: Option<String>,
    key: &SigningKey,
    delegation: Option<&Delegation>,
    now: Timestamp,
) -> Result<RevocationList, ArtifactError> {
    let issuer = KeyId::of(&key.verifying_key());
    if let Some(d) = delegation {
        if d.last().delegate_key_id() != issuer {
            return Err(ArtifactError::field(
                Kind::Revocations,
                "issuer",
                format!(
                    "the signing key {issuer} is not the key the delegation delegates to ({})",
                    d.last().delegate_key_id()
                ),
            ));
        }
    }
    ListBody {
        issuer,
        serial,
        issued_at: now,
        revoked: ids,
        reason,
        chain: delegation.map(|d| d.links().to_vec()).unwrap_or_default(),
    }
    .sign(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    fn list() -> RevocationList {
        let ids = vec![ArtifactId([0; 16]), ArtifactId([1; 16])];
        let now = "2025-01-03T00:00:00Z".parse().unwrap();
        issue(ids, 7, Some("key leaked".into()), &key(), None, now).unwrap()
    }

    #[test]
    fn round_trips_and_signs_a_fixed_message() {
        let l = list();
        let text = l.to_toml();
        assert_eq!(RevocationList::parse(&text).unwrap(), l);
        assert_eq!(text::kind_of(&text), Some(Kind::Revocations));
        // domain, version, issuer, serial, issued_at, 2 ids, reason, no links
        let m = hex::encode(l.message());
        assert!(
            m.starts_with("00000011617574687a2d7265766f636174696f6e7300000001"),
            "{m}"
        );
        assert!(
            m.ends_with(&format!(
                "0000000000000007{}00000002{}{}01{}6b6579206c65616b656400000000",
                hex::encode(1_735_862_400u64.to_be_bytes()),
                "00".repeat(16),
                "01".repeat(16),
                "0000000a"
            )),
            "{m}"
        );
        assert_eq!(
            l.digest(),
            RevocationList::parse(&text.replace("# authz", "#  authz"))
                .unwrap()
                .digest()
        );
    }

    #[test]
    fn bad_lists_are_refused_with_their_field() {
        let text = list().to_toml();
        let cases = [
            ("serial = 7", "serial = 0", "serial"),
            ("serial = 7", "serial = -3", "serial"),
            ("revoked = [", "revoked = []", "revoked"),
            ("reason = ", "reason = \"\"", "reason"),
        ];
        for (needle, replacement, field) in cases {
            let line = text.lines().find(|l| l.starts_with(needle)).unwrap();
            let e = RevocationList::parse(&text.replace(line, replacement)).unwrap_err();
            assert!(
                matches!(&e, ArtifactError::Field { field: f, .. } if f == field),
                "{replacement}: {e}"
            );
        }
        let dup = text.replace(&"01".repeat(16), &"00".repeat(16));
        assert!(RevocationList::parse(&dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let e = RevocationList::parse(&text.replace("authz-revocations", "authz-artifact"))
            .unwrap_err();
        assert!(matches!(e, ArtifactError::WrongFormat { .. }), "{e}");
        let e = RevocationList::parse(&format!("{text}\nextra = 1\n")).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        assert!(issue(vec![], 1, None, &key(), None, Timestamp::now()).is_err());
        let other = SigningKey::from_bytes(&[2; 32]);
        let body = ListBody {
            issuer: KeyId::of(&other.verifying_key()),
            ..list().body().clone()
        };
        assert!(body.sign(&key()).is_err());
    }
}
