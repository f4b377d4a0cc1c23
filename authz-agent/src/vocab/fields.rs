//! Field types shared by artifacts, delegations and keys, and the checks that
//! make every accepted value have exactly one spelling.
use std::{fmt, str::FromStr};

use crate::cgroup::{self, CgroupError};

/// SHA-256 of a binary.
pub type Digest = [u8; 32];

/// Longest cgroup path or path hint (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest name hint (NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Longest identity in `requested_by` / `on_behalf_of`.
pub const MAX_IDENTITY: usize = 256;
/// Longest free-text `reason`.
pub const MAX_REASON: usize = 1024;
/// Most cgroup prefixes one delegation or root key may list.
pub const MAX_PREFIXES: usize = 64;

/// A permit's or delegation's unique id: 128 random bits from the OS.
///
/// Written as 32 lowercase hex digits (what `revoke ID` takes). `FromStr`
/// also accepts upper case and `-` separators, as people paste ids; files
/// must use the canonical form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactId(pub [u8; 16]);

impl ArtifactId {
    /// A fresh id from the operating system's random number generator.
    pub fn random() -> Self {
        use rand_core::RngCore as _;
        let mut b = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut b);
        Self(b)
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactId({self})")
    }
}

/// Not an artifact id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an artifact id (32 hex digits)")]
pub struct BadArtifactId(pub String);

impl FromStr for ArtifactId {
    type Err = BadArtifactId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.trim().chars().filter(|&c| c != '-').collect();
        let mut b = [0u8; 16];
        hex::decode_to_slice(&compact, &mut b).map_err(|_| BadArtifactId(s.to_owned()))?;
        Ok(Self(b))
    }
}

/// `N` bytes written as exactly `2N` lowercase hex digits.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    if s.len() != 2 * N || s.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("expected {} lowercase hex digits", 2 * N));
    }
    hex::decode_to_slice(s, &mut b)
        .map_err(|_| format!("expected {} lowercase hex digits", 2 * N))?;
    Ok(b)
}

/// An artifact id in its canonical spelling.
pub fn parse_id(s: &str) -> Result<ArtifactId, String> {
    parse_hex::<16>(s).map(ArtifactId)
}

/// A text field: non-empty, at most `max` bytes, one line, no control characters.
pub fn check_text(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty (leave the field out instead)".into());
    }
    if s.len() > max {
        return Err(format!("{} bytes long; the limit is {max}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters (newlines, tabs, ...)".into());
    }
    Ok(())
}

/// An optional text field (see [`check_text`]).
pub fn check_opt_text(s: Option<&str>, max: usize) -> Result<(), String> {
    s.map_or(Ok(()), |s| check_text(s, max))
}

/// A cgroup v2 path in canonical form: `/`, or `/a/b` with no empty, `.` or
/// `..` components and no trailing `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupPath(String);

impl CgroupPath {
    /// Normalizes what a person typed (`/a/./b/` becomes `/a/b`).
    pub fn normalize(s: &str) -> Result<Self, CgroupError> {
        let rel = cgroup::normalize(s)?;
        let rel = rel
            .to_str()
            .ok_or_else(|| CgroupError::BadPath(s.to_owned()))?;
        let path = Self(format!("/{rel}"));
        check_text(&path.0, MAX_PATH).map_err(|_| CgroupError::BadPath(s.to_owned()))?;
        Ok(path)
    }

    /// Accepts only the canonical spelling (as files must use).
    pub fn parse_canonical(s: &str) -> Result<Self, String> {
        check_text(s, MAX_PATH)?;
        match Self::normalize(s) {
            Ok(p) if p.0 == s => Ok(p),
            Ok(p) => Err(format!("not in canonical form; write {:?}", p.0)),
            Err(_) => {
                Err("must be an absolute cgroup path without `..`, like /jobs.slice/build".into())
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this cgroup or one of its descendants.
    pub fn contains(&self, other: &CgroupPath) -> bool {
        self.0 == "/"
            || other.0 == self.0
            || other
                .0
                .strip_prefix(&self.0)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for CgroupPath {
    type Err = CgroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::normalize(s)
    }
}

impl<'de> serde::Deserialize<'de> for CgroupPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::normalize(&s).map_err(serde::de::Error::custom)
    }
}

/// Lists `prefixes` for a message: `/a, /b`.
pub fn join_prefixes(prefixes: &[CgroupPath]) -> String {
    let v: Vec<&str> = prefixes.iter().map(CgroupPath::as_str).collect();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_ids_round_trip() {
        let id = ArtifactId::random();
        assert_ne!(id, ArtifactId::random());
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<ArtifactId>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<ArtifactId>().unwrap(), id);
        assert_eq!(parse_id(&s).unwrap(), id);
        assert!(parse_id(&s.to_uppercase()).is_err());
        assert!("xyz".parse::<ArtifactId>().is_err());
        assert!(parse_hex::<2>("abc").is_err());
        assert!(parse_hex::<2>("zzzz").is_err());
    }

    #[test]
    fn cgroup_paths_are_canonical() {
        assert_eq!(CgroupPath::normalize("/a/./b/").unwrap().as_str(), "/a/b");
        assert_eq!(CgroupPath::normalize("/").unwrap().as_str(), "/");
        assert!(CgroupPath::parse_canonical("/a/b").is_ok());
        assert!(CgroupPath::parse_canonical("/a/b/").is_err());
        assert!(CgroupPath::parse_canonical("a/b").is_err());
        assert!(CgroupPath::parse_canonical("/a/../b").is_err());
        assert!(CgroupPath::parse_canonical("/a\n").is_err());
        assert!(CgroupPath::parse_canonical("").is_err());
    }

    #[test]
    fn containment_is_by_component() {
        let p = |s: &str| CgroupPath::normalize(s).unwrap();
        assert!(p("/").contains(&p("/x")));
        assert!(p("/a").contains(&p("/a")));
        assert!(p("/a").contains(&p("/a/b")));
        assert!(!p("/a").contains(&p("/ab")));
        assert!(!p("/a/b").contains(&p("/a")));
    }

    #[test]
    fn text_fields_are_bounded() {
        assert!(check_text("ok", 2).is_ok());
        assert!(check_text("long", 2).is_err());
        assert!(check_text("", 2).is_err());
        assert!(check_text("a\tb", 9).is_err());
        assert!(check_opt_text(None, 1).is_ok());
    }
}
