//! `report --since`: the rollout report read back from the decision log, so
//! it spans agent restarts. Refusals (and audit mode's would-be refusals)
//! at or after a time, grouped by binary, cgroup and reason, as the live
//! report groups them.
use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufRead as _, BufReader},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde_json::Value;

use super::Record;
use crate::control::protocol::{ReportResult, ReportRow};

/// Distinct (binary, cgroup, reason) rows kept; later ones are counted only.
const MAX_ROWS: usize = 10_000;

#[derive(Debug)]
struct Row {
    digest: Option<String>,
    path: String,
    comm: String,
    uid: u32,
    cgroup: Option<String>,
    decision: String,
    count: u64,
    first: String,
    last: String,
}

/// Aggregates the refusals recorded in `files` (oldest first, as
/// [`super::writer::all_files`] lists them) at or after `since`. Lines that
/// are not records are skipped (`audit verify` judges the log).
pub fn refusals_since(files: &[PathBuf], since: SystemTime) -> io::Result<ReportResult> {
    let mut rows: BTreeMap<(String, u64, String), Row> = BTreeMap::new();
    let mut not_shown = 0;
    let mut read = 0;
    for (i, file) in files.iter().enumerate() {
        // A file whose successor starts before `since` holds nothing newer.
        if let Some(next) = files.get(i + 1) {
            if first_time(next)?.is_some_and(|t| t < since) {
                continue;
            }
        }
        let reader = BufReader::new(fs::File::open(file)?);
        for line in reader.lines() {
            let line = line?;
            let Ok(record) = serde_json::from_str::<Record>(&line) else {
                continue;
            };
            read += 1;
            if record.kind != "exec" || time_of(&record).is_none_or(|t| t < since) {
                continue;
            }
            let b = &record.body;
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            let decision = text(b.get("decision")).unwrap_or_default();
            if decision == "allow" {
                continue;
            }
            let actor = b.get("actor");
            let field = |k: &str| actor.and_then(|a| a.get(k));
            let digest = text(b.get("digest"));
            let path = text(field("exe")).unwrap_or_default();
            let cgroup_id = field("cgroup_id").and_then(Value::as_u64).unwrap_or(0);
            let reason = text(b.get("reason")).unwrap_or_default();
            let binary = digest.clone().unwrap_or_else(|| format!("path:{path}"));
            let key = (binary, cgroup_id, reason);
            if let Some(row) = rows.get_mut(&key) {
                row.count += 1;
                row.last = record.time.clone();
                row.decision = decision;
                continue;
            }
            if rows.len() >= MAX_ROWS {
                not_shown += 1;
                continue;
            }
            rows.insert(
                key,
                Row {
                    digest,
                    path,
                    comm: text(field("comm")).unwrap_or_default(),
                    uid: field("uid")
                        .and_then(Value::as_u64)
                        .and_then(|u| u32::try_from(u).ok())
                        .unwrap_or(u32::MAX),
                    cgroup: text(field("cgroup")),
                    decision,
                    count: 1,
                    first: record.time.clone(),
                    last: record.time.clone(),
                },
            );
        }
    }
    let mut out: Vec<ReportRow> = rows
        .into_iter()
        .map(|((_, cgroup_id, reason), r)| ReportRow {
            digest: r.digest,
            path: r.path,
            comm: r.comm,
            uid: r.uid,
            cgroup_id,
            cgroup: r.cgroup,
            reason,
            decision: r.decision,
            count: r.count,
            first_boot_ns: 0,
            last_boot_ns: 0,
            first_time: Some(r.first),
            last_time: Some(r.last),
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.count));
    Ok(ReportResult {
        rows: out,
        not_shown,
        since: Some(humantime::format_rfc3339_seconds(since).to_string()),
        records_read: Some(read),
    })
}

fn time_of(record: &Record) -> Option<SystemTime> {
    humantime::parse_rfc3339(&record.time).ok()
}

/// The time of the first record of `file`.
fn first_time(file: &Path) -> io::Result<Option<SystemTime>> {
    let reader = BufReader::new(fs::File::open(file)?);
    for line in reader.lines() {
        if let Ok(record) = serde_json::from_str::<Record>(&line?) {
            return Ok(time_of(&record));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn record(seq: u64, time: &str, decision: &str, reason: &str, digest: &str) -> String {
        let mut body = json!({
            "seq": seq, "prev": "00", "time": time, "host": "h", "kind": "exec",
            "decision": decision, "reason": reason, "hook": "exec", "mode": "enforce",
            "digest": digest,
            "actor": {"pid": 1, "uid": 1000, "comm": "job", "cgroup": "/jobs/a", "cgroup_id": 9, "exe": "/bin/job"},
        });
        if decision == "admin" {
            body["kind"] = json!("admin");
        }
        body.to_string()
    }

    #[test]
    fn refusals_since_a_time_are_grouped_across_files() {
        let dir = std::env::temp_dir().join(format!("authz-history-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let old = dir.join("decisions-1.jsonl");
        let current = dir.join("decisions.jsonl");
        fs::write(
            &old,
            [
                record(
                    1,
                    "2026-01-01T00:00:00.000000000Z",
                    "deny",
                    "no-permit",
                    "aa",
                ),
                record(
                    2,
                    "2026-01-02T00:00:00.000000000Z",
                    "deny",
                    "no-permit",
                    "aa",
                ),
            ]
            .join("\n"),
        )
        .unwrap();
        fs::write(
            &current,
            [
                record(
                    3,
                    "2026-01-03T00:00:00.000000000Z",
                    "deny",
                    "no-permit",
                    "aa",
                ),
                record(4, "2026-01-03T00:00:01.000000000Z", "allow", "permit", "aa"),
                record(
                    5,
                    "2026-01-03T00:00:02.000000000Z",
                    "audit-deny",
                    "wrong-cgroup",
                    "bb",
                ),
                "not a record".into(),
                record(6, "2026-01-03T00:00:03.000000000Z", "admin", "-", "cc"),
            ]
            .join("\n"),
        )
        .unwrap();
        let since = humantime::parse_rfc3339("2026-01-01T12:00:00Z").unwrap();
        let r = refusals_since(&[old.clone(), current.clone()], since).unwrap();
        assert_eq!(r.rows.len(), 2, "{:?}", r.rows);
        assert_eq!(r.rows[0].digest.as_deref(), Some("aa"));
        assert_eq!(r.rows[0].count, 2);
        assert_eq!(
            r.rows[0].first_time.as_deref(),
            Some("2026-01-02T00:00:00.000000000Z")
        );
        assert_eq!(r.rows[0].cgroup.as_deref(), Some("/jobs/a"));
        assert_eq!(r.rows[1].reason, "wrong-cgroup");
        assert_eq!(r.rows[1].decision, "audit-deny");
        assert_eq!(r.since.as_deref(), Some("2026-01-01T12:00:00Z"));
        // A later start skips the older file without reading it.
        let later = humantime::parse_rfc3339("2026-01-03T00:00:00.5Z").unwrap();
        let r = refusals_since(&[old, current], later).unwrap();
        assert_eq!(r.records_read, Some(4));
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].digest.as_deref(), Some("bb"));
        assert!(later > since + Duration::from_secs(86_400));
        fs::remove_dir_all(&dir).unwrap();
    }
}
