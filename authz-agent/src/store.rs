//! The daemon's state on disk (`state_dir`, e.g. /var/lib/authz):
//!
//! ```text
//! artifacts/<id>.toml   every accepted artifact, byte for byte as submitted
//! revocations.toml      revoked ids (only grows, but see compaction below)
//! state.toml            the mode set with `authz-agent mode`
//! revocation-lists.toml the serial (and digest) of the last signed revocation
//!                       list applied from each signer
//! verified-index.json   what verification produced for each stored artifact,
//!                       sealed (crate::daemon::index); index.key seals it
//! ```
//!
//! Every file is written atomically: a temporary file in the same directory,
//! fsync, rename over the old name, fsync of the directory. A crash leaves
//! either the old or the new version, never a torn one, and nothing acknowledged
//! to a client is lost.
//!
//! Compaction of the revocation list. An entry may be dropped only once nothing
//! it revokes could verify again, and only on evidence that a wall-clock step
//! cannot fake. Each entry records:
//!
//! - `until`: the revoked object's own expiry: for a permit its effective
//!   expiry (bounded by its chain), for a delegation link the link's own
//!   `expires`, which bounds every permit ever issued under it. Absent when the
//!   agent held nothing that told it (an id it never saw, a delegation no held
//!   permit names): such an entry is kept for good.
//! - `observed_seconds`: real time the agent has seen pass since the
//!   revocation, counted on `CLOCK_BOOTTIME` between sweeps ([`ObservedClock`]).
//!   Wall-clock steps do not move it; time while no agent runs is not counted,
//!   and it is written to disk only every few minutes, so a crash loses some:
//!   it only ever runs late.
//!
//! An entry is dropped when both hold: the wall clock is past `until`, and
//! `observed_seconds` ≥ `until − revoked_at` (the time the wall clock said was
//! left when the revocation was made), and at least [`MIN_OBSERVED_SECONDS`].
//! So a clock stepped forward past `until` does not drop the entry (too little
//! time observed), and the entry is still there when the clock is set back.
//! The floor covers a clock that was already ahead when the revocation was
//! made and is corrected within a day. Entries written before
//! `observed_seconds` existed are kept for good: their `until` may come from an
//! older rule that ended a delegation's revocation with its permits.
use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    enforcer::Mode,
    vocab::{
        fields::ArtifactId,
        keyid::{BadKeyId, KeyId},
        time::Timestamp,
    },
};

/// Largest artifact file the store reads back.
pub const MAX_ARTIFACT_BYTES: u64 = authz_common::limits::MAX_ARTIFACT_BYTES as u64;

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

/// Least real time a running agent must observe before it drops an entry of
/// the revocation list, however soon what it revokes expires (module docs).
pub const MIN_OBSERVED_SECONDS: u64 = 24 * 3600;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// One revoked id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub id: String,
    pub revoked_at: String,
    /// The revoked object's own expiry, when known (module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Real time observed since the revocation (module docs); absent in
    /// entries written before it was counted, which are never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationFile {
    #[serde(default)]
    revoked: Vec<Revocation>,
}

/// The last signed revocation list applied from one signer: a later list
/// must have a higher serial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedList {
    /// Key id of the signer.
    pub signer: String,
    pub serial: u64,
    /// [`crate::revocation_list::RevocationList::digest`], hex: the same list
    /// delivered again is recognised rather than refused as stale.
    pub digest: String,
    pub applied_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppliedFile {
    #[serde(default)]
    applied: Vec<AppliedList>,
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
        let mut wanted = Vec::new();
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
            wanted.push((path, stem.to_owned()));
        }
        // Opening and reading 100,000 small files is most of a cold start's
        // reading: spread it over the cores, keeping the order.
        let read = crate::parallel::on_every_core(
            &wanted,
            |part| {
                part.iter()
                    .map(|(path, stem)| Some(read_artifact(path, stem)))
                    .collect()
            },
            || None,
        );
        Ok(read
            .into_iter()
            .zip(wanted)
            .map(|(r, (path, _))| {
                r.unwrap_or_else(|| {
                    Err(StoreError::Corrupt {
                        path,
                        message: "its reader failed".into(),
                    })
                })
            })
            .collect())
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
                        |e: crate::vocab::fields::BadArtifactId| StoreError::Corrupt {
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

    fn applied_lists_path(&self) -> PathBuf {
        self.dir.join("revocation-lists.toml")
    }

    /// The last revocation list applied from each signer, by signer.
    pub fn applied_lists(&self) -> Result<BTreeMap<KeyId, AppliedList>, StoreError> {
        let path = self.applied_lists_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(StoreError::Io(path, e)),
        };
        let corrupt = |message: String| StoreError::Corrupt {
            path: path.clone(),
            message,
        };
        let file: AppliedFile =
            toml::from_str(&text).map_err(|e| corrupt(e.message().to_owned()))?;
        file.applied
            .into_iter()
            .map(|a| {
                let signer: KeyId = a
                    .signer
                    .parse()
                    .map_err(|e: BadKeyId| corrupt(e.to_string()))?;
                Ok((signer, a))
            })
            .collect()
    }

    /// Rewrites the record of applied revocation lists.
    pub fn save_applied_lists(
        &self,
        applied: &BTreeMap<KeyId, AppliedList>,
    ) -> Result<(), StoreError> {
        let path = self.applied_lists_path();
        let file = AppliedFile {
            applied: applied.values().cloned().collect(),
        };
        let text = toml::to_string(&file).expect("plain struct serializes");
        write_atomic(&path, text.as_bytes(), 0o600).map_err(io_err(&path))
    }
}

impl Revocation {
    /// A revocation of `id` made at `now`, of something that could verify
    /// until `until` (None: unknown, kept for good).
    pub fn new(
        id: &ArtifactId,
        now: Timestamp,
        until: Option<Timestamp>,
        reason: Option<String>,
    ) -> Self {
        Self {
            id: id.to_string(),
            revoked_at: now.to_string(),
            until: until.map(|t| t.to_string()),
            observed_seconds: Some(0),
            reason,
        }
    }

    /// Whether the entry can be dropped at wall-clock time `now`: past
    /// `until`, and enough real time observed (see the module docs).
    pub fn compactable(&self, now: Timestamp) -> bool {
        let (Some(until), Some(observed)) = (
            self.until
                .as_deref()
                .and_then(|u| u.parse::<Timestamp>().ok()),
            self.observed_seconds,
        ) else {
            return false;
        };
        let Ok(revoked_at) = self.revoked_at.parse::<Timestamp>() else {
            return false;
        };
        let needed = until
            .seconds_since(revoked_at)
            .unwrap_or(0)
            .max(MIN_OBSERVED_SECONDS);
        until < now && observed >= needed
    }

    /// Adds `seconds` of observed real time (entries from before it was
    /// counted stay uncounted).
    pub fn observe(&mut self, seconds: u64) {
        if let Some(observed) = &mut self.observed_seconds {
            *observed = observed.saturating_add(seconds);
        }
    }
}

/// Measures real time for the revocation list on `CLOCK_BOOTTIME`, which
/// wall-clock steps do not move: whole seconds between two readings by a
/// running agent, the fraction carried to the next reading.
#[derive(Debug)]
pub struct ObservedClock {
    last_ns: u64,
    carry_ns: u64,
}

impl ObservedClock {
    /// Starts measuring at the boot-clock reading `boot_ns`: time before it
    /// (downtime included) is never counted.
    pub fn starting_at(boot_ns: u64) -> Self {
        Self {
            last_ns: boot_ns,
            carry_ns: 0,
        }
    }

    /// Whole seconds since the previous reading.
    pub fn elapsed_seconds(&mut self, boot_ns: u64) -> u64 {
        let total = boot_ns
            .saturating_sub(self.last_ns)
            .saturating_add(self.carry_ns);
        self.last_ns = self.last_ns.max(boot_ns);
        self.carry_ns = total % NANOS_PER_SECOND;
        total / NANOS_PER_SECOND
    }

    /// Forgets the fraction of a second carried over, so that an entry added
    /// now is not credited with time from before it existed.
    pub fn drop_fraction(&mut self) {
        self.carry_ns = 0;
    }
}

fn read_artifact(path: &Path, stem: &str) -> Result<StoredArtifact, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_owned(),
        message,
    };
    let id: ArtifactId = stem
        .parse()
        .map_err(|e: crate::vocab::fields::BadArtifactId| corrupt(e.to_string()))?;
    // One open: the size checked is the size of the file read.
    let file = fs::File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len > MAX_ARTIFACT_BYTES {
        return Err(corrupt(format!(
            "{len} bytes, over the {MAX_ARTIFACT_BYTES}-byte limit"
        )));
    }
    let mut text = String::with_capacity(len as usize);
    io::Read::read_to_string(&mut io::Read::take(file, MAX_ARTIFACT_BYTES + 1), &mut text)
        .map_err(io_err(path))?;
    if text.len() as u64 > MAX_ARTIFACT_BYTES {
        return Err(corrupt(format!(
            "grew over the {MAX_ARTIFACT_BYTES}-byte limit while read"
        )));
    }
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
    fn applied_revocation_lists_round_trip_and_corruption_is_an_error() {
        let (store, dir) = temp_store();
        assert!(store.applied_lists().unwrap().is_empty());
        let signer = KeyId([3; 32]);
        let applied = BTreeMap::from([(
            signer,
            AppliedList {
                signer: signer.to_string(),
                serial: 9,
                digest: "ab".repeat(32),
                applied_at: "2025-01-01T00:00:00Z".into(),
            },
        )]);
        store.save_applied_lists(&applied).unwrap();
        assert_eq!(store.applied_lists().unwrap(), applied);
        fs::write(
            dir.join("revocation-lists.toml"),
            "[[applied]]\nsigner = \"zz\"\nserial = 1\ndigest = \"\"\napplied_at = \"\"\n",
        )
        .unwrap();
        assert!(matches!(
            store.applied_lists(),
            Err(StoreError::Corrupt { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
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

    const DAY: u64 = 24 * 3600;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A revocation made at `revoked_at`, of something valid until `until`,
    /// with `observed` seconds observed since.
    fn entry(n: u8, revoked_at: &str, until: Option<&str>, observed: u64) -> Revocation {
        Revocation {
            observed_seconds: Some(observed),
            ..Revocation::new(&ArtifactId([n; 16]), t(revoked_at), until.map(t), None)
        }
    }

    #[test]
    fn revocations_persist_and_compact_once_expired_and_enough_time_was_observed() {
        let (store, dir) = temp_store();
        let now = t("2026-06-01T00:00:00Z");
        let month = 31 * DAY;
        let mut list = BTreeMap::new();
        for r in [
            // Expired two weeks ago, a month observed: dropped.
            entry(
                1,
                "2026-05-01T00:00:00Z",
                Some("2026-05-15T00:00:00Z"),
                month,
            ),
            // Not expired yet.
            entry(
                2,
                "2026-05-01T00:00:00Z",
                Some("2026-07-01T00:00:00Z"),
                month,
            ),
            // Unknown expiry: kept for good.
            entry(3, "2026-05-01T00:00:00Z", None, u64::MAX),
            // Expired by the wall clock, but only a day observed of the
            // fortnight it had left: kept.
            entry(4, "2026-05-01T00:00:00Z", Some("2026-05-15T00:00:00Z"), DAY),
            // Written before observed time was counted: kept for good.
            Revocation {
                observed_seconds: None,
                ..entry(5, "2026-05-01T00:00:00Z", Some("2026-05-15T00:00:00Z"), 0)
            },
        ] {
            list.insert(r.id.parse().unwrap(), r);
        }
        store.save_revocations(&list, now).unwrap();
        let back = store.revocations().unwrap();
        let kept: Vec<u8> = back.keys().map(|id| id.0[0]).collect();
        assert_eq!(kept, vec![2, 3, 4, 5]);
        assert_eq!(back[&ArtifactId([4; 16])], list[&ArtifactId([4; 16])]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_forward_clock_step_then_a_sweep_keeps_the_entry() {
        let (store, dir) = temp_store();
        let revoked_at = t("2026-06-01T00:00:00Z");
        let until = revoked_at.checked_add(2 * 3600).unwrap();
        let mut r = Revocation::new(&ArtifactId([9; 16]), revoked_at, Some(until), None);
        // The sweeper runs for a few seconds of real time...
        let mut clock = ObservedClock::starting_at(1_000);
        r.observe(clock.elapsed_seconds(1_000 + 4 * NANOS_PER_SECOND));
        // ...while the wall clock says a year went by.
        let stepped = revoked_at.checked_add(366 * DAY).unwrap();
        assert!(!r.compactable(stepped));
        let list = BTreeMap::from([(ArtifactId([9; 16]), r.clone())]);
        store.save_revocations(&list, stepped).unwrap();
        // Set back, the revocation is still there.
        assert_eq!(store.revocations().unwrap(), list);
        // It goes once two hours (at least a day) were really observed.
        r.observe(DAY);
        assert!(r.compactable(stepped));
        assert!(
            !r.compactable(until),
            "not before the wall clock is past it"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn observed_time_counts_whole_seconds_and_carries_the_rest() {
        let mut clock = ObservedClock::starting_at(5 * NANOS_PER_SECOND);
        assert_eq!(clock.elapsed_seconds(5 * NANOS_PER_SECOND), 0);
        assert_eq!(clock.elapsed_seconds(6_600_000_000), 1);
        assert_eq!(
            clock.elapsed_seconds(7_200_000_000),
            1,
            "0.6 s + 0.6 s carried: 1 s, 0.2 s carried on"
        );
        // An earlier reading (impossible on the boot clock) counts nothing.
        assert_eq!(clock.elapsed_seconds(1), 0);
        clock.drop_fraction();
        assert_eq!(
            clock.elapsed_seconds(8 * NANOS_PER_SECOND),
            0,
            "0.8 s: the 0.2 s carried is gone"
        );
    }

    proptest::proptest! {
        /// Compaction happens exactly when the wall clock is past `until`
        /// and at least `until - revoked_at` (and the floor) was observed.
        #[test]
        fn never_compacted_before_both_conditions_hold(
            revoked_at in 0u64..4_000_000_000,
            left in -(400 * DAY as i64)..(400 * DAY as i64),
            after_until in -(400 * DAY as i64)..(400 * DAY as i64),
            observed in 0u64..(800 * DAY),
        ) {
            let at = Timestamp::from_unix(revoked_at).unwrap();
            let until = Timestamp::from_unix(revoked_at.saturating_add_signed(left)).unwrap();
            let now = Timestamp::from_unix(until.unix().saturating_add_signed(after_until)).unwrap();
            let r = Revocation {
                observed_seconds: Some(observed),
                ..Revocation::new(&ArtifactId([1; 16]), at, Some(until), None)
            };
            let wall_past = until < now;
            let enough = observed >= until.seconds_since(at).unwrap_or(0).max(MIN_OBSERVED_SECONDS);
            proptest::prop_assert_eq!(r.compactable(now), wall_past && enough);
            // Unknown expiry, or uncounted time: never.
            let unknown = Revocation { until: None, ..r.clone() };
            proptest::prop_assert!(!unknown.compactable(now));
            let legacy = Revocation { observed_seconds: None, ..r };
            proptest::prop_assert!(!legacy.compactable(now));
        }
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
