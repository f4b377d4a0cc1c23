//! The exec decision: digest, permit lookup, verdict, event, counters.
use authz_common::{
    counter, decision, event_flags, fs_flags, mode, reason, role, sample, scope, Digest, ExecEvent,
    PermitKey, ARTIFACT_ID_LEN, DIGEST_LEN, MAX_CGROUP_DEPTH,
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
/// The artifact id of "no permit".
const NO_PERMIT_ID: [u8; ARTIFACT_ID_LEN] = [0; ARTIFACT_ID_LEN];

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
///
/// Every allow below has a reason it cannot be reached by mistake:
/// - an earlier LSM's refusal is kept, never overridden;
/// - probation: this copy was loaded next to an attached copy that decides,
///   and only the agent, before its self-test, sets it (a map nobody wrote
///   reads as active);
/// - mode `off`: only an explicit value written by the agent (0, unset, means
///   enforce);
/// - out of scope: only when the kernel read the caller's cgroup path and the
///   scope trie has no enforced prefix of it (any failure to read counts as
///   in scope);
/// - a permit: a live (digest, cgroup) entry, where the digest is of content
///   that can no longer change, on a filesystem trusted for exec.
#[inline(always)]
pub fn check(ctx: &LsmContext) -> i32 {
    let bprm: *const c_void = ctx.arg(0);
    // The hook's extra argument: what earlier BPF LSM programs on this hook returned.
    let previous: i32 = ctx.arg(1);

    let config = maps::config();
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let selftest = config.selftest_cgroup_id != 0 && config.selftest_cgroup_id == cgroup_id;

    // The self-test's probe is decided by every copy (and always refused), so
    // that a new copy on probation proves itself even behind an older one.
    if !selftest {
        if previous != 0 {
            return previous;
        }
        if maps::role() == role::PROBATION {
            return 0;
        }
        let undecided = config.mode == mode::OFF
            || (config.scope == scope::SUBTREES
                && kernel::current_cgroup_enforced() == Some(false));
        if undecided {
            if config.mode != mode::OFF {
                maps::count(counter::OUT_OF_SCOPE);
            }
            // The new image runs under no permit.
            // SAFETY: `bprm` is the hook's argument.
            if unsafe { kernel::is_first_pass(bprm) } {
                crate::lineage::set_pending(NO_PERMIT_ID, true);
            }
            return 0;
        }
    }

    let mut digest: Digest = [0; DIGEST_LEN];
    let mut hash_status: i32 = 0;
    let mut flags: u32 = 0;
    // SAFETY: `bprm` is the hook's `struct linux_binprm *`.
    let file = unsafe { kernel::binprm_file(bprm) };
    // SAFETY: `file` is `bprm->file`, loaded directly so it keeps its BTF type.
    let verdict = match unsafe { kernel::file_facts(file) } {
        None => Verdict::refused(reason::INTERNAL),
        Some(facts) => {
            let fs = maps::fs_flags(facts.magic);
            if fs & fs_flags::EXEC == 0 {
                Verdict::refused(reason::UNTRUSTED_FS)
            } else if !facts.final_content {
                Verdict::refused(reason::MUTABLE_CONTENT)
            } else {
                let cacheable = fs & fs_flags::CACHE != 0 && facts.linked_no_writer;
                // SAFETY: `file` as above; `facts` are its facts.
                match unsafe { digest::file_sha256_cached(file, &facts, cacheable, &mut digest) } {
                    Ok(hashed) => {
                        hash_status = hashed.status as i32;
                        flags = event_flags::DIGEST_VALID;
                        if hashed.cached {
                            flags |= event_flags::DIGEST_CACHED;
                        }
                        if selftest {
                            Verdict::refused(reason::SELFTEST)
                        } else {
                            lookup(&digest, cgroup_id)
                        }
                    }
                    Err(digest::DigestError::NoFile) => Verdict::refused(reason::INTERNAL),
                    Err(digest::DigestError::Hash(status)) => {
                        maps::count(counter::DIGEST_ERRORS);
                        hash_status = status as i32;
                        Verdict::refused(reason::DIGEST_FAILED)
                    }
                    Err(digest::DigestError::Stale) => Verdict::refused(reason::DIGEST_STALE),
                }
            }
        }
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
            reason::MUTABLE_CONTENT => counter::DENIED_MUTABLE,
            reason::UNTRUSTED_FS => counter::DENIED_UNTRUSTED_FS,
            reason::DIGEST_STALE => counter::DENIED_DIGEST_STALE,
            _ => counter::DENIED_INTERNAL,
        });
        decision::DENY
    };

    let parent_permit = crate::lineage::current_permit();
    // SAFETY: `bprm` is the hook's argument.
    if unsafe { kernel::is_first_pass(bprm) } {
        crate::lineage::set_pending(verdict.artifact_id, outcome != decision::DENY);
    }
    if outcome == decision::ALLOW && !sampled(config.allowed_sample) {
        return if previous != 0 { previous } else { 0 };
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
    } else if previous != 0 {
        // The self-test's probe after an earlier refusal: keep it.
        previous
    } else {
        0
    }
}

/// Whether this allowed exec sends an event: every one, none, or one in N
/// (by this CPU's count of allowed execs, just incremented).
#[inline(always)]
fn sampled(every: u32) -> bool {
    match every {
        0 | sample::ALL => true,
        sample::NONE => false,
        n => match maps::COUNTERS.get(counter::ALLOWED) {
            Some(count) => *count % u64::from(n) == 1,
            None => true,
        },
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
        (*event).seq = maps::next_seq();
        (*event).instance = kernel::instance();
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
