//! The verified index: a cold start that does not re-verify what this agent
//! already verified.
//!
//! After a full verification of the store, the agent writes
//! `state_dir/verified-index.json`: for each accepted stored artifact its id,
//! the SHA-256 of its exact stored bytes, and what verification produced that
//! start-up needs ([`Verified`]). The whole file is sealed with an
//! HMAC-SHA256 under a key of its own (`state_dir/index.key`, 0600, never the
//! audit key), and bound to what verification depended on: the trust
//! policy's digest, the revocation state (revoked ids and the signed
//! revocation lists applied, by signer, serial and digest), this host's
//! identity and the agent's version.
//!
//! At start, when the seal verifies and every bound input is unchanged, an
//! artifact whose file bytes hash to the recorded SHA-256 is accepted without
//! its signatures being checked again; its expiry (against now) and the
//! revocation of its id and of each delegation link are still checked. Any
//! other artifact (not listed, different bytes) is verified in full; an
//! index that is missing, unreadable, malformed, sealed with another key or
//! bound to other inputs is ignored and everything is verified in full. The
//! index is never needed: losing it costs one slow start.
//!
//! What protects it: an attacker who can change files in the state directory
//! but not read the key cannot seal an index, so a forged or edited artifact
//! is verified in full and refused. Whoever can read the key, or replace it
//! with one of their own, can seal an index that lists anything: that is
//! write access to a root-only (0700) directory the agent owns, i.e. root on
//! the host. Lockdown does not guard the state directory (it guards the
//! kernel's objects; the key file, like the audit key, is protected by file
//! permissions only), so while the kernel is locked down the index is not
//! trusted: root could kill the agent, replace the key, seal an index listing
//! a forged artifact and have the restarted agent enforce it. A restart
//! within a locked boot verifies everything; the index is still written, for
//! the next boot (before lockdown begins root owns the host anyway).
use std::{
    collections::{BTreeMap, HashMap},
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::agent::Agent;
use crate::{
    store::{write_atomic, AppliedList, StoredArtifact},
    trust::{HostIdentity, TrustPolicy, Verified},
    vocab::{fields::ArtifactId, keyid::KeyId},
};

/// The index, in the state directory.
pub const INDEX_FILE: &str = "verified-index.json";
/// The key that seals it, in the state directory.
pub const KEY_FILE: &str = "index.key";
/// Bytes of the sealing key.
const KEY_BYTES: usize = 32;
/// Mode of the key and index files.
const PRIVATE_MODE: u32 = 0o600;
/// Permission bits the key file must not have (group and others).
const SHARED_BITS: u32 = 0o077;
/// Version of the file's layout; another version is ignored.
const FORMAT: u32 = 1;
/// Largest index read back (100,000 artifacts take about 60 MB).
const MAX_INDEX_BYTES: u64 = 1 << 30;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("{0} does not hold an index key ({KEY_BYTES} bytes in hex)")]
    BadKey(PathBuf),
    #[error("{path} may be read by others (mode {mode:o}); it must be {PRIVATE_MODE:o}")]
    KeyMode { path: PathBuf, mode: u32 },
}

/// Why a start could not use the index (each means: verify everything).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unusable {
    #[error("there is no verified index")]
    Missing,
    #[error("the verified index cannot be read: {0}")]
    Unreadable(String),
    #[error("the verified index's seal does not verify (edited, or sealed with another key)")]
    BadSeal,
    #[error("the verified index is malformed: {0}")]
    Malformed(String),
    #[error("the {0} changed since the verified index was written")]
    Changed(&'static str),
}

/// The key sealing the index.
pub struct IndexKey([u8; KEY_BYTES]);

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexKey(..)")
    }
}

impl IndexKey {
    /// Reads `state_dir/index.key`, creating it (random, 0600) when missing,
    /// as the audit key is created.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IndexError> {
        let path = state_dir.join(KEY_FILE);
        if !path.exists() {
            let mut key = [0u8; KEY_BYTES];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
            write_atomic(&path, hex::encode(key).as_bytes(), PRIVATE_MODE)
                .map_err(|e| IndexError::Write(path.clone(), e))?;
            tracing::info!(path = %path.display(), "created the verified index's key");
        }
        let meta = fs::metadata(&path).map_err(|e| IndexError::Read(path.clone(), e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & SHARED_BITS != 0 {
            return Err(IndexError::KeyMode { path, mode });
        }
        let text = fs::read_to_string(&path).map_err(|e| IndexError::Read(path.clone(), e))?;
        let mut key = [0u8; KEY_BYTES];
        hex::decode_to_slice(text.trim_end(), &mut key).map_err(|_| IndexError::BadKey(path))?;
        Ok(Self(key))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        <HmacSha256 as hmac::Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

/// The inputs verification depended on: an index is used only when all are
/// unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    /// [`crate::audit::policy_digest`] of the trust policy.
    pub policy: String,
    /// SHA-256 over the revoked ids and the applied revocation lists.
    pub revocations: String,
    /// This host's machine id and labels.
    pub host: String,
    /// The agent's version.
    pub agent: String,
}

impl Bound {
    pub fn new<'a>(
        policy: &TrustPolicy,
        host: &HostIdentity,
        revoked: impl IntoIterator<Item = &'a ArtifactId>,
        applied: &BTreeMap<KeyId, AppliedList>,
    ) -> Self {
        let mut h = Sha256::new();
        let mut ids: Vec<&ArtifactId> = revoked.into_iter().collect();
        ids.sort();
        h.update((ids.len() as u64).to_le_bytes());
        for id in ids {
            h.update(id.0);
        }
        h.update((applied.len() as u64).to_le_bytes());
        for (signer, list) in applied {
            h.update(signer.0);
            h.update(list.serial.to_le_bytes());
            h.update((list.digest.len() as u64).to_le_bytes());
            h.update(list.digest.as_bytes());
        }
        Self {
            policy: crate::audit::policy_digest(policy),
            revocations: hex::encode(h.finalize()),
            host: host.to_string(),
            agent: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// SHA-256 of an artifact's stored bytes.
pub fn digest_of(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// A time as seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Time(u64, u32);

impl From<SystemTime> for Time {
    fn from(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(d.as_secs(), d.subsec_nanos())
    }
}

impl From<Time> for SystemTime {
    fn from(t: Time) -> Self {
        UNIX_EPOCH + Duration::new(t.0, t.1)
    }
}

/// `N` bytes, written as hex; read straight from the text (no allocation:
/// the index holds about ten of these per artifact).
#[derive(Clone, Copy, Debug)]
struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for Visitor<N> {
            type Value = Hex<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{N} bytes in hex")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Hex<N>, E> {
                let mut out = [0u8; N];
                hex::decode_to_slice(v, &mut out)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))?;
                Ok(Hex(out))
            }
        }
        d.deserialize_str(Visitor::<N>)
    }
}

/// One indexed artifact: [`Verified`], with bytes as hex.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: Hex<16>,
    sha256: Hex<32>,
    digest: Hex<32>,
    libraries: Vec<Hex<32>>,
    exec_memory: bool,
    cgroup: String,
    descendants: bool,
    not_before: Time,
    expires: Time,
    permit_not_before: Time,
    permit_expires: Time,
    issuer: Hex<32>,
    chain: Vec<Hex<32>>,
    delegation_ids: Vec<Hex<16>>,
    delegation_expires: Vec<Time>,
    policy_version: u32,
    requested_by: Option<String>,
    on_behalf_of: Option<String>,
    reason: Option<String>,
    subject_path: Option<String>,
    subject_name: Option<String>,
}

impl Entry {
    fn of(v: &Verified, sha256: &[u8; 32]) -> Self {
        Self {
            id: Hex(v.id.0),
            sha256: Hex(*sha256),
            digest: Hex(v.digest),
            libraries: v.libraries.iter().map(|l| Hex(*l)).collect(),
            exec_memory: v.exec_memory,
            cgroup: v.cgroup.clone(),
            descendants: v.descendants,
            not_before: v.not_before.into(),
            expires: v.expires.into(),
            permit_not_before: v.permit_not_before.into(),
            permit_expires: v.permit_expires.into(),
            issuer: Hex(v.issuer.0),
            chain: v.chain.iter().map(|k| Hex(k.0)).collect(),
            delegation_ids: v.delegation_ids.iter().map(|i| Hex(i.0)).collect(),
            delegation_expires: v.delegation_expires.iter().map(|&t| t.into()).collect(),
            policy_version: v.policy_version,
            requested_by: v.requested_by.clone(),
            on_behalf_of: v.on_behalf_of.clone(),
            reason: v.reason.clone(),
            subject_path: v.subject_path.clone(),
            subject_name: v.subject_name.clone(),
        }
    }

    fn into_verified(self) -> ([u8; 32], Verified) {
        (
            self.sha256.0,
            Verified {
                id: ArtifactId(self.id.0),
                digest: self.digest.0,
                libraries: self.libraries.into_iter().map(|l| l.0).collect(),
                exec_memory: self.exec_memory,
                cgroup: self.cgroup,
                descendants: self.descendants,
                not_before: self.not_before.into(),
                expires: self.expires.into(),
                permit_not_before: self.permit_not_before.into(),
                permit_expires: self.permit_expires.into(),
                issuer: KeyId(self.issuer.0),
                chain: self.chain.into_iter().map(|k| KeyId(k.0)).collect(),
                delegation_ids: self
                    .delegation_ids
                    .into_iter()
                    .map(|i| ArtifactId(i.0))
                    .collect(),
                delegation_expires: self
                    .delegation_expires
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                policy_version: self.policy_version,
                requested_by: self.requested_by,
                on_behalf_of: self.on_behalf_of,
                reason: self.reason,
                subject_path: self.subject_path,
                subject_name: self.subject_name,
            },
        )
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    format: u32,
    bound: Bound,
    entries: Vec<Entry>,
}

/// A verified index whose seal and bound inputs were found good.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<ArtifactId, ([u8; 32], Verified)>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An index of `items` (stored text, what verification produced), as
    /// [`read`] would return after [`write`].
    #[cfg(test)]
    pub fn of<'a>(items: impl IntoIterator<Item = (&'a str, &'a Verified)>) -> Self {
        Self {
            entries: items
                .into_iter()
                .map(|(text, v)| (v.id, (digest_of(text), v.clone())))
                .collect(),
        }
    }

    /// What verification produced for `stored`, whose bytes hash to
    /// `sha256`, if the index lists it with exactly these bytes; `None`: verify
    /// it in full.
    pub fn lookup(&self, stored: &StoredArtifact, sha256: &[u8; 32]) -> Option<&Verified> {
        match self.entries.get(&stored.id) {
            Some((sha, v)) if sha == sha256 && v.id == stored.id => Some(v),
            _ => None,
        }
    }
}

/// Reads the index in `state_dir` if its seal verifies under `key` and it
/// was written for exactly `bound`.
pub fn read(state_dir: &Path, key: &IndexKey, bound: &Bound) -> Result<Index, Unusable> {
    let path = state_dir.join(INDEX_FILE);
    let raw = match fs::File::open(&path) {
        Ok(f) => {
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(f, MAX_INDEX_BYTES), &mut buf)
                .map_err(|e| Unusable::Unreadable(e.to_string()))?;
            buf
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Unreadable(e.to_string())),
    };
    let newline = raw
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(Unusable::BadSeal)?;
    let (tag, body) = (&raw[..newline], &raw[newline + 1..]);
    let tag = hex::decode(tag).map_err(|_| Unusable::BadSeal)?;
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| Unusable::BadSeal)?;
    let file: IndexFile =
        serde_json::from_slice(body).map_err(|e| Unusable::Malformed(e.to_string()))?;
    if file.format != FORMAT {
        return Err(Unusable::Changed("index format"));
    }
    let b = &file.bound;
    for (what, same) in [
        ("trust policy", b.policy == bound.policy),
        ("revocation state", b.revocations == bound.revocations),
        ("host identity", b.host == bound.host),
        ("agent version", b.agent == bound.agent),
    ] {
        if !same {
            return Err(Unusable::Changed(what));
        }
    }
    let mut entries = HashMap::with_capacity(file.entries.len());
    for e in file.entries {
        let (sha, v) = e.into_verified();
        entries.insert(v.id, (sha, v));
    }
    Ok(Index { entries })
}

/// Writes the index of `items` (each accepted artifact's stored text and what
/// verification produced), sealed and bound to `bound`: atomically (temporary
/// file, fsync, rename, fsync of the directory).
pub fn write<'a>(
    state_dir: &Path,
    key: &IndexKey,
    bound: &Bound,
    items: impl IntoIterator<Item = (&'a str, &'a Verified)>,
) -> Result<usize, IndexError> {
    let path = state_dir.join(INDEX_FILE);
    let entries: Vec<Entry> = items
        .into_iter()
        .map(|(text, v)| Entry::of(v, &digest_of(text)))
        .collect();
    let n = entries.len();
    let body = serde_json::to_vec(&IndexFile {
        format: FORMAT,
        bound: bound.clone(),
        entries,
    })
    .map_err(|e| IndexError::Write(path.clone(), io::Error::other(e)))?;
    let mut mac = key.mac();
    mac.update(&body);
    let mut out = hex::encode(mac.finalize().into_bytes()).into_bytes();
    out.push(b'\n');
    out.extend_from_slice(&body);
    write_atomic(&path, &out, PRIVATE_MODE).map_err(|e| IndexError::Write(path, e))?;
    Ok(n)
}

/// Least time between two rewrites of the index while the agent runs. The
/// index only needs to be current at the next start and is written at stop;
/// the periodic rewrite only bounds what a crash leaves to verify in full.
/// Rare, because it runs on the daemon's loop: with 100,000 permits it
/// serializes and hashes about 65 MB (a fraction of a second natively,
/// seconds under emulation) while requests wait.
pub const REWRITE_EVERY: Duration = Duration::from_secs(600);

/// The agent's use of the index: its key, and whether the file on disk is
/// behind what the agent holds.
#[derive(Debug)]
pub struct IndexState {
    key: IndexKey,
    /// What the agent holds changed since the index was written.
    dirty: bool,
    /// The inputs the file on disk is bound to.
    written: Option<Bound>,
    last_write: Option<Instant>,
}

impl IndexState {
    pub fn new(key: IndexKey) -> Self {
        Self {
            key,
            dirty: true,
            written: None,
            last_write: None,
        }
    }
}

impl Agent {
    /// Starts from the verified index when it is usable, and keeps it.
    pub fn use_index(&mut self, key: IndexKey) {
        self.index = Some(IndexState::new(key));
    }

    /// What verification depends on now; `None` (no index) when the applied
    /// revocation lists cannot be read.
    fn index_bound(&self) -> Option<Bound> {
        let applied = self
            .store
            .applied_lists()
            .inspect_err(|e| tracing::warn!(error = %e, "verified index not used"))
            .ok()?;
        Some(Bound::new(
            self.verifier.policy(),
            self.verifier.host(),
            self.revocations.iter().map(|(id, _)| id),
            &applied,
        ))
    }

    /// The index on disk, if it is usable for what verification depends on now.
    pub(super) fn read_index(&mut self) -> Option<Index> {
        let locked = self.enforcer.lockdown();
        let bound = self.index_bound()?;
        let state = self.index.as_mut()?;
        if locked {
            tracing::info!("the kernel is locked down and the state directory is not: verifying every stored artifact in full");
            state.written = None;
            return None;
        }
        match read(self.store.dir(), &state.key, &bound) {
            Ok(index) => {
                tracing::info!(
                    entries = index.len(),
                    "verified index sealed by this agent: its artifacts' signatures are not checked again"
                );
                // The file is what was just read: the start rewrites it only
                // if what it loads differs (`index_changed`), not always.
                state.dirty = false;
                state.written = Some(bound);
                Some(index)
            }
            Err(why) => {
                tracing::info!(reason = %why, "verifying every stored artifact in full");
                state.written = None;
                None
            }
        }
    }

    /// What the agent holds changed: the index is rewritten at the next
    /// [`Agent::save_index`].
    pub(super) fn index_changed(&mut self, changed: bool) {
        if let Some(state) = &mut self.index {
            state.dirty |= changed;
        }
    }

    /// Rewrites the index if it is behind what the agent holds or what
    /// verification depends on; unless `now_anyway`, at most every
    /// [`REWRITE_EVERY`]. A failure is logged: the next start verifies more.
    pub fn save_index(&mut self, now_anyway: bool) {
        let Some(bound) = self.index_bound() else {
            return;
        };
        let Some(state) = self.index.as_mut() else {
            return;
        };
        if !state.dirty && state.written.as_ref() == Some(&bound) {
            return;
        }
        if !now_anyway
            && state
                .last_write
                .is_some_and(|t| t.elapsed() < REWRITE_EVERY)
        {
            return;
        }
        let items = self
            .permits
            .iter()
            .map(|(_, h)| (h.text.as_str(), &h.verified));
        match write(self.store.dir(), &state.key, &bound, items) {
            Ok(entries) => {
                tracing::debug!(entries, "verified index written");
                state.dirty = false;
                state.written = Some(bound);
                state.last_write = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot write the verified index; the next start verifies every artifact");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::testkit::Kit;

    fn setup() -> (tempdir::Dir, IndexKey, Bound, Kit) {
        let dir = tempdir::Dir::new();
        let key = IndexKey::load_or_create(dir.path()).unwrap();
        let kit = Kit::new();
        let bound = Bound::new(&kit.policy, &HostIdentity::unknown(), [], &BTreeMap::new());
        (dir, key, bound, kit)
    }

    mod tempdir {
        /// A fresh directory under the system's temporary directory.
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let mut n = [0u8; 8];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut n);
                let p = std::env::temp_dir().join(format!("authz-index-{}", hex::encode(n)));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn an_index_round_trips_what_verification_produced() {
        let (dir, key, bound, kit) = setup();
        let d = kit.delegation(|_| {});
        let a = kit.team_permit(&d, |_| {});
        let v = kit.verify(&a).unwrap();
        let text = a.to_toml();
        write(dir.path(), &key, &bound, [(text.as_str(), &v)]).unwrap();
        let index = read(dir.path(), &key, &bound).unwrap();
        let stored = StoredArtifact {
            id: a.id,
            path: "x".into(),
            text: text.clone(),
        };
        assert_eq!(index.lookup(&stored, &digest_of(&text)), Some(&v));
        let other = format!("{text}\n");
        assert_eq!(index.lookup(&stored, &digest_of(&other)), None);
    }

    #[test]
    fn an_edited_index_or_another_key_breaks_the_seal() {
        let (dir, key, bound, kit) = setup();
        let a = kit.root_permit(|_| {});
        let v = kit.verify(&a).unwrap();
        write(dir.path(), &key, &bound, [(a.to_toml().as_str(), &v)]).unwrap();
        let path = dir.path().join(INDEX_FILE);
        let good = fs::read(&path).unwrap();
        let edited = String::from_utf8(good.clone())
            .unwrap()
            .replace("/jobs/a", "/jobs/b")
            .into_bytes();
        assert_ne!(edited, good);
        fs::write(&path, &edited).unwrap();
        assert_eq!(
            read(dir.path(), &key, &bound).unwrap_err(),
            Unusable::BadSeal
        );
        fs::write(&path, &good).unwrap();
        let other = IndexKey([9; KEY_BYTES]);
        assert_eq!(
            read(dir.path(), &other, &bound).unwrap_err(),
            Unusable::BadSeal
        );
        assert!(read(dir.path(), &key, &bound).is_ok());
    }

    #[test]
    fn garbage_or_no_index_is_unusable_never_fatal() {
        let (dir, key, bound, _) = setup();
        assert_eq!(
            read(dir.path(), &key, &bound).unwrap_err(),
            Unusable::Missing
        );
        let path = dir.path().join(INDEX_FILE);
        for garbage in [&b""[..], b"\n", b"zz\n{}", b"\x00\xff\xfe", b"00\n[]"] {
            fs::write(&path, garbage).unwrap();
            assert_eq!(
                read(dir.path(), &key, &bound).unwrap_err(),
                Unusable::BadSeal
            );
        }
        // Sealed but not an index.
        let body = b"{\"format\": 1}";
        let mut mac = key.mac();
        mac.update(body);
        let mut out = hex::encode(mac.finalize().into_bytes()).into_bytes();
        out.push(b'\n');
        out.extend_from_slice(body);
        fs::write(&path, out).unwrap();
        assert!(matches!(
            read(dir.path(), &key, &bound),
            Err(Unusable::Malformed(_))
        ));
    }

    #[test]
    fn any_bound_input_changed_makes_the_index_unusable() {
        let (dir, key, bound, kit) = setup();
        write(dir.path(), &key, &bound, []).unwrap();
        let mut other_policy = kit.policy.clone();
        other_policy.max_chain_length += 1;
        let revoked = ArtifactId::random();
        let mut applied = BTreeMap::new();
        applied.insert(
            KeyId([1; 32]),
            AppliedList {
                signer: "x".into(),
                serial: 1,
                digest: "ab".into(),
                applied_at: "now".into(),
            },
        );
        let host = HostIdentity {
            machine_id: Some("0123456789abcdef0123456789abcdef".parse().unwrap()),
            labels: Default::default(),
        };
        let none = BTreeMap::new();
        let unknown = HostIdentity::unknown();
        for (what, b) in [
            (
                "trust policy",
                Bound::new(&other_policy, &unknown, [], &none),
            ),
            (
                "revocation state",
                Bound::new(&kit.policy, &unknown, [&revoked], &none),
            ),
            (
                "revocation state",
                Bound::new(&kit.policy, &unknown, [], &applied),
            ),
            ("host identity", Bound::new(&kit.policy, &host, [], &none)),
            (
                "agent version",
                Bound {
                    agent: "0.0.0".into(),
                    ..bound.clone()
                },
            ),
        ] {
            assert_eq!(
                read(dir.path(), &key, &b).unwrap_err(),
                Unusable::Changed(what)
            );
        }
        assert!(read(dir.path(), &key, &bound).is_ok());
    }

    /// The index is bound to the policy through
    /// [`crate::audit::policy_digest`]: a field verification reads that the
    /// digest leaves out would let an index outlive a policy change. Adding a
    /// field to the policy or a root breaks this destructuring; put the new
    /// field in the digest (or say why verification ignores it) and here.
    #[test]
    fn the_policy_digest_covers_every_field_of_the_policy() {
        let kit = Kit::new();
        let TrustPolicy {
            version: _,
            min_version: _,
            max_chain_length: _,
            retired: _,
            roots,
        } = &kit.policy;
        for root in roots {
            let crate::trust::RootKey {
                name: _, // not read by verification
                key: _,  // its id is in the digest
                key_id: _,
                cgroup_prefixes: _,
                max_ttl_seconds: _,
            } = root;
        }
        let digest = |p: &TrustPolicy| crate::audit::policy_digest(p);
        let base = digest(&kit.policy);
        let mut p = kit.policy.clone();
        p.min_version += 1;
        assert_ne!(digest(&p), base);
        let mut p = kit.policy.clone();
        p.retired.insert(KeyId([3; 32]));
        assert_ne!(digest(&p), base);
        let mut p = kit.policy.clone();
        p.roots[0].max_ttl_seconds += 1;
        assert_ne!(digest(&p), base);
        let mut p = kit.policy.clone();
        p.roots[0].cgroup_prefixes.clear();
        assert_ne!(digest(&p), base);
    }

    #[test]
    fn a_key_others_may_read_is_refused() {
        let dir = tempdir::Dir::new();
        IndexKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            IndexKey::load_or_create(dir.path()),
            Err(IndexError::KeyMode { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            IndexKey::load_or_create(dir.path()),
            Err(IndexError::BadKey(_))
        ));
    }
}
