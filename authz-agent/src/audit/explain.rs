//! `authz-agent audit explain`: one decision, told in full — who ran what,
//! under whose authority, in what context, under which policy, why — with the
//! chain of execs that led to it.
use std::{fmt::Write as _, fs, io, path::PathBuf};

use serde_json::Value;

use super::Record;

/// Which record to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// The record with this seq (its id in the log).
    Seq(u64),
    /// The last exec decision of this pid, at or before `at` (RFC 3339) if given.
    Pid { pid: u64, at: Option<String> },
}

/// A record and where it was found.
#[derive(Clone, Debug)]
pub struct Located {
    pub file: PathBuf,
    pub line: usize,
    pub record: Record,
}

/// Reads every record of `files` (oldest first); unreadable lines are skipped
/// (`audit verify` is the tool that judges them).
pub fn load(files: &[PathBuf]) -> io::Result<Vec<Located>> {
    let mut out = Vec::new();
    for file in files {
        let text = fs::read_to_string(file)?;
        for (i, line) in text.lines().enumerate() {
            if let Ok(record) = serde_json::from_str::<Record>(line) {
                out.push(Located {
                    file: file.clone(),
                    line: i + 1,
                    record,
                });
            }
        }
    }
    Ok(out)
}

/// Finds the record `query` names.
pub fn find<'a>(records: &'a [Located], query: &Query) -> Option<&'a Located> {
    match query {
        Query::Seq(seq) => records.iter().find(|r| r.record.seq == *seq),
        Query::Pid { pid, at } => records.iter().rev().find(|r| {
            r.record.kind == "exec"
                && r.record
                    .body
                    .get("actor")
                    .and_then(|a| a.get("pid"))
                    .and_then(Value::as_u64)
                    == Some(*pid)
                && at.as_deref().is_none_or(|at| r.record.time.as_str() <= at)
        }),
    }
}

/// What a reason code means.
pub fn reason_text(reason: &str) -> &'static str {
    match reason {
        "permit" => "a valid permit names this binary for this cgroup",
        "permit-inherited" => {
            "a valid permit on an ancestor cgroup, with descendants included, names this binary"
        }
        "out-of-scope" => "the process runs outside the enforced cgroup subtrees",
        "no-permit" => "no permit names this binary's SHA-256",
        "wrong-cgroup" => "permits name this binary, but for other cgroups",
        "expired" => "the permit for this binary and cgroup had expired",
        "digest-failed" => {
            "the kernel could not compute the file's SHA-256, so the exec was refused (fail closed)"
        }
        "selftest" => "the agent's own self-test probe, always refused",
        "internal-error" => {
            "a kernel structure could not be read, so the exec was refused (fail closed)"
        }
        _ => "unknown reason code",
    }
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// The readable account of `target`, using `records` for lineage.
pub fn explain(records: &[Located], target: &Located) -> String {
    let r = &target.record;
    let b = &r.body;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "record {} ({} line {})",
        r.seq,
        target.file.display(),
        target.line
    );
    let _ = writeln!(out, "time:      {} on host {}", r.time, r.host);
    if r.kind != "exec" {
        let _ = writeln!(out, "kind:      {} {}", r.kind, s(b.get("event")));
        let _ = writeln!(out, "details:   {}", Value::Object(b.clone()));
        return out;
    }
    let reason = s(b.get("reason"));
    let _ = writeln!(
        out,
        "decision:  {} ({reason}): {}",
        s(b.get("decision")).to_uppercase(),
        reason_text(&reason)
    );
    let _ = writeln!(out, "mode:      {}", s(b.get("mode")));
    let a = b.get("actor");
    let field = |k: &str| s(a.and_then(|a| a.get(k)));
    let _ = writeln!(
        out,
        "who:       pid {} (parent {}), uid {}, gid {}, comm {:?}",
        field("pid"),
        field("ppid"),
        field("uid"),
        field("gid"),
        field("comm")
    );
    let _ = writeln!(
        out,
        "where:     cgroup {} (id {})",
        field("cgroup"),
        field("cgroup_id")
    );
    let _ = writeln!(
        out,
        "what:      {} (execve of {})",
        field("exe"),
        field("filename")
    );
    let _ = writeln!(out, "binary:    sha256 {}", s(b.get("digest")));
    let _ = writeln!(
        out,
        "policy:    trust policy version {}, digest {}",
        s(b.get("policy_version")),
        s(b.get("policy_digest"))
    );
    match b.get("permit").filter(|p| !p.is_null()) {
        Some(p) => {
            let _ = writeln!(out, "authority: permit {}", s(p.get("id")));
            describe_permit(&mut out, p);
        }
        None => {
            let _ = writeln!(out, "authority: none (no permit allowed this exec)");
        }
    }
    let _ = writeln!(out, "lineage:");
    for line in lineage(records, target) {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn describe_permit(out: &mut String, p: &Value) {
    let _ = writeln!(out, "           issuer key {}", s(p.get("issuer")));
    if let Some(chain) = p.get("chain").and_then(Value::as_array) {
        let keys: Vec<String> = chain.iter().map(|k| s(Some(k))).collect();
        let _ = writeln!(
            out,
            "           delegation chain (root first): {}",
            keys.join(" -> ")
        );
    }
    let _ = writeln!(
        out,
        "           requested by {}, on behalf of {}, reason {:?}",
        s(p.get("requested_by")),
        s(p.get("on_behalf_of")),
        s(p.get("reason"))
    );
    let _ = writeln!(
        out,
        "           for cgroup {}{}, valid {} to {}, issued under policy version {}",
        s(p.get("cgroup")),
        if p.get("descendants") == Some(&Value::Bool(true)) {
            " and descendants"
        } else {
            ""
        },
        s(p.get("not_before")),
        s(p.get("expires")),
        s(p.get("policy_version"))
    );
}

/// The chain of execs that led here: each step is the exec that started the
/// image (under the permit) the previous step's process was running.
pub fn lineage(records: &[Located], target: &Located) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = target;
    for _ in 0..16 {
        let b = &current.record.body;
        let parent = b.get("parent_permit").filter(|p| !p.is_null());
        let Some(parent_id) = parent.and_then(|p| p.get("id")).and_then(Value::as_str) else {
            out.push("started by a process running under no permit (the chain's origin)".into());
            return out;
        };
        let actor = b.get("actor");
        let pid = actor.and_then(|a| a.get("pid")).and_then(Value::as_u64);
        let ppid = actor.and_then(|a| a.get("ppid")).and_then(Value::as_u64);
        let pos = records
            .iter()
            .position(|r| std::ptr::eq(r, current))
            .unwrap_or(0);
        let is_origin = |r: &&Located| {
            r.record.kind == "exec"
                && r.record.body.get("decision").and_then(Value::as_str) == Some("allow")
                && r.record
                    .body
                    .get("permit")
                    .and_then(|p| p.get("id"))
                    .and_then(Value::as_str)
                    == Some(parent_id)
        };
        let same_process = |r: &&Located| {
            let rp = r
                .record
                .body
                .get("actor")
                .and_then(|a| a.get("pid"))
                .and_then(Value::as_u64);
            rp.is_some() && (rp == pid || rp == ppid)
        };
        let earlier = &records[..pos];
        let found = earlier
            .iter()
            .rev()
            .find(|r| is_origin(r) && same_process(r))
            .or_else(|| earlier.iter().rev().find(is_origin));
        match found {
            Some(prev) => {
                let pa = prev.record.body.get("actor");
                out.push(format!(
                    "<- record {}: pid {} ran {} under permit {} (requested by {})",
                    prev.record.seq,
                    s(pa.and_then(|a| a.get("pid"))),
                    s(pa.and_then(|a| a.get("exe"))),
                    parent_id,
                    s(prev
                        .record
                        .body
                        .get("permit")
                        .and_then(|p| p.get("requested_by")))
                ));
                current = prev;
            }
            None => {
                out.push(format!(
                    "<- a process started under permit {parent_id} (issued by {}); its exec is not in these files",
                    s(parent.and_then(|p| p.get("issuer")))
                ));
                return out;
            }
        }
    }
    out.push("(lineage longer than 16 steps; stopped)".into());
    out
}
