//! Authorization artifacts ("permits"): the signed statement that a binary,
//! identified by its SHA-256, may run in a cgroup subtree for a time window.
//!
//! An artifact is a TOML file (docs/artifact-format.md). Its ed25519 signature
//! covers a canonical byte encoding of the parsed values, never the TOML text
//! itself. Parsing is strict: unknown fields, unknown versions, non-canonical
//! spellings and oversized files are refused with the field and line at fault.
//! The vocabulary it is written in (text format, canonical encoding, fields,
//! time, key ids, delegation links) is [`crate::vocab`]. Whether a parsed
//! artifact is *valid* is for the trust module (`trust::verify`) to decide.
pub mod issue;

use std::{ops::Deref, path::Path};

use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::Deserialize;
use toml::Spanned;

// `fields` and `time` are re-exported as modules because code outside this
// crate's vocabulary still names them through `artifact::` (the daemon).
use crate::vocab::{
    code::{self, check_libraries, parse_exec_memory, parse_libraries, RawLibrary},
    delegation::{self, chain_digests, DelegationLink, LinkDigest, RawLink, MAX_LINKS},
    encoding::Encoder,
    fields::{check_opt_text, parse_hex, parse_id, MAX_IDENTITY, MAX_NAME, MAX_PATH, MAX_REASON},
    hosts::{HostBinding, RawHosts},
    keyid::{parse_key_id, KeyId},
    text::{self, conv, Doc, Writer, VERSION},
};
pub use crate::vocab::{
    code::{Library, MAX_LIBRARIES},
    fields::{self, ArtifactId, CgroupPath, Digest},
    text::{ArtifactError, FileError, Kind, WriteError},
    time::{self, Timestamp},
};

/// Domain string that starts every artifact's signed message.
pub const ARTIFACT_DOMAIN: &str = "authz-artifact";

/// The binary a permit is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// SHA-256 of the binary's contents: what the kernel checks.
    pub sha256: Digest,
    /// Where the binary was when the permit was issued (informative only).
    pub path: Option<String>,
    /// The binary's name (informative only).
    pub name: Option<String>,
    /// The binary's processes may make memory executable (a JIT). Only an
    /// authority allowed to grant it may sign it (docs/artifact-format.md).
    pub exec_memory: bool,
}

/// Where the binary may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub cgroup: CgroupPath,
    /// Whether descendant cgroups of `cgroup` are included.
    pub descendants: bool,
}

/// When the permit is valid: from `not_before` (inclusive) to `expires` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Timestamp,
    pub expires: Timestamp,
}

/// Who asked for the permit and why (signed, but informative).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The human, service or AI agent that asked for the permit.
    pub requested_by: Option<String>,
    /// Who delegated the authority to ask.
    pub on_behalf_of: Option<String>,
    /// Free text.
    pub reason: Option<String>,
}

/// Everything an artifact's signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub id: ArtifactId,
    pub issued_at: Timestamp,
    /// Trust-policy version the permit was issued under.
    pub policy_version: u32,
    /// Key id of the signing key: a root key, or the key the last delegation
    /// link delegates to.
    pub issuer: KeyId,
    pub subject: Subject,
    pub scope: Scope,
    pub validity: Validity,
    pub provenance: Provenance,
    /// Files the binary may map executable (its loader and shared
    /// libraries), in the cgroup scope and window of the permit.
    pub libraries: Vec<Library>,
    /// Delegation links, root first; empty when a root key signs directly.
    pub chain: Vec<DelegationLink>,
    /// The hosts it may be live on (`[hosts]`); None: any host.
    pub hosts: Option<HostBinding>,
}

/// A parsed, well-formed (not necessarily valid) artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    body: Body,
    signature: Signature,
}

impl Deref for Artifact {
    type Target = Body;

    fn deref(&self) -> &Body {
        &self.body
    }
}

impl Body {
    /// Checks every limit that does not need a trust policy.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        let text_fields = [
            ("subject.path", self.subject.path.as_deref(), MAX_PATH),
            ("subject.name", self.subject.name.as_deref(), MAX_NAME),
            (
                "provenance.requested_by",
                self.provenance.requested_by.as_deref(),
                MAX_IDENTITY,
            ),
            (
                "provenance.on_behalf_of",
                self.provenance.on_behalf_of.as_deref(),
                MAX_IDENTITY,
            ),
            (
                "provenance.reason",
                self.provenance.reason.as_deref(),
                MAX_REASON,
            ),
        ];
        for (field, value, max) in text_fields {
            check_opt_text(value, max)
                .map_err(|p| ArtifactError::field(Kind::Artifact, field, p))?;
        }
        if self.validity.expires <= self.validity.not_before {
            return Err(ArtifactError::field(
                Kind::Artifact,
                "validity.expires",
                "must be later than not_before",
            ));
        }
        check_libraries(&self.libraries)?;
        if self.chain.len() > MAX_LINKS {
            return Err(ArtifactError::field(
                Kind::Artifact,
                "delegation",
                format!("more than {MAX_LINKS} links"),
            ));
        }
        for link in &self.chain {
            link.grant().validate()?;
        }
        Ok(())
    }

    /// `expires - not_before`, in seconds.
    pub fn lifetime_seconds(&self) -> u64 {
        self.validity
            .expires
            .seconds_since(self.validity.not_before)
            .unwrap_or(0)
    }

    /// The canonical message the signature covers.
    pub fn message(&self) -> Vec<u8> {
        self.message_with(&chain_digests(&self.chain))
    }

    /// The message, given the digests of the chain's links (root first).
    pub fn message_with(&self, link_digests: &[LinkDigest]) -> Vec<u8> {
        let mut e = Encoder::new(ARTIFACT_DOMAIN, VERSION);
        e.fixed(&self.id.0)
            .time(self.issued_at)
            .u32(self.policy_version)
            .fixed(&self.issuer.0)
            .fixed(&self.subject.sha256)
            .opt_str(self.subject.path.as_deref())
            .opt_str(self.subject.name.as_deref())
            .str(self.scope.cgroup.as_str())
            .bool(self.scope.descendants)
            .time(self.validity.not_before)
            .time(self.validity.expires)
            .opt_str(self.provenance.requested_by.as_deref())
            .opt_str(self.provenance.on_behalf_of.as_deref())
            .opt_str(self.provenance.reason.as_deref())
            .count(link_digests.len());
        for d in link_digests {
            e.fixed(d);
        }
        // Optional blocks: appended only when present, so the message of an
        // artifact without them is unchanged. Each starts with its own tag.
        code::permit_extension(&mut e, self.subject.exec_memory, &self.libraries);
        if let Some(hosts) = &self.hosts {
            hosts.encode(&mut e);
        }
        e.finish()
    }

    /// Validates and signs with `key`, which must be the issuer's key.
    pub fn sign(self, key: &SigningKey) -> Result<Artifact, ArtifactError> {
        self.validate()?;
        if self.issuer != KeyId::of(&key.verifying_key()) {
            return Err(ArtifactError::field(
                Kind::Artifact,
                "issuer",
                "is not the id of the signing key",
            ));
        }
        let signature = key.sign(&self.message());
        Ok(Artifact {
            body: self,
            signature,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    format: Spanned<String>,
    version: Spanned<i64>,
    id: Spanned<String>,
    issued_at: Spanned<String>,
    policy_version: Spanned<i64>,
    issuer: Spanned<String>,
    signature: Spanned<String>,
    subject: RawSubject,
    scope: RawScope,
    validity: RawValidity,
    provenance: Option<RawProvenance>,
    library: Option<Spanned<Vec<RawLibrary>>>,
    hosts: Option<RawHosts>,
    delegation: Option<Spanned<Vec<RawLink>>>,
}
text::headed!(RawArtifact);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    sha256: Spanned<String>,
    path: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    exec_memory: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    cgroup: Spanned<String>,
    descendants: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidity {
    not_before: Spanned<String>,
    expires: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProvenance {
    requested_by: Option<Spanned<String>>,
    on_behalf_of: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
}

impl Artifact {
    /// Parses an artifact file's text (at most 64 KiB).
    pub fn parse(text: &str) -> Result<Self, ArtifactError> {
        let (doc, raw): (_, RawArtifact) = Doc::parse(Kind::Artifact, text)?;
        let prov = raw.provenance.unwrap_or_default();
        let chain = match &raw.delegation {
            Some(links) => delegation::parse_links(&doc, links)?,
            None => Vec::new(),
        };
        let libraries = match &raw.library {
            Some(libs) => parse_libraries(&doc, libs)?,
            None => Vec::new(),
        };
        let body = Body {
            id: doc.get("id", &raw.id, |s| parse_id(s))?,
            issued_at: doc.get("issued_at", &raw.issued_at, conv::time)?,
            policy_version: doc.get("policy_version", &raw.policy_version, conv::u32)?,
            issuer: doc.get("issuer", &raw.issuer, |s| parse_key_id(s))?,
            subject: Subject {
                sha256: doc.get("subject.sha256", &raw.subject.sha256, |s| {
                    parse_hex::<32>(s)
                })?,
                path: doc.get_opt("subject.path", &raw.subject.path, conv::text(MAX_PATH))?,
                name: doc.get_opt("subject.name", &raw.subject.name, conv::text(MAX_NAME))?,
                exec_memory: parse_exec_memory(
                    &doc,
                    "subject.exec_memory",
                    &raw.subject.exec_memory,
                )?,
            },
            scope: Scope {
                cgroup: doc.get("scope.cgroup", &raw.scope.cgroup, |s| {
                    CgroupPath::parse_canonical(s)
                })?,
                descendants: raw.scope.descendants,
            },
            validity: Validity {
                not_before: doc.get("validity.not_before", &raw.validity.not_before, conv::time)?,
                expires: doc.get("validity.expires", &raw.validity.expires, conv::time)?,
            },
            provenance: Provenance {
                requested_by: doc.get_opt(
                    "provenance.requested_by",
                    &prov.requested_by,
                    conv::text(MAX_IDENTITY),
                )?,
                on_behalf_of: doc.get_opt(
                    "provenance.on_behalf_of",
                    &prov.on_behalf_of,
                    conv::text(MAX_IDENTITY),
                )?,
                reason: doc.get_opt("provenance.reason", &prov.reason, conv::text(MAX_REASON))?,
            },
            libraries,
            chain,
            hosts: raw
                .hosts
                .as_ref()
                .map(|h| h.parse(&doc, "hosts"))
                .transpose()?,
        };
        if body.validity.expires <= body.validity.not_before {
            return Err(doc.err(
                "validity.expires",
                Some(raw.validity.expires.span()),
                "must be later than not_before",
            ));
        }
        // The remaining limits were checked field by field above.
        body.validate()?;
        let signature = doc.get("signature", &raw.signature, |s| {
            delegation::parse_signature(s)
        })?;
        Ok(Self { body, signature })
    }

    /// Reads and parses an artifact file, refusing files over 64 KiB unread.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        text::read_parsed(path, Kind::Artifact, Self::parse)
    }

    /// The artifact as TOML; [`Artifact::parse`] gives back an equal artifact.
    pub fn to_toml(&self) -> String {
        let b = &self.body;
        let scope = if b.scope.descendants {
            format!("cgroup {} and its descendants", b.scope.cgroup)
        } else {
            format!("cgroup {}", b.scope.cgroup)
        };
        let mut also = String::new();
        if !b.libraries.is_empty() {
            also.push_str(&format!(
                "It may also map executable there (not exec) the files listed as libraries below ({}).\n",
                b.libraries.len()
            ));
        }
        if b.subject.exec_memory {
            also.push_str("Its processes may make memory executable (a JIT).\n");
        }
        let hosts = b
            .hosts
            .as_ref()
            .map_or(String::new(), |h| format!("\nonly on hosts with {h}"));
        let mut w = Writer::new(
            Kind::Artifact,
            &format!(
                "authz permit: the binary with this SHA-256 may run in {scope}\n\
                 from {} until {}{hosts}.\n\
                 {also}\
                 Every field is signed: editing any of them invalidates the permit.\n\
                 Check it with `authz-agent artifact verify`.",
                b.validity.not_before, b.validity.expires
            ),
        );
        w.str("id", &b.id.to_string())
            .str("issued_at", &b.issued_at.to_string())
            .int("policy_version", u64::from(b.policy_version))
            .str("issuer", &b.issuer.to_string())
            .str("signature", &hex::encode(self.signature.to_bytes()));
        w.table("subject")
            .str("sha256", &hex::encode(b.subject.sha256))
            .opt_str("path", b.subject.path.as_deref())
            .opt_str("name", b.subject.name.as_deref());
        if b.subject.exec_memory {
            w.bool("exec_memory", true);
        }
        w.table("scope")
            .str("cgroup", b.scope.cgroup.as_str())
            .bool("descendants", b.scope.descendants);
        w.table("validity")
            .str("not_before", &b.validity.not_before.to_string())
            .str("expires", &b.validity.expires.to_string());
        let p = &b.provenance;
        if p != &Provenance::default() {
            w.table("provenance")
                .opt_str("requested_by", p.requested_by.as_deref())
                .opt_str("on_behalf_of", p.on_behalf_of.as_deref())
                .opt_str("reason", p.reason.as_deref());
        }
        code::write_libraries(&mut w, &b.libraries);
        if let Some(hosts) = &b.hosts {
            w.table("hosts");
            hosts.write(&mut w);
        }
        delegation::write_links(&mut w, &b.chain);
        w.finish()
    }

    pub fn body(&self) -> &Body {
        &self.body
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// `body` under `signature`, unchecked: for tests that forge an artifact.
    #[cfg(test)]
    pub(crate) fn forged(body: Body, signature: Signature) -> Self {
        Self { body, signature }
    }
}

#[cfg(test)]
pub(crate) mod vectors {
    //! The worked example of docs/artifact-format.md.
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::vocab::delegation::{Delegation, Grant};

    pub fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub fn root() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    pub fn team() -> SigningKey {
        SigningKey::from_bytes(&[2; 32])
    }

    pub fn delegation() -> Delegation {
        let grant = Grant {
            id: ArtifactId(std::array::from_fn(|i| 0x10 + i as u8)),
            issued_at: t("2025-01-01T00:00:00Z"),
            policy_version: 1,
            issuer: KeyId::of(&root().verifying_key()),
            delegate_key: team().verifying_key(),
            cgroup_prefixes: vec![CgroupPath::normalize("/jobs.slice/team-a").unwrap()],
            max_ttl_seconds: 86_400,
            not_before: t("2025-01-01T00:00:00Z"),
            expires: t("2025-04-01T00:00:00Z"),
            exec_memory: false,
            hosts: None,
        };
        Delegation::extend(None, grant, &root()).unwrap()
    }

    pub fn body() -> Body {
        Body {
            id: ArtifactId(std::array::from_fn(|i| i as u8)),
            issued_at: t("2025-01-02T00:00:00Z"),
            policy_version: 1,
            issuer: KeyId::of(&team().verifying_key()),
            subject: Subject {
                // SHA-256 of the empty file.
                sha256: parse_hex(
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                )
                .unwrap(),
                path: Some("/usr/bin/true".into()),
                name: Some("true".into()),
                exec_memory: false,
            },
            scope: Scope {
                cgroup: CgroupPath::normalize("/jobs.slice/team-a/build").unwrap(),
                descendants: true,
            },
            validity: Validity {
                not_before: t("2025-01-02T00:00:00Z"),
                expires: t("2025-01-02T12:00:00Z"),
            },
            provenance: Provenance {
                requested_by: Some("alice".into()),
                on_behalf_of: None,
                reason: Some("nightly build".into()),
            },
            libraries: Vec::new(),
            chain: delegation().links().to_vec(),
            hosts: None,
        }
    }

    pub fn artifact() -> Artifact {
        body().sign(&team()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::{vectors::*, *};

    fn parse_err(text: &str) -> ArtifactError {
        Artifact::parse(text).unwrap_err()
    }

    fn field_of(e: &ArtifactError) -> (&str, Option<usize>) {
        match e {
            ArtifactError::Field { field, line, .. } => (field, *line),
            other => panic!("not a field error: {other}"),
        }
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.starts_with(needle)).unwrap() + 1
    }

    #[test]
    fn malformed_fields_are_named_with_their_line() {
        let text = artifact().to_toml();
        let cases = [
            ("id = ", "id = \"0001\"", "id"),
            (
                "issued_at = ",
                "issued_at = \"2025-01-02T00:00:00.5Z\"",
                "issued_at",
            ),
            ("policy_version = ", "policy_version = -1", "policy_version"),
            ("issuer = ", "issuer = \"XYZ\"", "issuer"),
            (
                "sha256 = ",
                "sha256 = \"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"",
                "subject.sha256",
            ),
            (
                "cgroup = ",
                "cgroup = \"/jobs.slice/team-a/build/\"",
                "scope.cgroup",
            ),
            ("cgroup = ", "cgroup = \"jobs\"", "scope.cgroup"),
            ("reason = ", "reason = \"two\\nlines\"", "provenance.reason"),
            ("name = ", "name = \"\"", "subject.name"),
            (
                "expires = \"2025-01-02",
                "expires = \"2025-01-01T00:00:00Z\"",
                "validity.expires",
            ),
            (
                "max_ttl_seconds = ",
                "max_ttl_seconds = 0",
                "delegation[1].max_ttl_seconds",
            ),
            (
                "delegate_key = ",
                "delegate_key = \"00\"",
                "delegation[1].delegate_key",
            ),
            ("signature = \"a5", "signature = \"a5\"", "signature"),
        ];
        for (needle, replacement, field) in cases {
            let line = line_of(&text, needle);
            let mut lines: Vec<&str> = text.lines().collect();
            lines[line - 1] = replacement;
            let e = parse_err(&lines.join("\n"));
            assert_eq!(field_of(&e), (field, Some(line)), "{replacement}: {e}");
            let s = e.to_string();
            assert!(
                s.starts_with("malformed artifact: field `") && !s.contains('\n'),
                "{s}"
            );
        }
    }

    /// The worked example with executable memory and two libraries.
    fn with_code() -> Artifact {
        let mut b = body();
        b.subject.exec_memory = true;
        b.libraries = vec![
            Library {
                sha256: [0xab; 32],
                path: Some("/lib/x86_64-linux-gnu/libc.so.6".into()),
            },
            Library {
                sha256: [0xcd; 32],
                path: None,
            },
        ];
        b.sign(&team()).unwrap()
    }

    #[test]
    fn libraries_and_exec_memory_round_trip_and_are_signed() {
        let a = with_code();
        let text = a.to_toml();
        assert!(text.contains("exec_memory = true\n"), "{text}");
        assert_eq!(text.matches("[[library]]").count(), 2, "{text}");
        let back = Artifact::parse(&text).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.to_toml(), text);
        // Without them, the message is the worked example's, byte for byte;
        // with them, it is that message and then the extension.
        let plain = body().message();
        let full = a.message();
        assert!(full.starts_with(&plain));
        assert!(full[plain.len()..].starts_with(b"\0\0\0\x0aauthz-code\x01\0\0\0\x02"));
        assert!(!artifact().to_toml().contains("exec_memory"));
        assert!(!artifact().to_toml().contains("[[library]]"));
    }

    #[test]
    fn code_fields_have_one_spelling() {
        let text = with_code().to_toml();
        let e = parse_err(&text.replace("exec_memory = true", "exec_memory = false"));
        assert_eq!(
            field_of(&e),
            ("subject.exec_memory", Some(line_of(&text, "exec_memory")))
        );
        assert!(e.to_string().contains("leave it out"), "{e}");
        let line = line_of(&text, "sha256 = \"cdcd");
        let e = parse_err(&text.replace(&"cd".repeat(32), &"ab".repeat(32)));
        assert_eq!(field_of(&e), ("library[2].sha256", Some(line)));
        assert!(e.to_string().contains("repeats library[1]"), "{e}");
        let e = parse_err(&text.replace(&"cd".repeat(32), &"CD".repeat(32)));
        assert_eq!(field_of(&e).0, "library[2].sha256");
        let e =
            parse_err(&text.replace("path = \"/lib/x86_64-linux-gnu/libc.so.6\"", "path = \"\""));
        assert_eq!(field_of(&e).0, "library[1].path");
        let e = parse_err(&text.replace("[[library]]\nsha256", "[[library]]\nsize = 1\nsha256"));
        assert!(e.to_string().contains("unknown field `size`"), "{e}");
        let plain = artifact().to_toml();
        let e = parse_err(&plain.replace("[scope]", "library = []\n\n[scope]"));
        assert!(e.to_string().contains("`library`"), "{e}");
    }

    #[test]
    fn unknown_fields_versions_and_formats_are_refused() {
        let text = artifact().to_toml();
        let e = parse_err(&text.replace("[scope]\n", "[scope]\nhosts = [\"a\"]\n"));
        assert!(matches!(e, ArtifactError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("unknown field `hosts`"), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("line {}", line_of(&text, "[scope]") + 1)),
            "{e}"
        );
        let e = parse_err(&text.replace("[validity]", "[extra]\nx = 1\n\n[validity]"));
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        let e = parse_err(&text.replace("version = 1", "version = 2"));
        assert!(matches!(e, ArtifactError::UnsupportedVersion { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "unsupported artifact version 2 (line 6); this agent reads version 1"
        );
        let e = parse_err(&text.replace("version = 1", "version = \"1\""));
        assert!(matches!(e, ArtifactError::UnsupportedVersion { .. }), "{e}");
        let e = parse_err(&text.replace("authz-artifact", "authz-delegation"));
        assert!(matches!(e, ArtifactError::WrongFormat { .. }), "{e}");
        let e = parse_err(&text.replace(
            "[scope]\ncgroup = \"/jobs.slice/team-a/build\"\n",
            "[scope]\n",
        ));
        assert!(e.to_string().contains("missing field `cgroup`"), "{e}");
        let e = parse_err("format = \"authz-artifact\"\nversion = 1\nid = [");
        assert!(
            matches!(e, ArtifactError::Syntax { line: Some(3), .. }),
            "{e}"
        );
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let text = format!("{}\n#{}", artifact().to_toml(), "x".repeat(text::MAX_FILE));
        assert!(matches!(parse_err(&text), ArtifactError::TooLarge { .. }));
        let long_reason = "r".repeat(fields::MAX_REASON + 1);
        let e = parse_err(&artifact().to_toml().replace("nightly build", &long_reason));
        assert_eq!(field_of(&e).0, "provenance.reason");
    }

    #[test]
    fn signing_checks_the_body() {
        let mut b = body();
        b.validity.expires = b.validity.not_before;
        assert!(b.sign(&team()).is_err());
        assert!(body()
            .sign(&root())
            .unwrap_err()
            .to_string()
            .contains("not the id of the signing key"));
        let mut b = body();
        b.provenance.requested_by = Some("x\u{7}".into());
        assert!(b.sign(&team()).is_err());
    }

    #[test]
    fn reads_files_with_a_size_cap() {
        let dir = std::env::temp_dir().join(format!("authz-artifact-{}", ArtifactId::random()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.permit");
        std::fs::write(&path, artifact().to_toml()).unwrap();
        assert_eq!(Artifact::read(&path).unwrap(), artifact());
        std::fs::write(&path, vec![b'#'; text::MAX_FILE * 4]).unwrap();
        let e = Artifact::read(&path).unwrap_err();
        assert!(
            matches!(e, FileError::Invalid { source: ArtifactError::TooLarge { size, .. }, .. } if size == 4 * text::MAX_FILE as u64)
        );
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(Artifact::read(&path).is_err());
        assert!(matches!(
            Artifact::read(&dir.join("missing")),
            Err(FileError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
