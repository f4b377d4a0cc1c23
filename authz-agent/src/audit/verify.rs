//! `authz-agent audit verify`: recompute the chain, check every checkpoint,
//! report the first broken link.
use std::{fs, io, path::PathBuf};

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

use super::{checkpoint_message, hash_line, Record, GENESIS};

/// The first place the log stops being what the daemon wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    pub what: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} line {}: {}",
            self.file.display(),
            self.line,
            self.what
        )
    }
}

/// What a verification saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub checkpoints: usize,
    /// Checkpoints whose signature was checked (0 without a key).
    pub signatures_checked: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Records after the last checkpoint: protected by the chain only.
    pub unsigned_tail: u64,
    pub broken: Option<Broken>,
}

/// Verifies `files` as one chain, oldest first. With `key`, every checkpoint's
/// signature must verify; without, only the hash chain is checked. Unless
/// `partial`, the chain must start at its first record (seq 0), so that
/// deleting the head is caught too.
pub fn verify_files(
    files: &[PathBuf],
    key: Option<&VerifyingKey>,
    partial: bool,
) -> io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut prev_hash: Option<String> = None;
    let mut prev_seq: Option<u64> = None;
    // Records since the last checkpoint, and whether that count is complete
    // (the chain started at seq 0 or a checkpoint was seen in these files).
    let mut since_checkpoint: u64 = 0;
    let mut count_complete = false;
    for file in files {
        let bytes = fs::read(file)?;
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if lines.last() == Some(&&b""[..]) {
            lines.pop();
        } else if !bytes.is_empty() {
            report.broken = Some(Broken {
                file: file.clone(),
                line: lines.len(),
                what: "the last record is incomplete (no newline): truncated or being written"
                    .into(),
            });
            return Ok(report);
        }
        for (i, line) in lines.iter().enumerate() {
            let broken = |what: String| Broken {
                file: file.clone(),
                line: i + 1,
                what,
            };
            let record: Record = match serde_json::from_slice(line) {
                Ok(r) => r,
                Err(e) => {
                    report.broken = Some(broken(format!("not a valid record ({e}): edited")));
                    return Ok(report);
                }
            };
            if !matches!(record.kind.as_str(), "exec" | "admin" | "checkpoint") {
                report.broken = Some(broken(format!(
                    "unknown record kind {:?}: edited",
                    record.kind
                )));
                return Ok(report);
            }
            if record.kind != "checkpoint" && record.body.contains_key("signature") {
                report.broken = Some(broken(
                    "a signed checkpoint was turned into another kind of record".into(),
                ));
                return Ok(report);
            }
            if prev_seq.is_none() {
                if record.seq == 0 {
                    count_complete = true;
                } else if !partial {
                    report.broken = Some(broken(format!(
                        "the chain starts at seq {}, not 0: earlier records are missing (deleted, or their files not given; --partial verifies a tail)",
                        record.seq
                    )));
                    return Ok(report);
                }
            }
            if let (Some(ps), Some(ph)) = (prev_seq, prev_hash.as_deref()) {
                if record.seq != ps + 1 {
                    let what = if record.seq > ps + 1 {
                        format!(
                            "seq jumps from {ps} to {}: {} record(s) deleted",
                            record.seq,
                            record.seq - ps - 1
                        )
                    } else {
                        format!(
                            "seq {} after {ps}: records reordered or inserted",
                            record.seq
                        )
                    };
                    report.broken = Some(broken(what));
                    return Ok(report);
                }
                if record.prev != ph {
                    report.broken = Some(broken(format!(
                        "does not link to the record before it (seq {ps}): that record was edited, or this one was inserted"
                    )));
                    return Ok(report);
                }
            } else if record.seq == 0 && record.prev != GENESIS {
                report.broken = Some(broken(
                    "the first record of the chain does not start from the genesis hash".into(),
                ));
                return Ok(report);
            }
            if record.kind == "checkpoint" {
                report.checkpoints += 1;
                if let Some(key) = key {
                    let sig = record
                        .body
                        .get("signature")
                        .and_then(|v| v.as_str())
                        .and_then(|s| hex::decode(s).ok())
                        .and_then(|b| Signature::from_slice(&b).ok());
                    let mut unsigned = record.clone();
                    unsigned.body.remove("signature");
                    let ok = sig.is_some_and(|sig| {
                        key.verify(&checkpoint_message(&unsigned), &sig).is_ok()
                    });
                    if !ok {
                        report.broken = Some(broken(
                            "checkpoint signature does not verify: records before it were altered and the chain recomputed (or the wrong key was given)".into(),
                        ));
                        return Ok(report);
                    }
                    report.signatures_checked += 1;
                }
                let claimed = record
                    .body
                    .get("records_since_last")
                    .and_then(|v| v.as_u64());
                if count_complete && claimed != Some(since_checkpoint) {
                    report.broken = Some(broken(format!(
                        "checkpoint counts {} records since the previous one, the log holds {since_checkpoint}: records were deleted or inserted",
                        claimed.map_or("?".into(), |c| c.to_string())
                    )));
                    return Ok(report);
                }
                count_complete = true;
                since_checkpoint = 0;
                report.unsigned_tail = 0;
            } else {
                since_checkpoint += 1;
                report.unsigned_tail += 1;
            }
            report.records += 1;
            report.first_seq.get_or_insert(record.seq);
            report.last_seq = Some(record.seq);
            prev_seq = Some(record.seq);
            prev_hash = Some(hash_line(line));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::{json, Map};

    use super::*;
    use crate::audit::writer::{tests::*, AuditLog};

    /// A log of 8 records with a checkpoint in the middle and at the end.
    fn sample() -> (PathBuf, PathBuf, VerifyingKey) {
        let dir = temp_dir("verify");
        let key = crate::trust::keys::generate();
        let mut log = AuditLog::open(config(&dir), key.clone()).unwrap();
        for i in 0..3 {
            let mut b = Map::new();
            b.insert(
                "decision".into(),
                json!(if i % 2 == 0 { "deny" } else { "allow" }),
            );
            log.append("exec", SystemTime::now(), b).unwrap();
        }
        log.checkpoint("mid").unwrap();
        for _ in 0..3 {
            log.append("admin", SystemTime::now(), Map::new()).unwrap();
        }
        log.checkpoint("end").unwrap();
        (
            dir.clone(),
            dir.join("decisions.jsonl"),
            key.verifying_key(),
        )
    }

    fn lines(path: &PathBuf) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write(path: &PathBuf, lines: &[String]) {
        fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (dir, path, key) = sample();
        let r = verify_files(&[path], Some(&key), false).unwrap();
        assert!(r.broken.is_none(), "{:?}", r.broken);
        assert_eq!(
            (
                r.records,
                r.checkpoints,
                r.signatures_checked,
                r.unsigned_tail
            ),
            (8, 2, 2, 0)
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn editing_any_byte_of_any_record_is_detected() {
        let (dir, path, key) = sample();
        let original = fs::read(&path).unwrap();
        for i in 0..original.len() {
            if original[i] == b'\n' {
                continue;
            }
            let mut edited = original.clone();
            edited[i] = if edited[i] == b'0' { b'1' } else { b'0' };
            if edited[i] == original[i] {
                continue;
            }
            fs::write(&path, &edited).unwrap();
            let r = verify_files(std::slice::from_ref(&path), Some(&key), false).unwrap();
            assert!(
                r.broken.is_some(),
                "editing byte {i} went unnoticed: {:?}",
                String::from_utf8_lossy(&edited[i.saturating_sub(40)..(i + 10).min(edited.len())])
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn deleting_inserting_or_swapping_records_is_detected() {
        let (dir, path, key) = sample();
        let all = lines(&path);
        for i in 0..all.len() - 1 {
            let mut deleted = all.clone();
            deleted.remove(i);
            write(&path, &deleted);
            let r = verify_files(std::slice::from_ref(&path), Some(&key), false).unwrap();
            let b = r
                .broken
                .unwrap_or_else(|| panic!("deleting record {i} went unnoticed"));
            if i > 0 {
                assert_eq!(b.line, i + 1, "{b}");
            }

            let mut swapped = all.clone();
            swapped.swap(i, i + 1);
            write(&path, &swapped);
            assert!(
                verify_files(std::slice::from_ref(&path), Some(&key), false)
                    .unwrap()
                    .broken
                    .is_some(),
                "swap {i}"
            );

            let mut inserted = all.clone();
            inserted.insert(i + 1, all[i].clone());
            write(&path, &inserted);
            assert!(
                verify_files(std::slice::from_ref(&path), Some(&key), false)
                    .unwrap()
                    .broken
                    .is_some(),
                "insert after {i}"
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_recomputed_chain_is_caught_by_the_signed_checkpoint() {
        let (dir, path, key) = sample();
        let mut all = lines(&path);
        // Edit record 1 and recompute every later `prev`, as an attacker would.
        let mut r: Record = serde_json::from_str(&all[1]).unwrap();
        assert_eq!(r.body["decision"], json!("allow"));
        r.body.insert("decision".into(), json!("deny"));
        all[1] = serde_json::to_string(&r).unwrap();
        for i in 2..all.len() {
            let mut rec: Record = serde_json::from_str(&all[i]).unwrap();
            rec.prev = hash_line(all[i - 1].as_bytes());
            all[i] = serde_json::to_string(&rec).unwrap();
        }
        write(&path, &all);
        let without_key = verify_files(std::slice::from_ref(&path), None, false).unwrap();
        assert!(without_key.broken.is_none(), "the chain alone cannot tell");
        let with_key = verify_files(std::slice::from_ref(&path), Some(&key), false).unwrap();
        let b = with_key.broken.expect("checkpoint must catch it");
        assert!(b.what.contains("checkpoint"), "{b}");
        fs::remove_dir_all(dir).unwrap();
    }
}
