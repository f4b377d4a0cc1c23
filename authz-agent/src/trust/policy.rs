//! The trust policy: which root keys the agent trusts, with what limits.
//!
//! It is the `[trust]` table of the agent's TOML config:
//!
//! ```toml
//! [trust]
//! version = 3            # the current trust-policy version
//! min_version = 2        # oldest version still accepted (default: version)
//! max_chain_length = 2   # most delegation links in a permit (default 2, at most 8)
//! retired = ["9f86d0...a08"]   # key ids no longer trusted, root or delegate
//!
//! [[trust.roots]]
//! name = "ops-root"                 # informative
//! public_key = "3b6a27bc...f6"      # from ops-root.pub
//! key_id = "4c8e...17"              # optional; checked against public_key
//! cgroup_prefixes = ["/jobs.slice"]
//! max_ttl = "30d"                   # longest permit lifetime, humantime syntax
//! ```
use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::vocab::{
    fields::{self, CgroupPath},
    keyid::{parse_public_key, KeyId},
    text::{self, LineAt},
    time::parse_duration,
};

/// Default for `max_chain_length`.
pub const DEFAULT_MAX_CHAIN: usize = 2;
/// Largest `max_chain_length` a policy may set.
pub const MAX_CHAIN_LIMIT: usize = 8;
/// Largest config file read.
pub const MAX_CONFIG: usize = 1024 * 1024;

/// A trusted root key and the authority it has.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRoot")]
pub struct RootKey {
    pub name: Option<String>,
    pub key: VerifyingKey,
    pub key_id: KeyId,
    /// Cgroups (and their descendants) it may issue permits and delegations for.
    pub cgroup_prefixes: Vec<CgroupPath>,
    /// Longest permit lifetime it may issue or delegate.
    pub max_ttl_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    name: Option<String>,
    public_key: String,
    key_id: Option<KeyId>,
    cgroup_prefixes: Vec<CgroupPath>,
    max_ttl: String,
}

impl TryFrom<RawRoot> for RootKey {
    type Error = String;

    fn try_from(raw: RawRoot) -> Result<Self, String> {
        let key = parse_public_key(&raw.public_key).map_err(|e| format!("public_key: {e}"))?;
        let key_id = KeyId::of(&key);
        if raw.key_id.is_some_and(|id| id != key_id) {
            return Err(format!(
                "key_id does not match public_key (its id is {key_id})"
            ));
        }
        if let Some(name) = &raw.name {
            fields::check_text(name, fields::MAX_NAME).map_err(|e| format!("name: {e}"))?;
        }
        if raw.cgroup_prefixes.is_empty() || raw.cgroup_prefixes.len() > fields::MAX_PREFIXES {
            return Err(format!(
                "cgroup_prefixes: list 1 to {} prefixes (\"/\" for every cgroup)",
                fields::MAX_PREFIXES
            ));
        }
        let max_ttl_seconds = parse_duration(&raw.max_ttl).map_err(|e| format!("max_ttl: {e}"))?;
        Ok(Self {
            name: raw.name,
            key,
            key_id,
            cgroup_prefixes: raw.cgroup_prefixes,
            max_ttl_seconds,
        })
    }
}

impl RootKey {
    /// A root key trusted for `cgroup_prefixes`, permits up to `max_ttl_seconds`.
    pub fn new(
        name: Option<String>,
        key: VerifyingKey,
        cgroup_prefixes: Vec<CgroupPath>,
        max_ttl_seconds: u64,
    ) -> Self {
        Self {
            name,
            key_id: KeyId::of(&key),
            key,
            cgroup_prefixes,
            max_ttl_seconds,
        }
    }
}

impl fmt::Display for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.key_id),
            None => write!(f, "{}", self.key_id),
        }
    }
}

/// The `[trust]` table: trusted roots, retired keys and policy versions.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct TrustPolicy {
    /// The current policy version; new permits are issued under it.
    pub version: u32,
    /// Permits and delegations issued under an older version are refused.
    pub min_version: u32,
    /// Most delegation links a permit may carry.
    pub max_chain_length: usize,
    /// Keys no longer trusted, wherever they appear in a chain.
    pub retired: HashSet<KeyId>,
    pub roots: Vec<RootKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: u32,
    min_version: Option<u32>,
    max_chain_length: Option<usize>,
    #[serde(default)]
    retired: Vec<KeyId>,
    #[serde(default)]
    roots: Vec<RootKey>,
}

impl TryFrom<RawPolicy> for TrustPolicy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        let min_version = raw.min_version.unwrap_or(raw.version);
        if min_version > raw.version {
            return Err(format!(
                "min_version {min_version} is newer than version {}",
                raw.version
            ));
        }
        let max_chain_length = raw.max_chain_length.unwrap_or(DEFAULT_MAX_CHAIN);
        if max_chain_length > MAX_CHAIN_LIMIT {
            return Err(format!("max_chain_length is at most {MAX_CHAIN_LIMIT}"));
        }
        let mut seen = HashSet::new();
        for root in &raw.roots {
            if !seen.insert(root.key_id) {
                return Err(format!("root key {} is listed twice", root.key_id));
            }
        }
        Ok(Self {
            version: raw.version,
            min_version,
            max_chain_length,
            retired: raw.retired.into_iter().collect(),
            roots: raw.roots,
        })
    }
}

/// The trust policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid trust policy{}{}: {message}", InPath(.path.as_deref()), LineAt(*.line))]
    Invalid {
        path: Option<PathBuf>,
        line: Option<usize>,
        message: String,
    },
}

struct InPath<'a>(Option<&'a Path>);

impl fmt::Display for InPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " in {}", p.display()),
            None => Ok(()),
        }
    }
}

/// A config file: the `[trust]` table, other tables left to their owners.
#[derive(Deserialize)]
struct ConfigFile {
    trust: Option<TrustPolicy>,
}

impl TrustPolicy {
    /// A policy at `version` trusting `roots`, with the defaults for the rest:
    /// only `version` accepted, chains of up to [`DEFAULT_MAX_CHAIN`] links,
    /// nothing retired.
    pub fn new(version: u32, roots: Vec<RootKey>) -> Self {
        Self {
            version,
            min_version: version,
            max_chain_length: DEFAULT_MAX_CHAIN,
            retired: HashSet::new(),
            roots,
        }
    }

    /// Reads the `[trust]` table of the TOML config `text`, ignoring the
    /// config's other top-level tables.
    pub fn from_config_str(text: &str) -> Result<Self, PolicyError> {
        let invalid = |line, message| PolicyError::Invalid {
            path: None,
            line,
            message,
        };
        if text.len() > MAX_CONFIG {
            return Err(invalid(
                None,
                format!("the config is over {MAX_CONFIG} bytes"),
            ));
        }
        let config: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text::line_of(text, s.start));
            invalid(line, text::one_line(e.message()))
        })?;
        config
            .trust
            .ok_or_else(|| invalid(None, "the config has no [trust] table".into()))
    }

    /// Reads the `[trust]` table of the config file at `path`.
    pub fn from_config_file(path: &Path) -> Result<Self, PolicyError> {
        let read_err = |source| PolicyError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = {
            use std::io::Read as _;
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_CONFIG as u64 + 1).read_to_end(&mut bytes))
                .map_err(read_err)?;
            bytes
        };
        let text = String::from_utf8_lossy(&bytes);
        Self::from_config_str(&text).map_err(|e| match e {
            PolicyError::Invalid { line, message, .. } => PolicyError::Invalid {
                path: Some(path.to_owned()),
                line,
                message,
            },
            other => other,
        })
    }

    /// The root key with id `id`, if trusted (retired or not).
    pub fn root(&self, id: &KeyId) -> Option<&RootKey> {
        self.roots.iter().find(|r| &r.key_id == id)
    }

    pub fn is_retired(&self, id: &KeyId) -> bool {
        self.retired.contains(id)
    }

    /// Whether something issued under policy version `v` is still accepted.
    pub fn accepts_version(&self, v: u32) -> bool {
        (self.min_version..=self.version).contains(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::keys::generate;

    fn config(public_key: &str) -> String {
        format!(
            r#"
[daemon]
anything = "the daemon's own settings"

[trust]
version = 3
min_version = 2
retired = []

[[trust.roots]]
name = "ops-root"
public_key = "{public_key}"
cgroup_prefixes = ["/jobs.slice/"]
max_ttl = "30d"
"#
        )
    }

    #[test]
    fn reads_the_trust_table_of_a_larger_config() {
        let key = generate().verifying_key();
        let p = TrustPolicy::from_config_str(&config(&hex::encode(key.as_bytes()))).unwrap();
        assert_eq!(
            (p.version, p.min_version, p.max_chain_length),
            (3, 2, DEFAULT_MAX_CHAIN)
        );
        let root = p.root(&KeyId::of(&key)).unwrap();
        assert_eq!(root.cgroup_prefixes[0].as_str(), "/jobs.slice");
        assert_eq!(root.max_ttl_seconds, 30 * 86_400);
        assert!(p.accepts_version(2) && p.accepts_version(3));
        assert!(!p.accepts_version(1) && !p.accepts_version(4));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values_with_a_line() {
        let key = hex::encode(generate().verifying_key().as_bytes());
        let text = config(&key).replace("min_version = 2", "min_version = 2\nmystery = 1");
        let e = TrustPolicy::from_config_str(&text).unwrap_err().to_string();
        assert!(e.contains("mystery") && e.contains("line"), "{e}");
        let text = config(&key).replace("max_ttl = \"30d\"", "max_ttl = \"forever\"");
        let e = TrustPolicy::from_config_str(&text).unwrap_err().to_string();
        assert!(e.contains("max_ttl"), "{e}");
        let text = config(&key).replace("min_version = 2", "min_version = 4");
        assert!(TrustPolicy::from_config_str(&text).is_err());
        let e = TrustPolicy::from_config_str("[other]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no [trust] table"), "{e}");
        let text = config(&key).replace("\"/jobs.slice/\"", "\"jobs\"");
        assert!(TrustPolicy::from_config_str(&text).is_err());
    }

    #[test]
    fn key_id_must_match_public_key() {
        let key = hex::encode(generate().verifying_key().as_bytes());
        let other = KeyId::of(&generate().verifying_key());
        let text = config(&key).replace("max_ttl", &format!("key_id = \"{other}\"\nmax_ttl"));
        let e = TrustPolicy::from_config_str(&text).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }
}
