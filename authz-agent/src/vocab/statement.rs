//! Lockdown statements: what a trust root signs to end lockdown on one host
//! (`unlock`) or to let a new agent binary adopt the pinned state
//! (`adopt-agent`).
//!
//! A statement is short-lived (at most [`MAX_LIFETIME_SECS`]), bound to one
//! host (its machine id) and carries its signer's public key, so it can be
//! checked against the key ids the kernel recorded when lockdown began,
//! whatever the configuration on disk says now. Whether a statement is
//! accepted (signer, host, time) is [`crate::lockdown`]'s to decide; this
//! module is the format (docs/artifact-format.md, section "Lockdown
//! statements").
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::Deserialize;
use toml::Spanned;

use super::{
    delegation::parse_signature,
    encoding::Encoder,
    fields::{check_opt_text, parse_hex, parse_id, ArtifactId},
    keyid::{parse_public_key, KeyId},
    text::{self, conv, ArtifactError, Doc, Kind, Writer, VERSION},
    time::Timestamp,
};

/// Domain string that starts a statement's signed message.
pub const STATEMENT_DOMAIN: &str = "authz-statement";
/// Longest lifetime (`expires - not_before`) a statement may have: one hour.
pub const MAX_LIFETIME_SECS: u64 = 3600;
/// Most digests one `adopt-agent` statement may name.
pub const MAX_AGENT_DIGESTS: usize = 64;
/// Longest `reason`.
pub const MAX_REASON: usize = 1024;

/// What a statement allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// End lockdown on the host (then `mode off`, `unload` and a changed
    /// configuration are possible again).
    Unlock,
    /// Authorize agent code: the binaries and libraries named by digest.
    AdoptAgent,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Unlock => "unlock",
            Action::AdoptAgent => "adopt-agent",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "unlock" => Ok(Action::Unlock),
            "adopt-agent" => Ok(Action::AdoptAgent),
            other => Err(format!(
                "unknown action {other:?}; expected \"unlock\" or \"adopt-agent\""
            )),
        }
    }
}

/// One file of agent code an `adopt-agent` statement authorizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCode {
    pub sha256: [u8; 32],
    /// A binary (an exec of it is an agent) or a library it maps.
    pub binary: bool,
}

/// The signed content of a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: ArtifactId,
    pub issued_at: Timestamp,
    /// The signing key (a trust root's).
    pub issuer_key: VerifyingKey,
    pub action: Action,
    /// The machine id (`/etc/machine-id`) of the one host it applies to.
    pub host: String,
    pub not_before: Timestamp,
    pub expires: Timestamp,
    /// `adopt-agent` only: the code authorized.
    pub agents: Vec<AgentCode>,
    pub reason: Option<String>,
}

/// A signed [`Claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    claim: Claim,
    signature: Signature,
}

/// A machine id as systemd writes it: 32 lowercase hex digits.
pub fn check_host(s: &str) -> Result<(), String> {
    if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err("must be a machine id: 32 lowercase hex digits (`cat /etc/machine-id`)".into())
    }
}

impl Claim {
    /// Checks the limits every statement respects on its own.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        let err = |field: &str, problem: String| {
            Err(ArtifactError::field(Kind::Statement, field, problem))
        };
        if let Err(e) = check_host(&self.host) {
            return err("host", e);
        }
        if self.expires <= self.not_before {
            return err("expires", "must be later than not_before".into());
        }
        if self
            .expires
            .seconds_since(self.not_before)
            .unwrap_or(u64::MAX)
            > MAX_LIFETIME_SECS
        {
            return err(
                "expires",
                format!("a statement lives at most {MAX_LIFETIME_SECS} seconds"),
            );
        }
        match self.action {
            Action::Unlock if !self.agents.is_empty() => {
                return err("agents", "an unlock statement names no agent code".into())
            }
            Action::AdoptAgent if self.agents.is_empty() => {
                return err(
                    "agents",
                    "an adopt-agent statement names at least one file".into(),
                )
            }
            Action::AdoptAgent if !self.agents.iter().any(|a| a.binary) => {
                return err(
                    "agents",
                    "an adopt-agent statement names at least one binary".into(),
                )
            }
            _ => {}
        }
        if self.agents.len() > MAX_AGENT_DIGESTS {
            return err("agents", format!("more than {MAX_AGENT_DIGESTS} entries"));
        }
        if let Err(e) = check_opt_text(self.reason.as_deref(), MAX_REASON) {
            return err("reason", e);
        }
        Ok(())
    }

    /// The canonical message the signature covers.
    pub fn message(&self) -> Vec<u8> {
        let mut e = Encoder::new(STATEMENT_DOMAIN, VERSION);
        e.fixed(&self.id.0)
            .time(self.issued_at)
            .fixed(self.issuer_key.as_bytes())
            .str(self.action.as_str())
            .str(&self.host)
            .time(self.not_before)
            .time(self.expires)
            .count(self.agents.len());
        for a in &self.agents {
            e.fixed(&a.sha256).bool(a.binary);
        }
        e.opt_str(self.reason.as_deref());
        e.finish()
    }

    pub fn sign(self, key: &SigningKey) -> Result<Statement, ArtifactError> {
        self.validate()?;
        if self.issuer_key != key.verifying_key() {
            return Err(ArtifactError::field(
                Kind::Statement,
                "issuer_key",
                "is not the signing key's public key",
            ));
        }
        let signature = key.sign(&self.message());
        Ok(Statement {
            claim: self,
            signature,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    format: Spanned<String>,
    version: Spanned<i64>,
    id: Spanned<String>,
    issued_at: Spanned<String>,
    issuer_key: Spanned<String>,
    action: Spanned<String>,
    host: Spanned<String>,
    not_before: Spanned<String>,
    expires: Spanned<String>,
    #[serde(default)]
    agent: Option<Spanned<Vec<RawAgent>>>,
    reason: Option<Spanned<String>>,
    signature: Spanned<String>,
}
text::headed!(RawStatement);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    sha256: Spanned<String>,
    binary: bool,
}

/// Why a statement's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the statement's signature does not verify with its issuer_key")]
pub struct BadStatementSignature;

impl Statement {
    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// Key id of the signer.
    pub fn issuer(&self) -> KeyId {
        KeyId::of(&self.claim.issuer_key)
    }

    /// Checks the signature against the statement's own `issuer_key` (who
    /// that key must be is the caller's question).
    pub fn verify_signature(&self) -> Result<(), BadStatementSignature> {
        self.claim
            .issuer_key
            .verify(&self.claim.message(), &self.signature)
            .map_err(|_| BadStatementSignature)
    }

    pub fn parse(text: &str) -> Result<Self, ArtifactError> {
        let (doc, raw): (_, RawStatement) = Doc::parse(Kind::Statement, text)?;
        let mut agents = Vec::new();
        if let Some(list) = &raw.agent {
            if list.get_ref().len() > MAX_AGENT_DIGESTS {
                return Err(doc.err(
                    "agent",
                    Some(list.span()),
                    format!("more than {MAX_AGENT_DIGESTS} entries"),
                ));
            }
            for (i, a) in list.get_ref().iter().enumerate() {
                agents.push(AgentCode {
                    sha256: doc.get(&format!("agent[{}].sha256", i + 1), &a.sha256, |s| {
                        parse_hex::<32>(s)
                    })?,
                    binary: a.binary,
                });
            }
        }
        let claim = Claim {
            id: doc.get("id", &raw.id, |s| parse_id(s))?,
            issued_at: doc.get("issued_at", &raw.issued_at, conv::time)?,
            issuer_key: doc.get("issuer_key", &raw.issuer_key, |s| parse_public_key(s))?,
            action: doc.get("action", &raw.action, |s| Action::parse(s))?,
            host: doc.get("host", &raw.host, |s| check_host(s).map(|()| s.clone()))?,
            not_before: doc.get("not_before", &raw.not_before, conv::time)?,
            expires: doc.get("expires", &raw.expires, conv::time)?,
            agents,
            reason: doc.get_opt("reason", &raw.reason, conv::text(MAX_REASON))?,
        };
        if let Err(ArtifactError::Field { field, problem, .. }) = claim.validate() {
            let span = match field.as_str() {
                "host" => raw.host.span(),
                "agents" => raw.action.span(),
                "reason" => raw.reason.as_ref().map_or(raw.expires.span(), |r| r.span()),
                _ => raw.expires.span(),
            };
            return Err(doc.err(&field, Some(span), problem));
        }
        let signature = doc.get("signature", &raw.signature, |s| parse_signature(s))?;
        Ok(Statement { claim, signature })
    }

    pub fn to_toml(&self) -> String {
        let c = &self.claim;
        let what = match c.action {
            Action::Unlock => "ends lockdown".to_owned(),
            Action::AdoptAgent => format!("authorizes {} file(s) of agent code", c.agents.len()),
        };
        let mut w = Writer::new(
            Kind::Statement,
            &format!(
                "authz lockdown statement: {what} on host {}\nfrom {} until {}; signed by a trust root",
                c.host, c.not_before, c.expires
            ),
        );
        w.str("id", &c.id.to_string())
            .str("issued_at", &c.issued_at.to_string())
            .str("issuer_key", &hex::encode(c.issuer_key.as_bytes()))
            .str("action", c.action.as_str())
            .str("host", &c.host)
            .str("not_before", &c.not_before.to_string())
            .str("expires", &c.expires.to_string())
            .opt_str("reason", c.reason.as_deref())
            .str("signature", &hex::encode(self.signature.to_bytes()));
        for a in &c.agents {
            w.array_table("agent")
                .str("sha256", &hex::encode(a.sha256))
                .bool("binary", a.binary);
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn claim(action: Action) -> Claim {
        Claim {
            id: ArtifactId([7; 16]),
            issued_at: Timestamp::from_unix(1_800_000_000).unwrap(),
            issuer_key: key(1).verifying_key(),
            action,
            host: "0123456789abcdef0123456789abcdef".into(),
            not_before: Timestamp::from_unix(1_800_000_000).unwrap(),
            expires: Timestamp::from_unix(1_800_000_900).unwrap(),
            agents: if action == Action::AdoptAgent {
                vec![
                    AgentCode {
                        sha256: [3; 32],
                        binary: true,
                    },
                    AgentCode {
                        sha256: [4; 32],
                        binary: false,
                    },
                ]
            } else {
                Vec::new()
            },
            reason: Some("maintenance window".into()),
        }
    }

    #[test]
    fn a_signed_statement_round_trips_and_verifies() {
        for action in [Action::Unlock, Action::AdoptAgent] {
            let s = claim(action).sign(&key(1)).unwrap();
            let text = s.to_toml();
            let back = Statement::parse(&text).unwrap();
            assert_eq!(back, s);
            back.verify_signature().unwrap();
        }
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let s = claim(Action::Unlock).sign(&key(1)).unwrap();
        let text = s.to_toml();
        let tampered = text.replace(
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210fedcba9876543210",
        );
        let t = Statement::parse(&tampered).unwrap();
        assert_eq!(t.verify_signature(), Err(BadStatementSignature));
        let t = Statement::parse(&text.replace("unlock", "adopt-agent"));
        assert!(t.is_err(), "adopt-agent without agents is refused");
    }

    #[test]
    fn long_lived_or_hostless_statements_are_refused() {
        let mut c = claim(Action::Unlock);
        c.expires = Timestamp::from_unix(1_800_000_000 + MAX_LIFETIME_SECS + 1).unwrap();
        assert!(c.sign(&key(1)).unwrap_err().to_string().contains("at most"));
        let mut c = claim(Action::Unlock);
        c.host = "my-host".into();
        assert!(c
            .sign(&key(1))
            .unwrap_err()
            .to_string()
            .contains("machine id"));
        let c = claim(Action::Unlock);
        assert!(c.sign(&key(2)).is_err(), "issuer_key must be the signer's");
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for text in [
            "",
            "format = 1",
            "format = \"authz-statement\"\nversion = 1\n",
            "\u{0}",
        ] {
            assert!(Statement::parse(text).is_err());
        }
    }
}
