//! The daemon's state on disk (`state_dir`, e.g. /var/lib/authz):
//!
//! ```text
//! artifacts/<id>.toml   every accepted artifact, byte for byte as submitted
//! revocations.toml      revoked ids (only grows, but see compaction below)
//! state.toml            the mode set with `authz-agent mode`
//! ```
//!
//! Every file is written atomically: a temporary file in the same directory,
//! fsync, rename over the old name, fsync of the directory. A crash leaves
//! either the old or the new version, never a torn one, and nothing acknowledged
//! to a client is lost.
//!
//! Compaction of the revocation list: an entry records until when the revoked
//! artifact (or delegation) could have been valid. Past that instant the
//! artifact fails verification as expired anyway, so a replay is refused even
//! without the entry; the daemon drops such entries when it rewrites the list.
//! Entries revoked without a known expiry (an id the store never held) are kept
//! for good.
use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    artifact::{time::Timestamp, ArtifactId},
    enforcer::Mode,
};

/// Largest artifact file the store reads back.
pub const MAX_ARTIFACT_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {0}")]
    Io(PathBuf, #[source] io::Error),
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(path.to_owned(), e)
}

/// One revoked id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub id: String,
    pub revoked_at: String,
    /// The revoked artifact's expiry, when known: the entry may be dropped after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationFile {
    #[serde(default)]
    revoked: Vec<Revocation>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    mode: Option<Mode>,
}

/// A stored artifact that could be read back.
#[derive(Clone, Debug)]
pub struct StoredArtifact {
    pub id: ArtifactId,
    pub path: PathBuf,
    pub text: String,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating, mode 0700) the state directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        for d in [dir.to_owned(), dir.join("artifacts")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(io_err(&d))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The state directory at `dir`, for reading only: creates nothing.
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn artifact_path(&self, id: &ArtifactId) -> PathBuf {
        self.dir.join("artifacts").join(format!("{id}.toml"))
    }

    /// Stores an accepted artifact (atomically, durably).
    pub fn save_artifact(&self, id: &ArtifactId, text: &str) -> Result<(), StoreError> {
        let path = self.artifact_path(id);
        write_atomic(&path, text.as_bytes(), 0o600).map_err(io_err(&path))
    }

    /// Removes an artifact (expired or revoked).
    pub fn remove_artifact(&self, id: &ArtifactId) -> Result<(), StoreError> {
        let path = self.artifact_path(id);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir.join("artifacts")).map_err(io_err(&path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }

    /// Every stored artifact; files that cannot be read are returned as errors
    /// (reported and skipped by the caller, never fatal).
    pub fn artifacts(&self) -> Result<Vec<Result<StoredArtifact, StoreError>>, StoreError> {
        self.read_artifacts(true)
    }

    /// As [`Store::artifacts`], changing nothing: for readers beside a running
    /// agent, whose temporary files are left alone.
    pub fn artifacts_read_only(
        &self,
    ) -> Result<Vec<Result<StoredArtifact, StoreError>>, StoreError> {
        self.read_artifacts(false)
    }

    fn read_artifacts(
        &self,
        remove_temporaries: bool,
    ) -> Result<Vec<Result<StoredArtifact, StoreError>>, StoreError> {
        let dir = self.dir.join("artifacts");
        let mut out = Vec::new();
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.starts_with('.') {
                // A temporary file a crash left behind: never acknowledged.
                if remove_temporaries {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".toml") else {
                continue;
            };
            out.push(read_artifact(&path, stem));
        }
        Ok(out)
    }

    fn revocations_path(&self) -> PathBuf {
        self.dir.join("revocations.toml")
    }

    /// The revocation list, by id.
    pub fn revocations(&self) -> Result<BTreeMap<ArtifactId, Revocation>, StoreError> {
        let path = self.revocations_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(StoreError::Io(path, e)),
        };
        let file: RevocationFile = toml::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.message().to_owned(),
        })?;
        let mut out = BTreeMap::new();
        for r in file.revoked {
            let id: ArtifactId =
                r.id.parse()
                    .map_err(
                        |e: crate::artifact::fields::BadArtifactId| StoreError::Corrupt {
                            path: path.clone(),
                            message: e.to_string(),
                        },
                    )?;
            out.insert(id, r);
        }
        Ok(out)
    }

    /// Rewrites the revocation list, dropping entries whose `until` has passed.
    pub fn save_revocations(
        &self,
        list: &BTreeMap<ArtifactId, Revocation>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let revoked: Vec<Revocation> = list
            .values()
            .filter(|r| !r.compactable(now))
            .cloned()
            .collect();
        let text =
            toml::to_string(&RevocationFile { revoked }).map_err(|e| StoreError::Corrupt {
                path: self.revocations_path(),
                message: e.to_string(),
            })?;
        let path = self.revocations_path();
        write_atomic(&path, text.as_bytes(), 0o600).map_err(io_err(&path))
    }

    /// The persisted mode, if `authz-agent mode` ever set one.
    pub fn mode(&self) -> Result<Option<Mode>, StoreError> {
        let path = self.dir.join("state.toml");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let state: StateFile = toml::from_str(&text).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    message: e.message().to_owned(),
                })?;
                Ok(state.mode)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }

    pub fn save_mode(&self, mode: Mode) -> Result<(), StoreError> {
        let path = self.dir.join("state.toml");
        let text =
            toml::to_string(&StateFile { mode: Some(mode) }).expect("plain struct serializes");
        write_atomic(&path, text.as_bytes(), 0o600).map_err(io_err(&path))
    }
}

impl Revocation {
    /// Whether the entry can be dropped at `now` (see the module docs).
    pub fn compactable(&self, now: Timestamp) -> bool {
        self.until
            .as_deref()
            .and_then(|u| u.parse::<Timestamp>().ok())
            .is_some_and(|until| until < now)
    }
}

fn read_artifact(path: &Path, stem: &str) -> Result<StoredArtifact, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_owned(),
        message,
    };
    let id: ArtifactId = stem
        .parse()
        .map_err(|e: crate::artifact::fields::BadArtifactId| corrupt(e.to_string()))?;
    let len = fs::metadata(path).map_err(io_err(path))?.len();
    if len > MAX_ARTIFACT_BYTES {
        return Err(corrupt(format!(
            "{len} bytes, over the {MAX_ARTIFACT_BYTES}-byte limit"
        )));
    }
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    Ok(StoredArtifact {
        id,
        path: path.to_owned(),
        text,
    })
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content,
/// never a mixture, and the new content is on disk when this returns.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no directory"))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut nonce = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let temp = dir.join(format!(".{name}.{}.tmp", hex::encode(nonce)));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (Store, PathBuf) {
        let mut nonce = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let dir = std::env::temp_dir().join(format!("authz-store-test-{}", hex::encode(nonce)));
        (Store::open(&dir).unwrap(), dir)
    }

    #[test]
    fn artifacts_round_trip_and_leftover_temp_files_are_ignored() {
        let (store, dir) = temp_store();
        let id = ArtifactId([7; 16]);
        store.save_artifact(&id, "text = 1\n").unwrap();
        fs::write(dir.join("artifacts/.leftover.tmp"), "torn").unwrap();
        fs::write(dir.join("artifacts/not-an-id.toml"), "x").unwrap();
        let all = store.artifacts().unwrap();
        let ok: Vec<_> = all.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].id, id);
        assert_eq!(ok[0].text, "text = 1\n");
        assert_eq!(
            all.iter().filter(|r| r.is_err()).count(),
            1,
            "the bad name is reported"
        );
        assert!(!dir.join("artifacts/.leftover.tmp").exists());
        store.remove_artifact(&id).unwrap();
        store.remove_artifact(&id).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn revocations_persist_and_compact_after_their_expiry() {
        let (store, dir) = temp_store();
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let mut list = BTreeMap::new();
        list.insert(
            ArtifactId([1; 16]),
            Revocation {
                id: ArtifactId([1; 16]).to_string(),
                revoked_at: "2026-05-01T00:00:00Z".into(),
                until: Some("2026-05-15T00:00:00Z".into()),
                reason: None,
            },
        );
        list.insert(
            ArtifactId([2; 16]),
            Revocation {
                id: ArtifactId([2; 16]).to_string(),
                revoked_at: "2026-05-01T00:00:00Z".into(),
                until: Some("2026-07-01T00:00:00Z".into()),
                reason: Some("leaked".into()),
            },
        );
        list.insert(
            ArtifactId([3; 16]),
            Revocation {
                id: ArtifactId([3; 16]).to_string(),
                revoked_at: "2026-05-01T00:00:00Z".into(),
                until: None,
                reason: None,
            },
        );
        store.save_revocations(&list, now).unwrap();
        let back = store.revocations().unwrap();
        assert_eq!(back.len(), 2, "the entry past its expiry is compacted");
        assert!(back.contains_key(&ArtifactId([2; 16])));
        assert!(
            back.contains_key(&ArtifactId([3; 16])),
            "unknown expiry: kept for good"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn mode_persists() {
        let (store, dir) = temp_store();
        assert_eq!(store.mode().unwrap(), None);
        store.save_mode(Mode::Enforce).unwrap();
        assert_eq!(store.mode().unwrap(), Some(Mode::Enforce));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_revocation_list_is_an_error_not_an_empty_list() {
        let (store, dir) = temp_store();
        fs::write(dir.join("revocations.toml"), "revoked = 3\n").unwrap();
        assert!(matches!(
            store.revocations(),
            Err(StoreError::Corrupt { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }
}
