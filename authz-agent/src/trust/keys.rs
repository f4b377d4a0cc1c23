//! Signing keys, public keys, and their files.
//!
//! `NAME.key` holds the 32-byte ed25519 secret seed, `NAME.pub` the public key;
//! both are small TOML files (docs/artifact-format.md, "Key files"). Key ids
//! and the canonical spelling of keys are vocabulary ([`crate::vocab::keyid`]).
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Deserialize;
use toml::Spanned;

use crate::vocab::keyid::{parse_key_id, parse_public_key, KeyId};
use crate::vocab::{
    fields::{self, parse_hex},
    text::{self, conv, ArtifactError, Doc, FileError, Kind, WriteError, Writer},
};

/// A new signing key from the operating system's random number generator.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// A public key read from a `.pub` file, with the name it was generated under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub key: VerifyingKey,
    pub id: KeyId,
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublic {
    format: Spanned<String>,
    version: Spanned<i64>,
    name: Option<Spanned<String>>,
    key_id: Spanned<String>,
    public_key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    format: Spanned<String>,
    version: Spanned<i64>,
    key_id: Spanned<String>,
    secret_key: Spanned<String>,
}
text::headed!(RawPublic, RawSecret);

/// The `key_id` field must match the key it sits next to.
fn check_key_id(
    doc: &Doc<'_>,
    raw: &Spanned<String>,
    key: &VerifyingKey,
) -> Result<KeyId, ArtifactError> {
    let written = doc.get("key_id", raw, |s| parse_key_id(s))?;
    let id = KeyId::of(key);
    if written != id {
        return Err(doc.err(
            "key_id",
            Some(raw.span()),
            format!("does not match the key (its id is {id})"),
        ));
    }
    Ok(id)
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, ArtifactError> {
        let (doc, raw): (_, RawPublic) = Doc::parse(Kind::PublicKey, text)?;
        let key = doc.get("public_key", &raw.public_key, |s| parse_public_key(s))?;
        let id = check_key_id(&doc, &raw.key_id, &key)?;
        let name = doc.get_opt("name", &raw.name, conv::text(fields::MAX_NAME))?;
        Ok(Self { key, id, name })
    }

    pub fn read(path: &Path) -> Result<Self, FileError> {
        text::read_parsed(path, Kind::PublicKey, Self::parse)
    }

    pub fn to_toml(&self) -> String {
        let mut w = Writer::new(
            Kind::PublicKey,
            "authz public key. Share it freely: put it in the agent's [[trust.roots]],\n\
             or give it to `authz-agent delegate --to`.",
        );
        w.opt_str("name", self.name.as_deref())
            .str("key_id", &self.id.to_string())
            .str("public_key", &hex::encode(self.key.as_bytes()));
        w.finish()
    }
}

/// Text of a `.key` file for `key`.
pub fn secret_key_toml(key: &SigningKey) -> String {
    let mut w = Writer::new(
        Kind::SecretKey,
        "authz SECRET signing key. Anyone who can read this file can sign permits\n\
         with this key's authority: keep it private (mode 0600), never share it.",
    );
    w.str("key_id", &KeyId::of(&key.verifying_key()).to_string())
        .str("secret_key", &hex::encode(key.to_bytes()));
    w.finish()
}

/// Parses a `.key` file.
pub fn parse_secret_key(text: &str) -> Result<SigningKey, ArtifactError> {
    let (doc, raw): (_, RawSecret) = Doc::parse(Kind::SecretKey, text)?;
    let seed = doc.get("secret_key", &raw.secret_key, |s| parse_hex::<32>(s))?;
    let key = SigningKey::from_bytes(&seed);
    check_key_id(&doc, &raw.key_id, &key.verifying_key())?;
    Ok(key)
}

/// Reads a `.key` file, warning when others can read it.
pub fn read_secret_key(path: &Path) -> Result<SigningKey, FileError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "secret key file is readable by other users; run `chmod 600` on it"
            );
        }
    }
    text::read_parsed(path, Kind::SecretKey, parse_secret_key)
}

/// Where `key generate --out BASE` puts the two files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPairPaths {
    pub secret: PathBuf,
    pub public: PathBuf,
}

impl KeyPairPaths {
    /// `BASE.key` and `BASE.pub`.
    pub fn for_base(base: &Path) -> Self {
        let with = |ext: &str| {
            let mut s = base.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        Self {
            secret: with(".key"),
            public: with(".pub"),
        }
    }
}

/// Writes `key` as `BASE.key` (mode 0600) and `BASE.pub` (0644). Neither file
/// may exist already; if the second cannot be written the first is removed.
pub fn write_key_pair(base: &Path, key: &SigningKey) -> Result<KeyPairPaths, WriteError> {
    let paths = KeyPairPaths::for_base(base);
    if paths.public.exists() {
        return Err(WriteError::Exists { path: paths.public });
    }
    let name = base
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| fields::check_text(n, fields::MAX_NAME).is_ok())
        .map(str::to_owned);
    let public = PublicKey {
        key: key.verifying_key(),
        id: KeyId::of(&key.verifying_key()),
        name,
    };
    text::write_new(&paths.secret, 0o600, &secret_key_toml(key))?;
    if let Err(e) = text::write_new(&paths.public, 0o644, &public.to_toml()) {
        let _ = std::fs::remove_file(&paths.secret);
        return Err(e);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip() {
        let key = generate();
        let back = parse_secret_key(&secret_key_toml(&key)).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        let public = PublicKey {
            key: key.verifying_key(),
            id: KeyId::of(&key.verifying_key()),
            name: Some("ops-root".into()),
        };
        assert_eq!(PublicKey::parse(&public.to_toml()).unwrap(), public);
    }

    #[test]
    fn key_id_must_match_the_key() {
        let key = generate();
        let other = KeyId::of(&generate().verifying_key());
        let text = secret_key_toml(&key).replace(
            &KeyId::of(&key.verifying_key()).to_string(),
            &other.to_string(),
        );
        let e = parse_secret_key(&text).unwrap_err();
        assert!(e.to_string().contains("does not match the key"), "{e}");
    }

    #[test]
    fn key_pairs_are_written_once_and_privately() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!(
            "authz-keys-{}",
            crate::vocab::fields::ArtifactId::random()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("ops");
        let key = generate();
        let paths = write_key_pair(&base, &key).unwrap();
        let mode = std::fs::metadata(&paths.secret)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_secret_key(&paths.secret).unwrap().to_bytes(),
            key.to_bytes()
        );
        let public = PublicKey::read(&paths.public).unwrap();
        assert_eq!(public.name.as_deref(), Some("ops"));
        let err = write_key_pair(&base, &generate()).unwrap_err();
        assert!(matches!(err, WriteError::Exists { .. }), "{err}");
        // The refused attempt left the original key alone.
        assert_eq!(
            read_secret_key(&paths.secret).unwrap().to_bytes(),
            key.to_bytes()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
