//! Lockdown: only the agent changes what the kernel enforces, and leaving
//! that state takes a statement signed by a trust root.
//!
//! The kernel recognises an agent by the SHA-256 of the binary it exec'd
//! (`authz_agents`), so the code of this binary is what is trusted, never its
//! inputs. Everything an attacker with root controls is checked here:
//!
//! - the configuration file: held to the exact bytes lockdown began with
//!   (their digest lives in the guarded `authz_guard` map); an agent started
//!   with another file refuses to start unless a valid unlock statement comes
//!   with it;
//! - the trust roots and the host identity: recorded in `authz_guard` at the
//!   same time, so a statement is checked against the roots and machine id
//!   of the moment lockdown began, not against what the disk says now;
//! - the clock: a statement issued before lockdown began cannot end it, so an
//!   old statement replayed with the clock turned back is useless;
//! - the state directory: revocations are mirrored into the guarded
//!   `authz_revoked` map and read back at start, and a mode stored on disk
//!   never lowers a locked kernel's;
//! - the environment: an agent under lockdown maps only recorded agent code
//!   (the kernel refuses anything else), so `LD_PRELOAD` lends it nothing.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use authz_common::{agent_code, Digest, Guard, MAX_LOCK_ROOTS};
use sha2::{Digest as _, Sha256};

use crate::vocab::{
    keyid::KeyId,
    statement::{Action, Statement},
    time::Timestamp,
};

/// Where the host's identity is read.
pub const MACHINE_ID: &str = "/etc/machine-id";
/// How far a statement's `issued_at` may precede the start of lockdown
/// (clocks of the signer and the host differ a little).
pub const ISSUE_SLACK_SECS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "cannot read this host's machine id from {path} (lockdown binds unlock statements to it)"
    )]
    MachineId {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a machine id (32 lowercase hex digits)")]
    BadMachineId { path: PathBuf },
    #[error("cannot hash this agent's own code ({path})")]
    OwnCode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the trust policy has {found} roots; lockdown records at most {MAX_LOCK_ROOTS}")]
    TooManyRoots { found: usize },
    #[error("lockdown needs at least one trust root to sign its end; the trust policy has none")]
    NoRoots,
    #[error(
        "the kernel is locked down with another configuration file (locked: sha256 {locked}; \
         {path}: sha256 {found}); restore the file, or start with \
         `--unlock STATEMENT` signed by a trust root"
    )]
    ConfigChanged {
        path: PathBuf,
        locked: String,
        found: String,
    },
    #[error("the statement's signature does not verify")]
    BadSignature,
    #[error("the statement is signed by key {0}, which was not a trust root when lockdown began")]
    NotARoot(KeyId),
    #[error("the statement is for host {0}, not this one")]
    WrongHost(String),
    #[error("the statement is an {found} statement; this needs {wanted}")]
    WrongAction {
        found: &'static str,
        wanted: &'static str,
    },
    #[error("the statement is valid from {0}; it is not yet")]
    NotYetValid(Timestamp),
    #[error("the statement expired at {0}")]
    Expired(Timestamp),
    #[error(
        "the statement was issued at {issued}, before this lockdown began ({locked}); \
         sign a new one"
    )]
    IssuedBeforeLock {
        issued: Timestamp,
        locked: Timestamp,
    },
    #[error(
        "the kernel is locked down: {0} needs a signed unlock first \
         (`authz-agent lockdown unlock --statement FILE`)"
    )]
    Locked(&'static str),
    #[error("the kernel is not locked down")]
    NotLocked,
}

/// This host's machine id, validated.
pub fn machine_id(path: &Path) -> Result<String, LockError> {
    let text = fs::read_to_string(path).map_err(|source| LockError::MachineId {
        path: path.to_owned(),
        source,
    })?;
    let id = text.trim();
    crate::vocab::statement::check_host(id).map_err(|_| LockError::BadMachineId {
        path: path.to_owned(),
    })?;
    Ok(id.to_owned())
}

pub fn host_digest(machine_id: &str) -> Digest {
    Sha256::digest(machine_id.as_bytes()).into()
}

/// The kernel-held record of lockdown beginning now with `config_digest`,
/// this host and these roots.
pub fn begin(
    config_digest: Digest,
    machine_id: &str,
    roots: &[KeyId],
    now: Timestamp,
) -> Result<Guard, LockError> {
    if roots.is_empty() {
        return Err(LockError::NoRoots);
    }
    if roots.len() > MAX_LOCK_ROOTS {
        return Err(LockError::TooManyRoots { found: roots.len() });
    }
    let mut guard = Guard {
        config_digest,
        host_digest: host_digest(machine_id),
        locked_at: now.unix(),
        roots: roots.len() as u32,
        ..Guard::default()
    };
    for (slot, root) in guard.root_key_ids.iter_mut().zip(roots) {
        *slot = root.0;
    }
    Ok(guard)
}

/// Whether the configuration is the one lockdown began with.
pub fn admit_config(guard: &Guard, path: &Path, digest: &Digest) -> Result<(), LockError> {
    if &guard.config_digest == digest {
        Ok(())
    } else {
        Err(LockError::ConfigChanged {
            path: path.to_owned(),
            locked: hex::encode(guard.config_digest),
            found: hex::encode(digest),
        })
    }
}

/// Checks `statement` for `action` against the state lockdown began with,
/// at `now`.
pub fn check_statement(
    statement: &Statement,
    action: Action,
    guard: &Guard,
    now: Timestamp,
) -> Result<(), LockError> {
    let c = statement.claim();
    statement
        .verify_signature()
        .map_err(|_| LockError::BadSignature)?;
    let issuer = statement.issuer();
    let roots = &guard.root_key_ids[..(guard.roots as usize).min(MAX_LOCK_ROOTS)];
    if !roots.contains(&issuer.0) {
        return Err(LockError::NotARoot(issuer));
    }
    if c.action != action {
        return Err(LockError::WrongAction {
            found: c.action.as_str(),
            wanted: action.as_str(),
        });
    }
    if host_digest(&c.host) != guard.host_digest {
        return Err(LockError::WrongHost(c.host.clone()));
    }
    if c.issued_at.unix().saturating_add(ISSUE_SLACK_SECS) < guard.locked_at {
        return Err(LockError::IssuedBeforeLock {
            issued: c.issued_at,
            locked: Timestamp::from_unix(guard.locked_at).unwrap_or(c.issued_at),
        });
    }
    if now < c.not_before {
        return Err(LockError::NotYetValid(c.not_before));
    }
    if now >= c.expires {
        return Err(LockError::Expired(c.expires));
    }
    Ok(())
}

/// One file of this process's own code, as the kernel will see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnCode {
    pub digest: Digest,
    /// `agent_code::BINARY` or `agent_code::LIBRARY`.
    pub kind: u32,
    pub path: String,
}

/// The running binary and every file it has mapped executable (its loader
/// and libraries), hashed through the mappings themselves
/// (`/proc/self/map_files`), so a file replaced on disk since it was mapped
/// is hashed as it was mapped.
pub fn own_code() -> Result<Vec<OwnCode>, LockError> {
    let exe = PathBuf::from("/proc/self/exe");
    let binary = hash_file(&exe)?;
    let exe_name = fs::read_link(&exe)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    out.insert(OwnCode {
        digest: binary,
        kind: agent_code::BINARY,
        path: exe_name,
    });
    let maps_path = PathBuf::from("/proc/self/maps");
    let maps = fs::read_to_string(&maps_path).map_err(|source| LockError::OwnCode {
        path: maps_path,
        source,
    })?;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path = parts.nth(3).unwrap_or("");
        if !perms.contains('x') || !path.starts_with('/') {
            continue;
        }
        let digest = hash_file(&PathBuf::from(format!("/proc/self/map_files/{range}")))?;
        if digest != binary {
            out.insert(OwnCode {
                digest,
                kind: agent_code::LIBRARY,
                path: path.to_owned(),
            });
        }
    }
    Ok(out.into_iter().collect())
}

pub fn hash_file(path: &Path) -> Result<Digest, LockError> {
    let err = |source| LockError::OwnCode {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(err)?;
    crate::artifact::issue::hash_reader(file).map_err(err)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::vocab::{fields::ArtifactId, statement::Claim};

    const HOST: &str = "0123456789abcdef0123456789abcdef";

    fn root() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    fn unlock(key: &SigningKey, host: &str, issued: u64) -> Statement {
        Claim {
            id: ArtifactId([9; 16]),
            issued_at: Timestamp::from_unix(issued).unwrap(),
            issuer_key: key.verifying_key(),
            action: Action::Unlock,
            host: host.into(),
            not_before: Timestamp::from_unix(issued).unwrap(),
            expires: Timestamp::from_unix(issued + 600).unwrap(),
            agents: Vec::new(),
            reason: None,
        }
        .sign(key)
        .unwrap()
    }

    fn guard(locked_at: u64) -> Guard {
        begin(
            [5; 32],
            HOST,
            &[KeyId::of(&root().verifying_key())],
            Timestamp::from_unix(locked_at).unwrap(),
        )
        .unwrap()
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix(secs).unwrap()
    }

    #[test]
    fn a_root_signed_statement_for_this_host_in_its_window_is_accepted() {
        let g = guard(1_000_000);
        let s = unlock(&root(), HOST, 1_000_100);
        check_statement(&s, Action::Unlock, &g, at(1_000_200)).unwrap();
    }

    #[test]
    fn every_other_statement_is_refused_with_its_reason() {
        let g = guard(1_000_000);
        let other_key = SigningKey::from_bytes(&[2; 32]);
        let cases = [
            (
                unlock(&other_key, HOST, 1_000_100),
                at(1_000_200),
                "not a trust root",
            ),
            (
                unlock(&root(), "fedcba9876543210fedcba9876543210", 1_000_100),
                at(1_000_200),
                "not this one",
            ),
            (unlock(&root(), HOST, 1_000_100), at(1_000_050), "not yet"),
            (unlock(&root(), HOST, 1_000_100), at(1_000_700), "expired"),
            (
                unlock(&root(), HOST, 990_000),
                at(990_100),
                "before this lockdown",
            ),
        ];
        for (s, now, why) in cases {
            let e = check_statement(&s, Action::Unlock, &g, now).unwrap_err();
            assert!(e.to_string().contains(why), "{e} / {why}");
        }
        let s = unlock(&root(), HOST, 1_000_100);
        assert!(matches!(
            check_statement(&s, Action::AdoptAgent, &g, at(1_000_200)),
            Err(LockError::WrongAction { .. })
        ));
    }

    #[test]
    fn only_the_locked_config_is_admitted() {
        let g = guard(1);
        admit_config(&g, Path::new("/c"), &[5; 32]).unwrap();
        let e = admit_config(&g, Path::new("/c"), &[6; 32]).unwrap_err();
        assert!(e.to_string().contains("--unlock"), "{e}");
    }

    #[test]
    fn lockdown_needs_roots_and_records_them() {
        assert!(matches!(
            begin([0; 32], HOST, &[], at(1)),
            Err(LockError::NoRoots)
        ));
        let g = guard(7);
        assert_eq!(g.roots, 1);
        assert_eq!(g.locked_at, 7);
        assert_eq!(g.host_digest, host_digest(HOST));
    }

    #[test]
    fn own_code_names_this_binary_and_its_libraries() {
        let code = own_code().unwrap();
        assert_eq!(
            code.iter().filter(|c| c.kind == agent_code::BINARY).count(),
            1
        );
        // A dynamically linked test binary maps at least the loader and libc.
        assert!(code.iter().any(|c| c.kind == agent_code::LIBRARY));
    }
}
