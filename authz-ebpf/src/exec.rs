//! The exec decision: digest, permit lookup, verdict, event, counters.
use authz_common::{
    counter, decision, event_flags, mode, reason, scope, Digest, ExecEvent, PermitKey,
    ARTIFACT_ID_LEN, DIGEST_LEN, MAX_CGROUP_DEPTH,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns,
        },
    },
    programs::LsmContext,
};
use core::ffi::c_void;

use crate::{digest, kernel, maps};

/// `EPERM` from include/uapi/asm-generic/errno-base.h; LSM hooks return `-EPERM`.
const EPERM: i32 = 1;

/// What the lookup found.
#[derive(Clone, Copy)]
struct Verdict {
    allowed: bool,
    reason: u32,
    /// cgroup the permit was granted to (0 when none was found).
    permit_cgroup_id: u64,
    /// Expiry of the permit slot that decided (0 when none).
    expires_boot_ns: u64,
    /// Artifact behind that slot.
    artifact_id: [u8; ARTIFACT_ID_LEN],
}

impl Verdict {
    const fn refused(reason: u32) -> Self {
        Self {
            allowed: false,
            reason,
            permit_cgroup_id: 0,
            expires_boot_ns: 0,
            artifact_id: [0; ARTIFACT_ID_LEN],
        }
    }

    const fn allowed(
        reason: u32,
        cgroup_id: u64,
        expires_boot_ns: u64,
        artifact_id: [u8; ARTIFACT_ID_LEN],
    ) -> Self {
        Self {
            allowed: true,
            reason,
            permit_cgroup_id: cgroup_id,
            expires_boot_ns,
            artifact_id,
        }
    }
}

/// Decides one exec. Returns 0 to allow, `-EPERM` to refuse.
#[inline(always)]
pub fn check(ctx: &LsmContext) -> i32 {
    let bprm: *const c_void = ctx.arg(0);
    // The hook's extra argument: what earlier BPF LSM programs on this hook returned.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }

    let config = maps::config();
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let selftest = config.selftest_cgroup_id != 0 && config.selftest_cgroup_id == cgroup_id;

    if !selftest {
        if config.mode == mode::OFF {
            return 0;
        }
        if config.scope == scope::SUBTREES && !in_enforced_subtree(cgroup_id) {
            maps::count(counter::OUT_OF_SCOPE);
            return 0;
        }
    }

    let mut digest: Digest = [0; DIGEST_LEN];
    // SAFETY: `bprm` is the hook's `struct linux_binprm *`.
    let file = unsafe { kernel::binprm_file(bprm) };
    // SAFETY: `file` is `bprm->file`, loaded directly so it keeps its BTF type.
    let hashed = unsafe { digest::file_sha256_cached(file, &mut digest) };
    let (hash_status, flags) = match hashed {
        Ok(digest::Hashed {
            status,
            cached: false,
        }) => (status as i32, event_flags::DIGEST_VALID),
        Ok(digest::Hashed {
            status,
            cached: true,
        }) => (
            status as i32,
            event_flags::DIGEST_VALID | event_flags::DIGEST_CACHED,
        ),
        Err(digest::DigestError::NoFile) => (0, 0),
        Err(digest::DigestError::Hash(status)) => (status as i32, 0),
    };

    let verdict = if selftest {
        Verdict::refused(reason::SELFTEST)
    } else if flags & event_flags::DIGEST_VALID == 0 {
        maps::count(counter::DIGEST_ERRORS);
        if hash_status == 0 {
            Verdict::refused(reason::INTERNAL)
        } else {
            Verdict::refused(reason::DIGEST_FAILED)
        }
    } else {
        lookup(&digest, cgroup_id)
    };
    if flags & event_flags::DIGEST_VALID == 0 {
        digest = [0; DIGEST_LEN];
    }

    // Anything but an explicit audit mode enforces (fail closed on an unset map).
    let outcome = if verdict.allowed {
        maps::count(counter::ALLOWED);
        decision::ALLOW
    } else if config.mode == mode::AUDIT && !selftest {
        maps::count(counter::AUDIT_WOULD_DENY);
        decision::AUDIT_DENY
    } else {
        maps::count(match verdict.reason {
            reason::NO_PERMIT => counter::DENIED_NO_PERMIT,
            reason::EXPIRED => counter::DENIED_EXPIRED,
            reason::WRONG_CGROUP => counter::DENIED_WRONG_CGROUP,
            reason::DIGEST_FAILED => counter::DENIED_DIGEST_FAILED,
            reason::SELFTEST => counter::DENIED_SELFTEST,
            _ => counter::DENIED_INTERNAL,
        });
        decision::DENY
    };

    let parent_permit = crate::lineage::current_permit();
    // SAFETY: `bprm` is the hook's argument.
    if unsafe { kernel::is_first_pass(bprm) } {
        crate::lineage::set_pending(verdict.artifact_id, outcome != decision::DENY);
    }
    emit(
        bprm,
        cgroup_id,
        config.mode,
        outcome,
        &verdict,
        hash_status,
        flags,
        &digest,
        &parent_permit,
    );

    if outcome == decision::DENY {
        -EPERM
    } else {
        0
    }
}

/// Finds a live permit for `digest` in `cgroup_id` or, flagged "descendants", in
/// one of its ancestors. Expiry is checked here, against the boot clock, so an
/// expired permit refuses whether or not the agent has removed it yet.
#[inline(always)]
fn lookup(digest: &Digest, cgroup_id: u64) -> Verdict {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut key = PermitKey {
        digest: *digest,
        cgroup_id,
    };
    let mut expired = false;

    // SAFETY: the map value is copied out before the next helper call.
    if let Some(permit) = unsafe { maps::PERMITS.get(&key) }.copied() {
        // Own cgroup: either slot covers it.
        if permit.expires_boot_ns > now {
            return Verdict::allowed(
                reason::PERMIT,
                cgroup_id,
                permit.expires_boot_ns,
                permit.artifact_id,
            );
        }
        if permit.descendants_expires_boot_ns > now {
            return Verdict::allowed(
                reason::PERMIT,
                cgroup_id,
                permit.descendants_expires_boot_ns,
                permit.descendants_artifact_id,
            );
        }
        expired = true;
    }

    // Level 0 is the root cgroup; the walk stops at the caller's own level.
    let mut level: u32 = 0;
    while level < MAX_CGROUP_DEPTH {
        // SAFETY: helper taking a plain integer.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == 0 || ancestor == cgroup_id {
            break;
        }
        key.cgroup_id = ancestor;
        // SAFETY: as above.
        if let Some(permit) = unsafe { maps::PERMITS.get(&key) }.copied() {
            // An ancestor's permit counts only in its descendants slot.
            if permit.descendants_expires_boot_ns > now {
                return Verdict::allowed(
                    reason::PERMIT_INHERITED,
                    ancestor,
                    permit.descendants_expires_boot_ns,
                    permit.descendants_artifact_id,
                );
            }
            if permit.descendants_expires_boot_ns != 0 {
                expired = true;
            }
        }
        level += 1;
    }

    if expired {
        Verdict::refused(reason::EXPIRED)
    // SAFETY: only tests for presence.
    } else if unsafe { maps::DIGESTS.get(digest) }.is_some() {
        Verdict::refused(reason::WRONG_CGROUP)
    } else {
        Verdict::refused(reason::NO_PERMIT)
    }
}

/// Whether `cgroup_id` is, or is below, an enforced cgroup.
#[inline(always)]
fn in_enforced_subtree(cgroup_id: u64) -> bool {
    // SAFETY: presence test only.
    if unsafe { maps::ENFORCED_CGROUPS.get(&cgroup_id) }.is_some() {
        return true;
    }
    let mut level: u32 = 0;
    while level < MAX_CGROUP_DEPTH {
        // SAFETY: helper taking a plain integer.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == 0 || ancestor == cgroup_id {
            return false;
        }
        // SAFETY: presence test only.
        if unsafe { maps::ENFORCED_CGROUPS.get(&ancestor) }.is_some() {
            return true;
        }
        level += 1;
    }
    // Deeper than we walk: treat as enforced (fail closed).
    true
}

/// Sends the decision to the agent. Never blocks: a full ring buffer drops the
/// event and counts the drop.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    bprm: *const c_void,
    cgroup_id: u64,
    mode: u32,
    outcome: u32,
    verdict: &Verdict,
    hash_status: i32,
    flags: u32,
    digest: &Digest,
    parent_permit: &[u8; ARTIFACT_ID_LEN],
) {
    let Some(mut entry) = maps::EVENTS.reserve::<ExecEvent>(0) else {
        maps::count(counter::EVENTS_DROPPED);
        return;
    };
    let event = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `event` points at a reserved ring buffer slot of
    // `size_of::<ExecEvent>()` bytes, exclusively ours until submit.
    unsafe {
        (*event).boot_ns = bpf_ktime_get_boot_ns();
        (*event).cgroup_id = cgroup_id;
        (*event).permit_cgroup_id = verdict.permit_cgroup_id;
        (*event).permit_expires_boot_ns = verdict.expires_boot_ns;
        (*event).pid = pid_tgid as u32;
        (*event).tgid = (pid_tgid >> 32) as u32;
        (*event).ppid = kernel::parent_tgid();
        (*event).uid = uid_gid as u32;
        (*event).gid = (uid_gid >> 32) as u32;
        (*event).decision = outcome;
        (*event).reason = verdict.reason;
        (*event).mode = mode;
        (*event).hash_status = hash_status;
        (*event).flags = flags;
        (*event).digest = *digest;
        (*event).permit_id = verdict.artifact_id;
        (*event).parent_permit_id = *parent_permit;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event).filename[0] = 0;
        kernel::binprm_path(bprm, kernel::BinprmPath::Filename, &mut (*event).filename);
        (*event).interp[0] = 0;
        kernel::binprm_path(bprm, kernel::BinprmPath::Interp, &mut (*event).interp);
    }
    // Allowed execs are the bulk: queue them without waking the agent (it
    // drains the ring on a short timer); refusals wake it at once.
    let wakeup = if outcome == decision::ALLOW {
        u64::from(aya_ebpf::bindings::BPF_RB_NO_WAKEUP)
    } else {
        0
    };
    entry.submit(wakeup);
}
