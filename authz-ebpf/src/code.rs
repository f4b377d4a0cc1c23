//! Code execution beyond execve: files mapped executable (libraries, the
//! loader, dlopen, mmap), execute added with mprotect, executable memory no
//! file backs (a JIT, injected code), and writes into process memory from
//! outside (`/proc/PID/mem`, ptrace).
//!
//! A file mapped executable needs a permit for its digest in the caller's
//! cgroup, as an exec does: an exec permit (a program may map itself; the
//! kernel maps an ELF's segments) or a mapping permit (a library). The digest
//! comes from the same content checks and cache as an exec; `mmap_file` may
//! sleep and hashes, `file_mprotect` may not, so it decides from the cache
//! and refuses when the cache has nothing. Memory no file backs is allowed
//! only where the `exec_memory` setting allows it, or the process runs under
//! a permit that grants it.
//!
//! Every allow below has a reason: the global mode or the setting (both
//! written by the agent; unset values mean enforce) is off, the caller is out
//! of scope (its cgroup path read and matched), or a live permit covers a
//! digest of content that can no longer change.
use authz_common::{
    counter, decision, event_flags, fs_flags, label_flags, mode, reason, role, scope, Config,
    Digest, DIGEST_LEN, PROT_EXEC, PTRACE_MODE_ATTACH,
};
use aya_ebpf::{helpers::generated::bpf_get_current_cgroup_id, programs::LsmContext};
use core::ffi::c_void;

use crate::{
    digest,
    events::{emit, Decided, Paths},
    exec::EPERM,
    guard, kernel, lineage, maps,
    verdict::{lookup, Verdict},
};

/// The stricter-of-two combination of the global mode and a setting: the
/// less strict wins (a host in audit mode refuses nothing). Any value the
/// kernel does not know means enforce.
#[inline(always)]
pub fn effective(global: u32, setting: u32) -> u32 {
    let norm = |m: u32| match m {
        mode::OFF | mode::AUDIT => m,
        _ => mode::ENFORCE,
    };
    let (g, s) = (norm(global), norm(setting));
    if g < s {
        g
    } else {
        s
    }
}

/// The configuration and whether the caller is subject to it, or `None`
/// when nothing is to be decided (probation, out of scope).
#[inline(always)]
fn in_scope() -> Option<(Config, u64)> {
    if maps::role() == role::PROBATION {
        return None;
    }
    let config = maps::config();
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if config.selftest_cgroup_id != 0 && config.selftest_cgroup_id == cgroup_id {
        return None;
    }
    if config.scope == scope::SUBTREES && kernel::current_cgroup_enforced() == Some(false) {
        return None;
    }
    Some((config, cgroup_id))
}

/// What a refusal turns into under `m`: refused, reported, or nothing.
#[inline(always)]
fn outcome(m: u32) -> u32 {
    if m == mode::AUDIT {
        decision::AUDIT_DENY
    } else {
        decision::DENY
    }
}

/// Sends the refusal (or, in audit, the would-be refusal); returns what the
/// hook returns.
#[inline(always)]
fn report(
    hook: u32,
    cgroup_id: u64,
    m: u32,
    verdict: &Verdict,
    digest: &Digest,
    flags: u32,
    paths: Paths,
) -> i32 {
    let outcome = outcome(m);
    let parent = lineage::current_permit();
    emit(
        &Decided {
            hook,
            cgroup_id,
            mode: m,
            outcome,
            verdict,
            hash_status: 0,
            flags,
            digest,
            parent_permit: &parent,
        },
        paths,
    );
    if outcome == decision::DENY {
        -EPERM
    } else {
        0
    }
}

/// Memory no file backs is about to become executable (`hook` says how).
#[inline(always)]
fn exec_memory(hook: u32, config: &Config, cgroup_id: u64) -> i32 {
    let m = effective(config.mode, config.exec_memory);
    if m == mode::OFF || lineage::current_flags() & label_flags::EXEC_MEMORY != 0 {
        return 0;
    }
    maps::count(counter::EXEC_MEMORY_DENIED);
    let none: Digest = [0; DIGEST_LEN];
    report(
        hook,
        cgroup_id,
        m,
        &Verdict::refused(reason::EXEC_MEMORY),
        &none,
        0,
        Paths::None,
    )
}

/// A mapping refusal's reason, from the exec lookup's.
#[inline(always)]
const fn library_reason(r: u32) -> u32 {
    match r {
        reason::NO_PERMIT => reason::LIBRARY_NO_PERMIT,
        reason::EXPIRED => reason::LIBRARY_EXPIRED,
        reason::WRONG_CGROUP => reason::LIBRARY_WRONG_CGROUP,
        other => other,
    }
}

/// A permit covering `digest` as a mapping: an exec permit or a mapping one.
#[inline(always)]
fn mapping_verdict(digest: &Digest, cgroup_id: u64) -> Verdict {
    let exec = lookup(&maps::PERMITS, digest, cgroup_id);
    if exec.allowed {
        return exec;
    }
    let map = lookup(&maps::MAPPINGS, digest, cgroup_id);
    if map.allowed {
        return map;
    }
    // The most telling refusal: a permit exists but expired, or is elsewhere.
    let r = if map.reason == reason::EXPIRED || exec.reason == reason::EXPIRED {
        reason::EXPIRED
    } else if map.reason == reason::WRONG_CGROUP || exec.reason == reason::WRONG_CGROUP {
        reason::WRONG_CGROUP
    } else {
        reason::NO_PERMIT
    };
    Verdict::refused(library_reason(r))
}

/// `mmap_file(file, reqprot, prot, flags)`: decides executable mappings.
#[inline(always)]
pub fn check_mmap(ctx: &LsmContext) -> i32 {
    let file: *const c_void = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    if guard::agent_locked() {
        if file.is_null() {
            return guard::agent_memory_code();
        }
        // SAFETY: `file` is the hook's BTF argument; sleepable hook.
        if let Some(refused) = unsafe { guard::agent_file_code(file, true) } {
            return refused;
        }
    }
    let Some((config, cgroup_id)) = in_scope() else {
        return 0;
    };
    if file.is_null() {
        return exec_memory(authz_common::hook::MMAP, &config, cgroup_id);
    }
    let m = effective(config.mode, config.libraries);
    if m == mode::OFF {
        return 0;
    }
    let mut digest: Digest = [0; DIGEST_LEN];
    let mut flags = 0;
    // SAFETY: `file` is the hook's BTF argument.
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
                // SAFETY: `file` as above; sleepable hook.
                match unsafe { digest::file_sha256_cached(file, &facts, cacheable, &mut digest) } {
                    Ok(hashed) => {
                        flags = event_flags::DIGEST_VALID;
                        if hashed.cached {
                            flags |= event_flags::DIGEST_CACHED;
                        }
                        mapping_verdict(&digest, cgroup_id)
                    }
                    Err(digest::DigestError::Stale) => Verdict::refused(reason::DIGEST_STALE),
                    Err(_) => Verdict::refused(reason::DIGEST_FAILED),
                }
            }
        }
    };
    if verdict.allowed {
        maps::count(counter::MAPS_ALLOWED);
        return 0;
    }
    maps::count(counter::MAPS_DENIED);
    if flags & event_flags::DIGEST_VALID == 0 {
        digest = [0; DIGEST_LEN];
    }
    report(
        authz_common::hook::MMAP,
        cgroup_id,
        m,
        &verdict,
        &digest,
        flags,
        Paths::File(file),
    )
}

/// `file_mprotect(vma, reqprot, prot)`: execute added to a mapping. Cannot
/// hash (not sleepable): a file mapping is allowed only from a cached digest.
#[inline(always)]
pub fn check_mprotect(ctx: &LsmContext) -> i32 {
    let vma: *const c_void = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    if guard::agent_locked() {
        // SAFETY: `vma` is the hook's BTF argument.
        match unsafe { kernel::vma(vma) } {
            None => return guard::agent_memory_code(),
            Some(v) if v.exec => {}
            Some(v) if v.file.is_null() || v.written => return guard::agent_memory_code(),
            // SAFETY: `vm_file` is a BTF pointer; not sleepable: cache only.
            Some(v) => {
                if let Some(refused) = unsafe { guard::agent_file_code(v.file, false) } {
                    return refused;
                }
            }
        }
    }
    let Some((config, cgroup_id)) = in_scope() else {
        return 0;
    };
    let hook = authz_common::hook::MPROTECT;
    // SAFETY: `vma` is the hook's BTF argument.
    let Some(v) = (unsafe { kernel::vma(vma) }) else {
        let m = effective(config.mode, config.libraries);
        if m == mode::OFF {
            return 0;
        }
        let none: Digest = [0; DIGEST_LEN];
        return report(
            hook,
            cgroup_id,
            m,
            &Verdict::refused(reason::INTERNAL),
            &none,
            0,
            Paths::None,
        );
    };
    if v.exec {
        // Not adding execute.
        return 0;
    }
    if v.file.is_null() || v.written {
        // Anonymous memory, or a private mapping with pages of its own.
        return exec_memory(hook, &config, cgroup_id);
    }
    let m = effective(config.mode, config.libraries);
    if m == mode::OFF {
        return 0;
    }
    let mut digest: Digest = [0; DIGEST_LEN];
    // SAFETY: `v.file` is `vma->vm_file`, a BTF pointer.
    let verdict = match unsafe { kernel::file_facts(v.file) } {
        None => Verdict::refused(reason::INTERNAL),
        Some(facts) => {
            let fs = maps::fs_flags(facts.magic);
            if fs & fs_flags::EXEC == 0 {
                Verdict::refused(reason::UNTRUSTED_FS)
            } else if !facts.final_content {
                Verdict::refused(reason::MUTABLE_CONTENT)
            } else {
                // SAFETY: as above.
                match unsafe { digest::cached_sha256(&facts) } {
                    Some(d) => {
                        digest = d;
                        mapping_verdict(&digest, cgroup_id)
                    }
                    None => Verdict::refused(reason::UNVERIFIED_MPROTECT),
                }
            }
        }
    };
    if verdict.allowed {
        maps::count(counter::MAPS_ALLOWED);
        return 0;
    }
    maps::count(counter::MAPS_DENIED);
    let flags = if digest == [0; DIGEST_LEN] {
        0
    } else {
        event_flags::DIGEST_VALID | event_flags::DIGEST_CACHED
    };
    report(
        hook,
        cgroup_id,
        m,
        &verdict,
        &digest,
        flags,
        Paths::Name(v.file),
    )
}

/// `/proc/PID/mem` opened for writing: writes into process memory that
/// ignore page protections (code included).
///
/// # Safety
/// `file` must be the `file_open` hook's BTF argument.
#[inline(always)]
pub unsafe fn check_memory_write_open(file: *const c_void) -> i32 {
    // SAFETY: per the contract.
    if unsafe { kernel::inode_if_writing(file) }.is_null() || !unsafe { kernel::is_proc_mem(file) }
    {
        return 0;
    }
    memory_write(Paths::Name(file))
}

/// `ptrace_access_check(child, mode)`: attaching to a process lets the tracer
/// write its code (`PTRACE_POKETEXT`).
#[inline(always)]
pub fn check_ptrace(ctx: &LsmContext) -> i32 {
    let child: *mut aya_ebpf::bindings::task_struct = ctx.arg(0);
    let mode_bits: u32 = ctx.arg(1);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if mode_bits & PTRACE_MODE_ATTACH == 0 {
        return 0;
    }
    // SAFETY: `child` is the hook's BTF argument.
    if unsafe { guard::ptrace_of_agent(child) } {
        return guard::refuse_ptrace();
    }
    memory_write(Paths::None)
}

#[inline(always)]
fn memory_write(paths: Paths) -> i32 {
    let Some((config, cgroup_id)) = in_scope() else {
        return 0;
    };
    let m = effective(config.mode, config.exec_memory);
    if m == mode::OFF || lineage::current_flags() & label_flags::EXEC_MEMORY != 0 {
        return 0;
    }
    maps::count(counter::CODE_WRITES_DENIED);
    let none: Digest = [0; DIGEST_LEN];
    report(
        authz_common::hook::MEMORY_WRITE,
        cgroup_id,
        m,
        &Verdict::refused(reason::CODE_WRITE),
        &none,
        0,
        paths,
    )
}
