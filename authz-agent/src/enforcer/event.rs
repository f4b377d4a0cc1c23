//! Decision events from the kernel, decoded.
use authz_common::{decision, event_flags, mode, reason, ExecEvent, HASH_ALGO_SHA256};

/// One kernel decision, in userspace terms.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DecisionEvent {
    /// `CLOCK_BOOTTIME` nanoseconds at the decision.
    pub boot_ns: u64,
    /// Position among the events the kernel queued in this epoch (from 1; 0:
    /// unknown).
    pub seq: u64,
    /// The loaded copy of the programs that decided.
    pub instance: u64,
    /// Which check decided: `exec`, `mmap`, `mprotect` or `memory-write`.
    pub hook: &'static str,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    /// The path given to execve.
    pub filename: String,
    /// The file this decision is about: `filename`, or for the second check of a
    /// `#!` script, its interpreter.
    pub path: String,
    pub decision: Decision,
    pub reason: Reason,
    pub mode: &'static str,
    /// Hex SHA-256 of the executed content, when the kernel could compute it.
    pub digest: Option<String>,
    pub digest_cached: bool,
    /// What `bpf_ima_file_hash` returned (hash algorithm or negative errno).
    pub hash_status: i32,
    /// Hex artifact id of the permit involved, when one was found.
    pub permit_id: Option<String>,
    /// Permit the exec'ing process itself was started under (lineage).
    pub parent_permit_id: Option<String>,
    pub permit_cgroup_id: Option<u64>,
    pub permit_expires_boot_ns: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Allow,
    Deny,
    /// Audit mode: allowed, but enforce mode would have denied.
    AuditDeny,
    Unknown(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Permit,
    PermitInherited,
    OutOfScope,
    NoPermit,
    Expired,
    WrongCgroup,
    DigestFailed,
    Selftest,
    Internal,
    MutableContent,
    UntrustedFilesystem,
    DigestStale,
    ExecMemory,
    UnverifiedMprotect,
    CodeWrite,
    LibraryNoPermit,
    LibraryExpired,
    LibraryWrongCgroup,
    Unknown(u32),
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Unknown(_) => "unknown",
            Reason::Permit => reason::name(reason::PERMIT),
            Reason::PermitInherited => reason::name(reason::PERMIT_INHERITED),
            Reason::OutOfScope => reason::name(reason::OUT_OF_SCOPE),
            Reason::NoPermit => reason::name(reason::NO_PERMIT),
            Reason::Expired => reason::name(reason::EXPIRED),
            Reason::WrongCgroup => reason::name(reason::WRONG_CGROUP),
            Reason::DigestFailed => reason::name(reason::DIGEST_FAILED),
            Reason::Selftest => reason::name(reason::SELFTEST),
            Reason::Internal => reason::name(reason::INTERNAL),
            Reason::MutableContent => reason::name(reason::MUTABLE_CONTENT),
            Reason::UntrustedFilesystem => reason::name(reason::UNTRUSTED_FS),
            Reason::DigestStale => reason::name(reason::DIGEST_STALE),
            Reason::ExecMemory => reason::name(reason::EXEC_MEMORY),
            Reason::UnverifiedMprotect => reason::name(reason::UNVERIFIED_MPROTECT),
            Reason::CodeWrite => reason::name(reason::CODE_WRITE),
            Reason::LibraryNoPermit => reason::name(reason::LIBRARY_NO_PERMIT),
            Reason::LibraryExpired => reason::name(reason::LIBRARY_EXPIRED),
            Reason::LibraryWrongCgroup => reason::name(reason::LIBRARY_WRONG_CGROUP),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Allow => decision::name(decision::ALLOW),
            Decision::Deny => decision::name(decision::DENY),
            Decision::AuditDeny => decision::name(decision::AUDIT_DENY),
            Decision::Unknown(_) => "unknown",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes a ring buffer record. Returns `None` when the record is too short to
/// be an [`ExecEvent`] (never from our program; a guard, not a case).
pub fn decode(bytes: &[u8]) -> Option<DecisionEvent> {
    if bytes.len() < std::mem::size_of::<ExecEvent>() {
        return None;
    }
    // SAFETY: the length was checked; `ExecEvent` is plain old data (all bit
    // patterns valid) and `read_unaligned` copes with any alignment.
    let raw: ExecEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Some(DecisionEvent::from_raw(&raw))
}

impl DecisionEvent {
    pub fn from_raw(raw: &ExecEvent) -> Self {
        let digest_valid = raw.flags & event_flags::DIGEST_VALID != 0
            && i64::from(raw.hash_status) == HASH_ALGO_SHA256;
        let found_permit = raw.permit_id != [0; authz_common::ARTIFACT_ID_LEN];
        Self {
            boot_ns: raw.boot_ns,
            seq: raw.seq,
            instance: raw.instance,
            hook: authz_common::hook::name(raw.hook),
            pid: raw.pid,
            tgid: raw.tgid,
            ppid: raw.ppid,
            uid: raw.uid,
            gid: raw.gid,
            cgroup_id: raw.cgroup_id,
            comm: c_string(&raw.comm),
            filename: c_string(&raw.filename),
            path: c_string(&raw.interp),
            decision: match raw.decision {
                decision::ALLOW => Decision::Allow,
                decision::DENY => Decision::Deny,
                decision::AUDIT_DENY => Decision::AuditDeny,
                other => Decision::Unknown(other),
            },
            reason: match raw.reason {
                reason::PERMIT => Reason::Permit,
                reason::PERMIT_INHERITED => Reason::PermitInherited,
                reason::OUT_OF_SCOPE => Reason::OutOfScope,
                reason::NO_PERMIT => Reason::NoPermit,
                reason::EXPIRED => Reason::Expired,
                reason::WRONG_CGROUP => Reason::WrongCgroup,
                reason::DIGEST_FAILED => Reason::DigestFailed,
                reason::SELFTEST => Reason::Selftest,
                reason::INTERNAL => Reason::Internal,
                reason::MUTABLE_CONTENT => Reason::MutableContent,
                reason::UNTRUSTED_FS => Reason::UntrustedFilesystem,
                reason::DIGEST_STALE => Reason::DigestStale,
                reason::EXEC_MEMORY => Reason::ExecMemory,
                reason::UNVERIFIED_MPROTECT => Reason::UnverifiedMprotect,
                reason::CODE_WRITE => Reason::CodeWrite,
                reason::LIBRARY_NO_PERMIT => Reason::LibraryNoPermit,
                reason::LIBRARY_EXPIRED => Reason::LibraryExpired,
                reason::LIBRARY_WRONG_CGROUP => Reason::LibraryWrongCgroup,
                other => Reason::Unknown(other),
            },
            mode: mode::name(raw.mode),
            digest: digest_valid.then(|| hex::encode(raw.digest)),
            digest_cached: raw.flags & event_flags::DIGEST_CACHED != 0,
            hash_status: raw.hash_status,
            permit_id: found_permit.then(|| hex::encode(raw.permit_id)),
            parent_permit_id: (raw.parent_permit_id != [0; authz_common::ARTIFACT_ID_LEN])
                .then(|| hex::encode(raw.parent_permit_id)),
            permit_cgroup_id: (raw.permit_cgroup_id != 0).then_some(raw.permit_cgroup_id),
            permit_expires_boot_ns: (raw.permit_expires_boot_ns != 0)
                .then_some(raw.permit_expires_boot_ns),
        }
    }
}

/// A NUL-terminated kernel string, lossily decoded.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_denial() {
        let mut raw = ExecEvent::zeroed();
        raw.decision = decision::DENY;
        raw.reason = reason::NO_PERMIT;
        raw.mode = mode::ENFORCE;
        raw.hash_status = HASH_ALGO_SHA256 as i32;
        raw.flags = event_flags::DIGEST_VALID;
        raw.digest = [0xab; 32];
        raw.comm[..4].copy_from_slice(b"bash");
        raw.filename[..9].copy_from_slice(b"/bin/true");
        raw.interp[..9].copy_from_slice(b"/bin/true");
        // SAFETY: viewing a POD struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const ExecEvent).cast::<u8>(),
                std::mem::size_of::<ExecEvent>(),
            )
        };
        let ev = decode(bytes).unwrap();
        assert_eq!(ev.decision, Decision::Deny);
        assert_eq!(ev.reason, Reason::NoPermit);
        assert_eq!(ev.comm, "bash");
        assert_eq!(ev.filename, "/bin/true");
        assert_eq!(ev.digest.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(ev.permit_id, None);
        assert_eq!(ev.mode, "enforce");
    }

    #[test]
    fn short_record_is_rejected_not_read() {
        assert!(decode(&[0u8; 10]).is_none());
    }

    #[test]
    fn digest_is_absent_unless_sha256() {
        let mut raw = ExecEvent::zeroed();
        raw.flags = event_flags::DIGEST_VALID;
        raw.hash_status = 2; // SHA-1
        assert_eq!(DecisionEvent::from_raw(&raw).digest, None);
    }
}
