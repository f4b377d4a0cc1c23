//! The exec decision: digest, permit lookup, verdict, event, counters.
use authz_common::{
    counter, decision, event_flags, fs_flags, hook, mode, reason, role, sample, scope, Digest,
    ARTIFACT_ID_LEN, DIGEST_LEN,
};
use aya_ebpf::{helpers::generated::bpf_get_current_cgroup_id, programs::LsmContext};
use core::ffi::c_void;

use crate::{
    digest,
    events::{emit, Decided, Paths},
    kernel, maps,
    verdict::{lookup, Verdict},
};

/// `EPERM` from include/uapi/asm-generic/errno-base.h; LSM hooks return `-EPERM`.
pub const EPERM: i32 = 1;
/// The artifact id of "no permit".
const NO_PERMIT_ID: [u8; ARTIFACT_ID_LEN] = [0; ARTIFACT_ID_LEN];

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
            // The new image runs under no permit; under lockdown it may be an
            // agent (which needs its digest, as an in-scope exec would).
            // SAFETY: `bprm` is the hook's argument.
            if unsafe { kernel::is_first_pass(bprm) } {
                let label = if config.lockdown == 1 {
                    // SAFETY: as above.
                    unsafe { undecided_agent_flag(bprm) }
                } else {
                    0
                };
                crate::lineage::set_pending(NO_PERMIT_ID, true, label);
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
                            lookup(&maps::PERMITS, &digest, cgroup_id)
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

    // SAFETY: `bprm` is the hook's argument.
    if unsafe { kernel::is_first_pass(bprm) } {
        let label = if verdict.allowed {
            exec_memory_grant(&digest, cgroup_id, &config) | crate::guard::agent_flag(&digest)
        } else {
            0
        };
        crate::lineage::set_pending(verdict.artifact_id, outcome != decision::DENY, label);
    }
    if outcome == decision::ALLOW && !sampled(config.allowed_sample) {
        return if previous != 0 { previous } else { 0 };
    }
    // Only for the event: an allowed exec the log does not record skips the
    // task-storage lookup (set_pending above changes the pending permit, not
    // the current one this reads).
    let parent_permit = crate::lineage::current_permit();
    emit(
        &Decided {
            hook: hook::EXEC,
            cgroup_id,
            mode: config.mode,
            outcome,
            verdict: &verdict,
            hash_status,
            flags,
            digest: &digest,
            parent_permit: &parent_permit,
        },
        Paths::Bprm(bprm),
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

/// The agent flag for an exec nobody decides (out of scope, mode off): its
/// digest when its content is final and on a trusted filesystem, checked
/// against the agent digests.
///
/// # Safety
/// `bprm` must be the hook's `struct linux_binprm *` argument.
#[inline(always)]
unsafe fn undecided_agent_flag(bprm: *const c_void) -> u32 {
    // SAFETY: per the contract.
    let file = unsafe { kernel::binprm_file(bprm) };
    // SAFETY: `file` is `bprm->file`.
    let Some(facts) = (unsafe { kernel::file_facts(file) }) else {
        return 0;
    };
    let fs = maps::fs_flags(facts.magic);
    if fs & fs_flags::EXEC == 0 || !facts.final_content {
        return 0;
    }
    let cacheable = fs & fs_flags::CACHE != 0 && facts.linked_no_writer;
    let mut digest: Digest = [0; DIGEST_LEN];
    // SAFETY: as above.
    match unsafe { digest::file_sha256_cached(file, &facts, cacheable, &mut digest) } {
        Ok(_) => crate::guard::agent_flag(&digest),
        Err(_) => 0,
    }
}

/// The label flags an allowed exec of `digest` gives its process: executable
/// memory, when a JIT grant covers it here (looked up only when the setting
/// would refuse executable memory at all).
#[inline(always)]
fn exec_memory_grant(digest: &Digest, cgroup_id: u64, config: &authz_common::Config) -> u32 {
    if crate::code::effective(config.mode, config.exec_memory) == mode::OFF {
        return 0;
    }
    if lookup(&maps::JIT, digest, cgroup_id).allowed {
        authz_common::label_flags::EXEC_MEMORY
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
