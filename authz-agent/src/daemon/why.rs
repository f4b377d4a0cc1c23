//! `why`: would this binary run in this cgroup, and why. The agent answers
//! from its live state — the kernel's mode and scope, the filesystem policy,
//! the permits it holds and the ones revoked or expired in this run — and
//! from the file itself: its SHA-256, its filesystem, whether a process has
//! it open for writing. The same order of checks as the kernel program
//! (README, "How it decides").
//!
//! Hashing a large file and scanning `/proc` take time, so the daemon takes a
//! [`Context`] snapshot and answers on a blocking thread.
use std::{
    collections::VecDeque,
    fs, io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use sha2::{Digest as _, Sha256};

use crate::{
    artifact::time::Timestamp,
    control::{
        protocol::{ErrorBody, PermitState, RefusalKind, WhyPermit, WhyResult},
        server::Peer,
    },
    enforcer::{scope::Trie, Mode},
    trust::Verified,
};

/// Permits remembered as revoked or expired (for `why`'s `revoked` and
/// `expired`), most recent last; older ones are forgotten.
const GONE_LIMIT: usize = 10_000;

/// Why a permit left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoneWhy {
    Revoked,
    Expired,
}

/// A permit that was held in this run and is no longer.
#[derive(Clone, Debug)]
pub struct Gone {
    pub digest: [u8; 32],
    pub permit: WhyPermit,
    pub why: GoneWhy,
    pub at: SystemTime,
}

/// Permits revoked or expired in this run, bounded.
#[derive(Debug, Default)]
pub struct GoneIndex {
    entries: VecDeque<Gone>,
}

impl GoneIndex {
    pub fn record(&mut self, v: &Verified, why: GoneWhy, at: SystemTime) {
        if self.entries.len() >= GONE_LIMIT {
            self.entries.pop_front();
        }
        let state = match why {
            GoneWhy::Revoked | GoneWhy::Expired => PermitState::Expired,
        };
        self.entries.push_back(Gone {
            digest: v.digest,
            permit: permit_view(v, state),
            why,
            at,
        });
    }

    /// Every entry, most recent last.
    pub fn all(&self) -> Vec<Gone> {
        self.entries.iter().cloned().collect()
    }
}

/// How `why` shows a permit.
pub fn permit_view(v: &Verified, state: PermitState) -> WhyPermit {
    WhyPermit {
        id: v.id.to_string(),
        state,
        cgroup: v.cgroup.clone(),
        descendants: v.descendants,
        not_before: Timestamp::from_system_time(v.not_before).to_string(),
        expires: Timestamp::from_system_time(v.expires).to_string(),
        requested_by: v.requested_by.clone(),
        reason: v.reason.clone(),
    }
}

/// What the agent holds, copied for one answer.
#[derive(Clone, Debug)]
pub struct Context {
    pub mode: Mode,
    pub scope_paths: Vec<String>,
    pub trusted_filesystems: Vec<u64>,
    pub cgroup_root: PathBuf,
    /// Every held exec permit: its binary's digest and how `why` shows it.
    pub permits: Vec<([u8; 32], WhyPermit)>,
    pub gone: Vec<Gone>,
    /// Where `/proc` is (tests use a fake).
    pub proc_root: PathBuf,
}

/// Where `why` looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Cgroup(String),
    Pid(u32),
}

/// What the agent found out about the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileFacts {
    pub digest: Option<[u8; 32]>,
    pub magic: Option<u64>,
    /// A process holding it open for writing (its pid).
    pub writer: Option<u32>,
}

fn refusal(kind: RefusalKind, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(kind, message)
}

/// Answers `why` for `peer`: resolves the cgroup, reads the file, decides.
pub fn answer(
    ctx: &Context,
    path: &str,
    target: Option<Target>,
    peer: &Peer,
) -> Result<WhyResult, ErrorBody> {
    let file_path = Path::new(path);
    if !file_path.is_absolute() {
        return Err(refusal(
            RefusalKind::MalformedRequest,
            format!("{path} is not an absolute path"),
        ));
    }
    let target = match target {
        Some(t) => t,
        None => Target::Pid(
            peer.pid
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| {
                    refusal(
                        RefusalKind::MalformedRequest,
                        "name a cgroup or a pid: the asking process's pid is unknown",
                    )
                })?,
        ),
    };
    let cgroup = match target {
        Target::Cgroup(c) => {
            crate::cgroup::normalize(&c)
                .map_err(|e| refusal(RefusalKind::MalformedRequest, e.to_string()))?;
            c
        }
        Target::Pid(pid) => cgroup_of(&ctx.proc_root, pid).map_err(|e| {
            refusal(
                RefusalKind::MalformedRequest,
                format!("cannot read the cgroup of pid {pid}: {e}"),
            )
        })?,
    };
    let facts = file_facts(file_path, peer, &ctx.proc_root)?;
    let cgroup_id = crate::cgroup::Hierarchy::open(&ctx.cgroup_root)
        .ok()
        .and_then(|h| h.id(&cgroup).ok());
    let mut result = decide(ctx, &cgroup, &facts, SystemTime::now());
    result.path = fs::canonicalize(file_path)
        .unwrap_or_else(|_| file_path.to_owned())
        .display()
        .to_string();
    result.cgroup_id = cgroup_id;
    Ok(result)
}

/// The cgroup v2 path of `pid`.
fn cgroup_of(proc_root: &Path, pid: u32) -> io::Result<String> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("no cgroup v2 entry"))
}

/// Opens the file once and reads everything from that descriptor: the
/// peer must be able to read it (by its mode bits, for a non-root peer), so
/// `why` tells no one the digest of a file they could not hash themselves.
fn file_facts(path: &Path, peer: &Peer, proc_root: &Path) -> Result<FileFacts, ErrorBody> {
    let mut file = fs::File::open(path).map_err(|e| {
        refusal(
            RefusalKind::MalformedRequest,
            format!("cannot open {}: {e}", path.display()),
        )
    })?;
    let meta = file.metadata().map_err(|e| {
        refusal(
            RefusalKind::Internal,
            format!("cannot stat {}: {e}", path.display()),
        )
    })?;
    if !meta.is_file() {
        return Err(refusal(
            RefusalKind::MalformedRequest,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if !may_read(&meta, peer) {
        return Err(refusal(
            RefusalKind::Forbidden,
            format!(
                "uid {} may not read {}, so the agent does not tell its digest",
                peer.uid,
                path.display()
            ),
        ));
    }
    let magic = nix::sys::statfs::fstatfs(&file)
        .ok()
        .map(|s| s.filesystem_type().0 as u64);
    let mut hasher = Sha256::new();
    let digest = io::copy(&mut file, &mut hasher)
        .ok()
        .map(|_| hasher.finalize().into());
    Ok(FileFacts {
        digest,
        magic,
        writer: writer_of(proc_root, meta.dev(), meta.ino()),
    })
}

/// Whether `peer` may read a file with `meta`, by its mode bits (root may).
fn may_read(meta: &fs::Metadata, peer: &Peer) -> bool {
    const OWNER_READ: u32 = 0o400;
    const GROUP_READ: u32 = 0o040;
    const OTHER_READ: u32 = 0o004;
    let mode = meta.permissions().mode();
    if peer.uid == 0 {
        return true;
    }
    if peer.uid == meta.uid() {
        return mode & OWNER_READ != 0;
    }
    if peer.gid == meta.gid() || peer.groups.contains(&meta.gid()) {
        return mode & GROUP_READ != 0;
    }
    mode & OTHER_READ != 0
}

/// A process that holds the file (`dev`, `ino`) open for writing: its
/// descriptors are what make the kernel refuse `mutable-content` (or exec
/// fail with ETXTBSY). Writable shared mappings are not looked at.
fn writer_of(proc_root: &Path, dev: u64, ino: u64) -> Option<u32> {
    let procs = fs::read_dir(proc_root).ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(m) = fs::metadata(fd.path()) else {
                continue;
            };
            if m.dev() != dev || m.ino() != ino {
                continue;
            }
            let info = entry.path().join("fdinfo").join(fd.file_name());
            if fs::read_to_string(info)
                .ok()
                .as_deref()
                .and_then(fdinfo_flags)
                .is_some_and(|flags| flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32)
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The `flags:` field of a `/proc/PID/fdinfo/N` file (octal).
fn fdinfo_flags(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// Whether `cgroup` is `ancestor` or below it.
fn under(cgroup: &str, ancestor: &str) -> bool {
    let a = ancestor.trim_end_matches('/');
    a.is_empty() || cgroup == a || cgroup.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
}

/// The filesystem's name as authz knows it, else its magic.
fn filesystem_name(magic: u64) -> String {
    authz_common::FILESYSTEMS
        .iter()
        .find(|f| f.magic == magic)
        .map_or_else(|| format!("{magic:#x}"), |f| f.name.to_owned())
}

/// The decision, from the snapshot and the file's facts.
pub fn decide(ctx: &Context, cgroup: &str, facts: &FileFacts, now: SystemTime) -> WhyResult {
    let mut r = WhyResult {
        path: String::new(),
        digest: facts.digest.map(hex::encode),
        cgroup: cgroup.to_owned(),
        cgroup_id: None,
        mode: ctx.mode,
        in_scope: Trie::build(&ctx.scope_paths).map_or(true, |t| t.enforces(cgroup)),
        decision: String::new(),
        reason: String::new(),
        explanation: String::new(),
        permit: None,
        elsewhere: Vec::new(),
        filesystem: facts.magic.map(filesystem_name),
    };
    let allowed = |r: &mut WhyResult, reason: &str, explanation: String| {
        r.decision = "allow".into();
        r.reason = reason.into();
        r.explanation = explanation;
    };
    let refused = |r: &mut WhyResult, reason: &str, explanation: String| {
        r.decision = if r.mode == Mode::Audit {
            "audit-deny"
        } else {
            "deny"
        }
        .into();
        r.reason = reason.into();
        r.explanation = if r.mode == Mode::Audit {
            format!("{explanation}; audit mode lets it run and logs it")
        } else {
            explanation
        };
    };
    if ctx.mode == Mode::Off {
        allowed(
            &mut r,
            "mode-off",
            "the agent is in mode off: the kernel decides nothing".into(),
        );
        return r;
    }
    if !r.in_scope {
        allowed(
            &mut r,
            "out-of-scope",
            format!(
                "{cgroup} is outside the enforced subtrees ({})",
                ctx.scope_paths.join(", ")
            ),
        );
        return r;
    }
    if let Some(magic) = facts.magic {
        let policy = crate::enforcer::scope::filesystem_policy(&ctx.trusted_filesystems);
        let exec = policy
            .get(&magic)
            .is_some_and(|f| f & authz_common::fs_flags::EXEC != 0);
        if !exec {
            let name = filesystem_name(magic);
            refused(
                &mut r,
                "untrusted-filesystem",
                format!("the file is on {name}, a filesystem authz does not trust for exec (add it to trusted_filesystems to trust it)"),
            );
            return r;
        }
    }
    if let Some(pid) = facts.writer {
        refused(
            &mut r,
            "mutable-content",
            format!("process {pid} has the file open for writing, so its content can change after the check"),
        );
        return r;
    }
    let Some(digest) = facts.digest else {
        refused(
            &mut r,
            "digest-failed",
            "the file could not be read to hash it".into(),
        );
        return r;
    };
    let _ = now;
    let mine: Vec<&WhyPermit> = ctx
        .permits
        .iter()
        .filter(|(d, _)| *d == digest)
        .map(|(_, p)| p)
        .collect();
    let applies =
        |p: &&WhyPermit| p.cgroup == cgroup || (p.descendants && under(cgroup, &p.cgroup));
    // The nearest cgroup first: the kernel looks at the caller's own cgroup,
    // then its ancestors.
    let mut applying: Vec<&WhyPermit> = mine.iter().copied().filter(applies).collect();
    applying.sort_by_key(|p| std::cmp::Reverse(p.cgroup.len()));
    if let Some(p) = applying.iter().find(|p| p.state == PermitState::Live) {
        let (reason, how) = if p.cgroup == cgroup {
            ("permit", String::new())
        } else {
            (
                "permit-inherited",
                format!(" (granted on {} and its descendants)", p.cgroup),
            )
        };
        allowed(
            &mut r,
            reason,
            format!("permit {} allows it here until {}{how}", p.id, p.expires),
        );
        r.permit = Some((*p).clone());
        return r;
    }
    let by_state = |state| {
        applying
            .iter()
            .find(|p| p.state == state)
            .map(|p| (*p).clone())
    };
    if let Some(p) = by_state(PermitState::Expired) {
        refused(
            &mut r,
            "expired",
            format!("permit {} expired at {}", p.id, p.expires),
        );
        r.permit = Some(p);
        return r;
    }
    if let Some(p) = by_state(PermitState::Scheduled) {
        refused(
            &mut r,
            "not-yet-valid",
            format!("permit {} is in force only from {} (the kernel refuses it as no-permit until then)", p.id, p.not_before),
        );
        r.permit = Some(p);
        return r;
    }
    if let Some(p) = by_state(PermitState::WaitingForCgroup) {
        refused(
            &mut r,
            "no-permit",
            format!("permit {} waits for its cgroup {} to exist", p.id, p.cgroup),
        );
        r.permit = Some(p);
        return r;
    }
    if !mine.is_empty() {
        let places: Vec<String> = mine
            .iter()
            .map(|p| format!("{}{}", p.cgroup, if p.descendants { "/**" } else { "" }))
            .collect();
        refused(
            &mut r,
            "wrong-cgroup",
            format!(
                "permits name this binary for other cgroups: {}",
                places.join(", ")
            ),
        );
        r.elsewhere = mine.into_iter().cloned().collect();
        return r;
    }
    let gone: Vec<&Gone> = ctx
        .gone
        .iter()
        .filter(|g| g.digest == digest && applies(&&g.permit))
        .collect();
    if let Some(g) = gone.last() {
        let at = Timestamp::from_system_time(g.at);
        let (reason, text) = match g.why {
            GoneWhy::Revoked => (
                "revoked",
                format!("permit {} was revoked at {at}", g.permit.id),
            ),
            GoneWhy::Expired => (
                "expired",
                format!("permit {} expired at {}", g.permit.id, g.permit.expires),
            ),
        };
        refused(&mut r, reason, text);
        r.permit = Some(g.permit.clone());
        return r;
    }
    refused(
        &mut r,
        "no-permit",
        "no permit names this binary's SHA-256".into(),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: [u8; 32] = [7; 32];
    const EXT4: u64 = 0xEF53;
    const FUSE: u64 = 0x6573_5546;

    fn permit(
        id: &str,
        cgroup: &str,
        descendants: bool,
        state: PermitState,
    ) -> ([u8; 32], WhyPermit) {
        (
            D,
            WhyPermit {
                id: id.into(),
                state,
                cgroup: cgroup.into(),
                descendants,
                not_before: "2026-01-01T00:00:00Z".into(),
                expires: "2026-01-02T00:00:00Z".into(),
                requested_by: None,
                reason: None,
            },
        )
    }

    fn ctx(permits: Vec<([u8; 32], WhyPermit)>) -> Context {
        Context {
            mode: Mode::Enforce,
            scope_paths: vec!["/jobs".into()],
            trusted_filesystems: vec![],
            cgroup_root: "/nonexistent".into(),
            permits,
            gone: vec![],
            proc_root: "/proc".into(),
        }
    }

    fn facts() -> FileFacts {
        FileFacts {
            digest: Some(D),
            magic: Some(EXT4),
            writer: None,
        }
    }

    fn why(ctx: &Context, cgroup: &str, facts: &FileFacts) -> (String, String) {
        let r = decide(ctx, cgroup, facts, SystemTime::now());
        (r.decision, r.reason)
    }

    fn pair(d: &str, r: &str) -> (String, String) {
        (d.into(), r.into())
    }

    #[test]
    fn a_live_permit_allows_here_and_below_when_it_says_so() {
        let c = ctx(vec![permit("a", "/jobs/a", true, PermitState::Live)]);
        assert_eq!(why(&c, "/jobs/a", &facts()), pair("allow", "permit"));
        assert_eq!(
            why(&c, "/jobs/a/b", &facts()),
            pair("allow", "permit-inherited")
        );
        let r = decide(&c, "/jobs/a", &facts(), SystemTime::now());
        assert_eq!(r.permit.unwrap().id, "a");
        assert!(
            r.explanation.contains("until 2026-01-02T00:00:00Z"),
            "{}",
            r.explanation
        );
        // Not a sibling whose name merely starts the same.
        assert_eq!(why(&c, "/jobs/ab", &facts()), pair("deny", "wrong-cgroup"));
        let only_here = ctx(vec![permit("a", "/jobs/a", false, PermitState::Live)]);
        assert_eq!(
            why(&only_here, "/jobs/a/b", &facts()),
            pair("deny", "wrong-cgroup")
        );
    }

    #[test]
    fn each_reason_is_told() {
        let none = ctx(vec![]);
        assert_eq!(why(&none, "/jobs/a", &facts()), pair("deny", "no-permit"));
        assert_eq!(
            why(&none, "/other", &facts()),
            pair("allow", "out-of-scope")
        );
        let mut off = ctx(vec![]);
        off.mode = Mode::Off;
        assert_eq!(why(&off, "/jobs/a", &facts()), pair("allow", "mode-off"));
        let mut audit = ctx(vec![]);
        audit.mode = Mode::Audit;
        assert_eq!(
            why(&audit, "/jobs/a", &facts()),
            pair("audit-deny", "no-permit")
        );
        let fuse = FileFacts {
            magic: Some(FUSE),
            ..facts()
        };
        assert_eq!(
            why(&none, "/jobs/a", &fuse),
            pair("deny", "untrusted-filesystem")
        );
        let mut trusting = ctx(vec![]);
        trusting.trusted_filesystems = vec![FUSE];
        assert_eq!(why(&trusting, "/jobs/a", &fuse), pair("deny", "no-permit"));
        let written = FileFacts {
            writer: Some(42),
            ..facts()
        };
        assert_eq!(
            why(&none, "/jobs/a", &written),
            pair("deny", "mutable-content")
        );
        let unread = FileFacts {
            digest: None,
            ..facts()
        };
        assert_eq!(
            why(&none, "/jobs/a", &unread),
            pair("deny", "digest-failed")
        );
        let expired = ctx(vec![permit("a", "/jobs/a", false, PermitState::Expired)]);
        assert_eq!(why(&expired, "/jobs/a", &facts()), pair("deny", "expired"));
        let scheduled = ctx(vec![permit("a", "/jobs/a", false, PermitState::Scheduled)]);
        assert_eq!(
            why(&scheduled, "/jobs/a", &facts()),
            pair("deny", "not-yet-valid")
        );
        let mut gone = ctx(vec![]);
        let (_, p) = permit("r", "/jobs", true, PermitState::Expired);
        gone.gone.push(Gone {
            digest: D,
            permit: p,
            why: GoneWhy::Revoked,
            at: SystemTime::now(),
        });
        assert_eq!(why(&gone, "/jobs/a", &facts()), pair("deny", "revoked"));
        // A revocation elsewhere says nothing about here.
        assert_eq!(why(&gone, "/other", &facts()).1, "out-of-scope");
    }

    #[test]
    fn the_nearest_live_permit_is_named() {
        let c = ctx(vec![
            permit("outer", "/jobs", true, PermitState::Live),
            permit("inner", "/jobs/a", true, PermitState::Live),
        ]);
        let r = decide(&c, "/jobs/a/b", &facts(), SystemTime::now());
        assert_eq!(r.permit.unwrap().id, "inner");
    }

    #[test]
    fn fdinfo_flags_are_octal() {
        assert_eq!(
            fdinfo_flags("pos:\t0\nflags:\t0100002\nmnt_id:\t25\n"),
            Some(0o100002)
        );
        assert_eq!(fdinfo_flags("pos: 0\n"), None);
    }

    #[test]
    fn files_are_read_with_the_askers_rights_and_writers_found() {
        let dir = std::env::temp_dir().join(format!("authz-why-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prog");
        fs::write(&path, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        let me = nix::unistd::getuid().as_raw();
        let owner = Peer {
            pid: None,
            uid: me,
            gid: nix::unistd::getgid().as_raw(),
            groups: vec![],
        };
        let stranger = Peer {
            pid: None,
            uid: me + 1,
            gid: 65534,
            groups: vec![],
        };
        let facts = file_facts(&path, &owner, Path::new("/proc")).unwrap();
        assert_eq!(facts.digest, Some(Sha256::digest(b"#!/bin/sh\n").into()));
        assert_eq!(facts.writer, None);
        if me != 0 {
            let e = file_facts(&path, &stranger, Path::new("/proc")).unwrap_err();
            assert_eq!(e.kind, RefusalKind::Forbidden);
        }
        // This test process opens it for writing: it is found.
        let _w = fs::OpenOptions::new().append(true).open(&path).unwrap();
        let facts = file_facts(&path, &owner, Path::new("/proc")).unwrap();
        assert_eq!(facts.writer, Some(std::process::id()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
