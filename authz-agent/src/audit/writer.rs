//! Appending to the decision log: hash chain, signed checkpoints, rotation,
//! sampling of allowed execs (never of refusals).
use std::{
    fs,
    io::{self, BufWriter, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{json, Map, Value};

use super::{checkpoint_message, hash_line, record::rfc3339_nanos, Record, GENESIS};
use crate::{trust::keys::KeyPairPaths, vocab::keyid::KeyId};

/// Which allowed execs are logged (refusals always are). The kernel decides,
/// so an allowed exec that is not logged costs no ring space and no copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    All,
    None,
    /// One in N.
    OneIn(u64),
}

impl Sampling {
    /// The kernel's encoding (`authz_common::sample`).
    pub fn kernel_value(self) -> u32 {
        match self {
            Sampling::All => authz_common::sample::ALL,
            Sampling::None => authz_common::sample::NONE,
            Sampling::OneIn(n) => u32::try_from(n)
                .unwrap_or(authz_common::sample::NONE - 1)
                .clamp(1, authz_common::sample::NONE - 1),
        }
    }
}

impl std::str::FromStr for Sampling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            other => match other.strip_prefix("1/").and_then(|n| n.parse::<u64>().ok()) {
                Some(n) if n >= 1 => Ok(Self::OneIn(n)),
                _ => Err(format!("{other:?}: use \"all\", \"none\" or \"1/N\"")),
            },
        }
    }
}

/// Where and how to log.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate when the file grows past this many bytes.
    pub rotate_bytes: u64,
    /// Sign a checkpoint at least this often while records are written.
    pub checkpoint_every: Duration,
    pub host: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("decision log {0}")]
    Io(PathBuf, #[source] io::Error),
    #[error("decision log {path}: the last complete record is not valid ({message}); refusing to extend a chain it cannot link to")]
    Corrupt { path: PathBuf, message: String },
    #[error("audit signing key")]
    Key(#[source] anyhow::Error),
}

/// The open log.
pub struct AuditLog {
    cfg: AuditConfig,
    file: BufWriter<fs::File>,
    size: u64,
    next_seq: u64,
    prev: String,
    key: SigningKey,
    key_id: KeyId,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// What checkpoints say about the kernel's event numbering (set by the
    /// agent): every number of that epoch below `low` is accounted for.
    kernel_events: Option<(u64, u64)>,
    /// Set when the file ended in a torn record that was cut off on open.
    pub recovered_bytes: u64,
}

/// The daemon's checkpoint key pair in `state_dir`: `audit.key` (secret) and
/// `audit.pub`, which `audit verify` checks checkpoints with.
pub fn key_paths(state_dir: &Path) -> KeyPairPaths {
    KeyPairPaths::for_base(&state_dir.join("audit"))
}

/// Loads the daemon's audit key from `state_dir/audit.key`, creating the pair
/// (`audit.key` 0600, `audit.pub`) on first use.
pub fn load_or_create_key(state_dir: &Path) -> Result<SigningKey, AuditError> {
    let base = state_dir.join("audit");
    let secret = key_paths(state_dir).secret;
    if !secret.exists() {
        let key = crate::trust::keys::generate();
        crate::trust::keys::write_key_pair(&base, &key).map_err(|e| AuditError::Key(e.into()))?;
        tracing::info!(path = %secret.display(), "created the audit checkpoint key");
    }
    crate::trust::keys::read_secret_key(&secret).map_err(|e| AuditError::Key(e.into()))
}

impl AuditLog {
    /// Changes when the log rotates and how often it signs a checkpoint
    /// (a reload); the file, host and key stay.
    pub fn set_rotation(&mut self, rotate_bytes: u64, checkpoint_every: Duration) {
        self.cfg.rotate_bytes = rotate_bytes;
        self.cfg.checkpoint_every = checkpoint_every;
    }

    /// Opens (creating) the log and finds the chain head to continue from:
    /// the last record of the active file, else of the newest rotated file.
    pub fn open(cfg: AuditConfig, key: SigningKey) -> Result<Self, AuditError> {
        let io_err = |e| AuditError::Io(cfg.path.clone(), e);
        if let Some(dir) = cfg.path.parent() {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&cfg.path)
            .map_err(io_err)?;
        let recovered_bytes = cut_torn_tail(&mut file).map_err(io_err)?;
        let mut head = last_record(&cfg.path)?;
        if head.is_none() {
            if let Some(rotated) = rotated_files(&cfg.path).map_err(io_err)?.last() {
                head = last_record(rotated)?;
            }
        }
        let (next_seq, prev) = match head {
            Some((seq, hash)) => (seq + 1, hash),
            None => (0, GENESIS.to_owned()),
        };
        // A crash can leave records after the last checkpoint: the next
        // checkpoint's count must include them.
        let since_checkpoint = records_since_checkpoint(&cfg.path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        let key_id = KeyId::of(&key.verifying_key());
        Ok(Self {
            cfg,
            file: BufWriter::new(file),
            size,
            next_seq,
            prev,
            key,
            key_id,
            since_checkpoint,
            last_checkpoint: Instant::now(),
            kernel_events: None,
            recovered_bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Appends one record; returns its seq.
    pub fn append(
        &mut self,
        kind: &str,
        time: SystemTime,
        body: Map<String, Value>,
    ) -> io::Result<u64> {
        self.append_at(kind, rfc3339_nanos(time), body)
    }

    fn append_at(&mut self, kind: &str, time: String, body: Map<String, Value>) -> io::Result<u64> {
        let record = Record {
            seq: self.next_seq,
            prev: self.prev.clone(),
            time,
            host: self.cfg.host.clone(),
            kind: kind.to_owned(),
            body,
        };
        let line = serde_json::to_string(&record).map_err(io::Error::other)?;
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
        self.prev = hash_line(line.as_bytes());
        self.next_seq += 1;
        if kind != "checkpoint" {
            self.since_checkpoint += 1;
        }
        if self.size >= self.cfg.rotate_bytes && kind != "checkpoint" {
            self.rotate()?;
        }
        Ok(record.seq)
    }

    /// Logs an exec decision (the kernel already sampled allowed ones).
    pub fn exec(&mut self, time: SystemTime, body: Map<String, Value>) -> io::Result<u64> {
        self.append("exec", time, body)
    }

    /// Tells checkpoints how far the kernel's numbering of `epoch` is
    /// accounted for.
    pub fn set_kernel_events(&mut self, epoch: u64, low: u64) {
        self.kernel_events = Some((epoch, low));
    }

    /// Writes buffered records to the file and forces them to stable storage
    /// (refusals are made durable at once, not at the next checkpoint).
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }

    /// Signs the current chain head.
    pub fn checkpoint(&mut self, why: &str) -> io::Result<u64> {
        let mut body = Map::new();
        body.insert("reason".into(), json!(why));
        body.insert("key_id".into(), json!(self.key_id.to_string()));
        body.insert("records_since_last".into(), json!(self.since_checkpoint));
        if let Some((epoch, low)) = self.kernel_events {
            body.insert(
                "kernel_events".into(),
                json!({ "epoch": format!("{epoch:016x}"), "low": low }),
            );
        }
        let time = SystemTime::now();
        let unsigned = Record {
            seq: self.next_seq,
            prev: self.prev.clone(),
            time: rfc3339_nanos(time),
            host: self.cfg.host.clone(),
            kind: "checkpoint".into(),
            body: body.clone(),
        };
        let signature = self.key.sign(&checkpoint_message(&unsigned));
        body.insert("signature".into(), json!(hex::encode(signature.to_bytes())));
        let seq = self.append_at("checkpoint", unsigned.time, body)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        Ok(seq)
    }

    /// Periodic: flush, and checkpoint when due.
    pub fn tick(&mut self) -> io::Result<()> {
        if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.cfg.checkpoint_every
        {
            self.checkpoint("interval")?;
        }
        self.file.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.checkpoint("rotation")?;
        let first = first_seq(&self.cfg.path).unwrap_or(0);
        let rotated = rotated_name(&self.cfg.path, first);
        fs::rename(&self.cfg.path, &rotated)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.cfg.path)?;
        self.file = BufWriter::new(file);
        self.size = 0;
        tracing::info!(rotated = %rotated.display(), "decision log rotated");
        Ok(())
    }
}

/// What the log says about the kernel's event numbers of one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSeen {
    /// A decision record with this number.
    Logged(u64),
    /// An `events-missing` record.
    Missing { from: u64, to: u64 },
    /// A checkpoint: every number below `low` was accounted for.
    Checkpoint { low: u64 },
}

/// Everything the newest rotated file and the active file of the log at
/// `path` say about the kernel's numbering in `epoch`, oldest first.
pub fn kernel_seen(path: &Path, epoch: u64) -> io::Result<Vec<KernelSeen>> {
    let epoch = format!("{epoch:016x}");
    let mut files: Vec<PathBuf> = rotated_files(path)?.into_iter().rev().take(1).collect();
    files.push(path.to_owned());
    let mut out = Vec::new();
    for file in files {
        let text = match fs::read(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.split(|&b| b == b'\n') {
            // Cheap filter: only records that can mention the numbering.
            let mentions = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
            if !(mentions(b"\"kseq\"") || mentions(b"kernel_events") || mentions(b"events-missing"))
            {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<Record>(line) else {
                continue;
            };
            if let Some(seen) = seen_in(&record, &epoch) {
                out.push(seen);
            }
        }
    }
    Ok(out)
}

fn seen_in(record: &Record, epoch: &str) -> Option<KernelSeen> {
    let b = &record.body;
    match record.kind.as_str() {
        "exec" if b.get("kepoch")?.as_str()? == epoch => {
            Some(KernelSeen::Logged(b.get("kseq")?.as_u64()?))
        }
        "checkpoint" => {
            let k = b.get("kernel_events")?;
            (k.get("epoch")?.as_str()? == epoch).then_some(KernelSeen::Checkpoint {
                low: k.get("low")?.as_u64()?,
            })
        }
        "admin" if b.get("event")?.as_str()? == "events-missing" => {
            let d = b.get("detail")?;
            (d.get("epoch")?.as_str()? == epoch).then_some(KernelSeen::Missing {
                from: d.get("from_seq")?.as_u64()?,
                to: d.get("to_seq")?.as_u64()?,
            })
        }
        _ => None,
    }
}

/// `decisions.jsonl` -> `decisions-000000001234.jsonl`.
fn rotated_name(path: &Path, first_seq: u64) -> PathBuf {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("decisions");
    path.with_file_name(format!("{stem}-{first_seq:012}.jsonl"))
}

/// Rotated files of `path`, oldest first.
pub fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("decisions")
        .to_owned();
    let Some(dir) = path.parent() else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.strip_prefix(&format!("{stem}-"))
                        .and_then(|r| r.strip_suffix(".jsonl"))
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    out.sort();
    Ok(out)
}

/// Every file of the log, oldest first (rotated ones, then the active one).
pub fn all_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = rotated_files(path)?;
    if path.exists() {
        files.push(path.to_owned());
    }
    Ok(files)
}

fn first_seq(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().next()?;
    serde_json::from_str::<Record>(line).ok().map(|r| r.seq)
}

/// Records after the last checkpoint of the active file (rotation always ends
/// a file with a checkpoint, so the active file holds the whole unsigned tail).
fn records_since_checkpoint(path: &Path) -> io::Result<u64> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut count = 0;
    for line in text.split(|&b| b == b'\n').rev().filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Record>(line) {
            Ok(r) if r.kind == "checkpoint" => break,
            _ => count += 1,
        }
    }
    Ok(count)
}

/// (seq, hash) of the last record in `path`, if any.
fn last_record(path: &Path) -> Result<Option<(u64, String)>, AuditError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::Io(path.to_owned(), e)),
    };
    let Some(line) = text.split(|&b| b == b'\n').rev().find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let record: Record = serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Some((record.seq, hash_line(line))))
}

/// A crash can leave a record half-written (no newline): it was never
/// complete, so it is cut off. Returns the bytes removed.
fn cut_torn_tail(file: &mut fs::File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let window = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(0);
    }
    let keep = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => len - window + i as u64 + 1,
        None if window == len => 0,
        None => return Ok(0),
    };
    file.set_len(keep)?;
    Ok(len - keep)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn temp_dir(name: &str) -> PathBuf {
        let mut b = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        let d = std::env::temp_dir().join(format!("authz-audit-{name}-{}", hex::encode(b)));
        fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn config(dir: &Path) -> AuditConfig {
        AuditConfig {
            path: dir.join("decisions.jsonl"),
            rotate_bytes: 1 << 30,
            checkpoint_every: Duration::from_secs(3600),
            host: "test-host".into(),
        }
    }

    #[test]
    fn sampling_parses() {
        assert_eq!("all".parse::<Sampling>().unwrap(), Sampling::All);
        assert_eq!("none".parse::<Sampling>().unwrap(), Sampling::None);
        assert_eq!("1/100".parse::<Sampling>().unwrap(), Sampling::OneIn(100));
        assert!("1/0".parse::<Sampling>().is_err());
        assert!("half".parse::<Sampling>().is_err());
    }

    #[test]
    fn the_chain_continues_across_reopen_and_a_torn_tail_is_cut() {
        let dir = temp_dir("reopen");
        let key = crate::trust::keys::generate();
        let mut log = AuditLog::open(config(&dir), key.clone()).unwrap();
        log.append("admin", SystemTime::now(), Map::new()).unwrap();
        log.flush().unwrap();
        drop(log);
        // A crash mid-write.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.join("decisions.jsonl"))
            .unwrap();
        f.write_all(b"{\"seq\":1,\"prev\":\"ab").unwrap();
        drop(f);
        let mut log = AuditLog::open(config(&dir), key).unwrap();
        assert!(log.recovered_bytes > 0);
        assert_eq!(
            log.append("admin", SystemTime::now(), Map::new()).unwrap(),
            1
        );
        log.checkpoint("test").unwrap();
        let report = super::super::verify_files(
            &[dir.join("decisions.jsonl")],
            Some(&log.key.verifying_key()),
            false,
        )
        .unwrap();
        assert!(report.broken.is_none(), "{:?}", report.broken);
        assert_eq!(report.records, 3);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn checkpoints_carry_the_kernel_numbering_and_it_reads_back() {
        let dir = temp_dir("kseq");
        let path = dir.join("decisions.jsonl");
        let mut log = AuditLog::open(config(&dir), crate::trust::keys::generate()).unwrap();
        let exec = |n: u64, epoch: &str| {
            let mut m = Map::new();
            m.insert("kseq".into(), json!(n));
            m.insert("kepoch".into(), json!(epoch));
            m
        };
        log.exec(SystemTime::now(), exec(1, "000000000000000a"))
            .unwrap();
        log.set_kernel_events(10, 2);
        log.checkpoint("test").unwrap();
        log.exec(SystemTime::now(), exec(2, "000000000000000a"))
            .unwrap();
        log.exec(SystemTime::now(), exec(9, "00000000000000ff"))
            .unwrap();
        let mut gap = Map::new();
        gap.insert("event".into(), json!("events-missing"));
        gap.insert(
            "detail".into(),
            json!({ "epoch": "000000000000000a", "from_seq": 3, "to_seq": 4 }),
        );
        log.append("admin", SystemTime::now(), gap).unwrap();
        log.flush().unwrap();
        let seen = kernel_seen(&path, 10).unwrap();
        use crate::audit::KernelSeen::*;
        assert_eq!(
            seen,
            vec![
                Logged(1),
                Checkpoint { low: 2 },
                Logged(2),
                Missing { from: 3, to: 4 }
            ]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotation_keeps_one_chain() {
        let dir = temp_dir("rotate");
        let mut cfg = config(&dir);
        cfg.rotate_bytes = 2000;
        let key = crate::trust::keys::generate();
        let mut log = AuditLog::open(cfg, key.clone()).unwrap();
        for i in 0..50 {
            let mut body = Map::new();
            body.insert("i".into(), json!(i));
            log.append("admin", SystemTime::now(), body).unwrap();
        }
        log.checkpoint("end").unwrap();
        let files = all_files(&dir.join("decisions.jsonl")).unwrap();
        assert!(files.len() > 2, "{files:?}");
        let report = super::super::verify_files(&files, Some(&key.verifying_key()), false).unwrap();
        assert!(report.broken.is_none(), "{:?}", report.broken);
        assert!(report.checkpoints >= files.len());
        fs::remove_dir_all(dir).unwrap();
    }
}
