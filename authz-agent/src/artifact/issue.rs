//! Issuing permits: hashing the binary and signing the artifact.
use std::{
    fs, io,
    io::Read,
    path::{Path, PathBuf},
};

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

use super::{
    Artifact, ArtifactError, ArtifactId, Body, Digest, Kind, Library, Provenance, Scope, Subject,
    Timestamp, Validity, MAX_LIBRARIES,
};
use crate::{
    elf::{self, ElfError},
    vocab::{
        delegation::Delegation,
        fields::{check_text, MAX_NAME, MAX_PATH},
        hosts::HostBinding,
        keyid::KeyId,
    },
};

/// Read size for hashing: large enough that syscalls cost nothing next to
/// SHA-256, small enough to stay in L2.
const HASH_CHUNK: usize = 256 * 1024;

/// SHA-256 of everything `reader` yields, reading it in fixed-size chunks.
pub fn hash_reader(mut reader: impl Read) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// SHA-256 of the file at `path`, streamed (never held in memory whole).
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let file = fs::File::open(path)?;
    // Only a hint: tell the kernel to read ahead aggressively.
    let _ = nix::fcntl::posix_fadvise(
        &file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
    hash_reader(file)
}

/// What a new permit should allow.
#[derive(Clone, Debug)]
pub struct Request {
    pub subject: Subject,
    pub scope: Scope,
    /// Start of validity (usually now).
    pub not_before: Timestamp,
    /// Lifetime in seconds: the permit expires at `not_before + ttl_seconds`.
    pub ttl_seconds: u64,
    /// Trust-policy version the permit is issued under.
    pub policy_version: u32,
    pub provenance: Provenance,
    /// Files the binary may map executable besides itself.
    pub libraries: Vec<Library>,
}

/// Why a binary's libraries could not be listed for a permit.
#[derive(Debug, thiserror::Error)]
pub enum LibrariesError {
    #[error("cannot list what {0} loads")]
    Closure(PathBuf, #[source] ElfError),
    #[error("cannot hash the library {0}")]
    Hash(PathBuf, #[source] io::Error),
    #[error(
        "{path} maps {count} distinct files besides itself; a permit lists at most \
         {MAX_LIBRARIES}: issue the rest in a second permit with --library"
    )]
    TooMany { path: PathBuf, count: usize },
}

/// The hint a path gives, when it is one a permit may carry.
fn path_hint(p: &Path, max: usize) -> Option<String> {
    p.to_str()
        .filter(|s| check_text(s, max).is_ok())
        .map(str::to_owned)
}

/// One library entry for the file at `path`, hashed now, with its canonical
/// path as the hint.
pub fn library_for_file(path: &Path) -> Result<Library, LibrariesError> {
    let sha256 = hash_file(path).map_err(|e| LibrariesError::Hash(path.to_owned(), e))?;
    let full = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    Ok(Library {
        sha256,
        path: path_hint(&full, MAX_PATH),
    })
}

/// What the program at `program` maps executable besides itself, as its
/// own loader resolves it ([`elf::closure`]): its interpreter, then its
/// shared libraries, each hashed now. Empty for a statically linked program.
/// Files with the same contents (or the program's own, `skip`) are listed
/// once (or not at all).
pub fn libraries_for_binary(program: &Path, skip: &Digest) -> Result<Vec<Library>, LibrariesError> {
    let closure =
        elf::closure(program).map_err(|e| LibrariesError::Closure(program.to_owned(), e))?;
    let mut out: Vec<Library> = Vec::new();
    for file in closure.files() {
        let lib = library_for_file(file)?;
        if lib.sha256 != *skip && !out.iter().any(|l| l.sha256 == lib.sha256) {
            out.push(lib);
        }
    }
    if out.len() > MAX_LIBRARIES {
        return Err(LibrariesError::TooMany {
            path: program.to_owned(),
            count: out.len(),
        });
    }
    tracing::debug!(program = %program.display(), libraries = out.len(), "listed libraries");
    Ok(out)
}

/// The subject for the binary at `path`, hashed now, with its canonical path
/// and file name as hints.
pub fn subject_for_binary(path: &Path) -> io::Result<Subject> {
    let sha256 = hash_file(path)?;
    let full = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    Ok(Subject {
        sha256,
        path: path_hint(&full, MAX_PATH),
        name: full
            .file_name()
            .and_then(|n| path_hint(Path::new(n), MAX_NAME)),
        exec_memory: false,
    })
}

/// Signs a new permit for `request` with `key`, carrying `delegation` (whose
/// last link must delegate to `key`) when the key is not a root key.
pub fn issue(
    request: Request,
    key: &SigningKey,
    delegation: Option<&Delegation>,
    now: Timestamp,
) -> Result<Artifact, ArtifactError> {
    issue_bound(request, None, key, delegation, now)
}

/// [`issue`], bound to `hosts` when given (live only on those hosts).
pub fn issue_bound(
    request: Request,
    hosts: Option<HostBinding>,
    key: &SigningKey,
    delegation: Option<&Delegation>,
    now: Timestamp,
) -> Result<Artifact, ArtifactError> {
    let id = ArtifactId::random();
    let _span = tracing::info_span!("issue", %id).entered();
    let issuer = KeyId::of(&key.verifying_key());
    if let Some(d) = delegation {
        if d.last().delegate_key_id() != issuer {
            return Err(ArtifactError::field(
                Kind::Artifact,
                "issuer",
                format!(
                    "the signing key {issuer} is not the key the delegation delegates to ({})",
                    d.last().delegate_key_id()
                ),
            ));
        }
    }
    let expires = request
        .not_before
        .checked_add(request.ttl_seconds)
        .ok_or_else(|| {
            ArtifactError::field(Kind::Artifact, "validity.expires", "is after year 9999")
        })?;
    let body = Body {
        id,
        issued_at: now,
        policy_version: request.policy_version,
        issuer,
        subject: request.subject,
        scope: request.scope,
        validity: Validity {
            not_before: request.not_before,
            expires,
        },
        provenance: request.provenance,
        libraries: request.libraries,
        chain: delegation.map(|d| d.links().to_vec()).unwrap_or_default(),
        hosts,
    };
    let artifact = body.sign(key)?;
    tracing::debug!(cgroup = %artifact.scope.cgroup, expires = %expires, "issued permit");
    Ok(artifact)
}
