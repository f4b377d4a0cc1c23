//! Key ids and the canonical spelling of keys in signed files.
//!
//! A key id is the SHA-256 of a 32-byte ed25519 public key; every signed file
//! names keys by id (`issuer`) or by public key (`delegate_key`).
use std::{fmt, str::FromStr};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::fields::parse_hex;

/// A key's id: SHA-256 of its 32-byte ed25519 public key, written as 64
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// The first 16 hex digits, for summaries that also print the full id.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Not a key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a key id (64 hex digits)")]
pub struct BadKeyId(pub String);

impl FromStr for KeyId {
    type Err = BadKeyId;

    /// Accepts either case (people type these into configs).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| BadKeyId(s.to_owned()))?;
        Ok(Self(b))
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A key id in its canonical spelling (as signed files must use).
pub fn parse_key_id(s: &str) -> Result<KeyId, String> {
    parse_hex::<32>(s).map(KeyId)
}

/// A public key in its canonical spelling: 64 lowercase hex digits that are a
/// valid, non-weak ed25519 point.
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let bytes = parse_hex::<32>(s)?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "not a valid ed25519 public key".to_owned())?;
    if key.is_weak() {
        return Err("a weak (small-order) ed25519 key; it cannot be trusted".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    #[test]
    fn weak_and_invalid_public_keys_are_refused() {
        // The identity point is small-order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_public_key(&hex::encode(identity))
            .unwrap_err()
            .contains("weak"));
        assert!(parse_public_key(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn key_ids_parse_leniently_but_files_strictly() {
        let id = KeyId::of(&SigningKey::generate(&mut rand_core::OsRng).verifying_key());
        assert_eq!(id.to_string().to_uppercase().parse::<KeyId>().unwrap(), id);
        assert!(parse_key_id(&id.to_string().to_uppercase()).is_err());
        assert_eq!(id.short().len(), 16);
    }
}
