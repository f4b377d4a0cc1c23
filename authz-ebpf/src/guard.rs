//! Lockdown: only the agent changes what the kernel enforces.
//!
//! While `Config::lockdown` is 1, a task that is not an agent (its image was
//! not exec'd from a binary whose digest is in `authz_agents`) may not:
//! obtain a descriptor to one of authz's maps or programs (`bpf_map`,
//! `bpf_prog`: every way to get one, `BPF_OBJ_GET` on a pin and
//! `*_GET_FD_BY_ID` alike, ends there) or links (`bpf`: `BPF_LINK_GET_FD_BY_ID`;
//! `inode_permission` on a pinned object's inode, which `BPF_OBJ_GET` checks
//! whatever path, bind mount or chroot names it); remove, rename or replace a
//! pin (`inode_unlink`, `inode_rename`, `inode_rmdir` on the pin directories);
//! unmount the bpffs holding them (`sb_umount`); load a program that could
//! override an LSM decision (`bpf`: `BPF_PROG_LOAD` of an LSM or a
//! return-modifying tracing program); or attach to the agent with ptrace
//! (which `/proc/PID/mem` and `pidfd_getfd` also need). An agent itself may
//! map as code only files whose digests are agent digests and never makes
//! memory executable (see `code`), so `LD_PRELOAD` into a genuine agent
//! binary does not lend its standing to other code. Every refusal is an event
//! (`tamper`).
//!
//! `inode_permission` runs on every path lookup on the host, so the agent
//! attaches it only while lockdown is on.
use authz_common::{
    agent_code, bpf_cmd, counter, decision, hook, label_flags, mode, own, reason, Digest, OwnKey,
    BPF_FS_MAGIC, DIGEST_LEN,
};
use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::LsmContext};
use core::ffi::c_void;

use crate::{
    events::{emit, Decided, Paths},
    exec::EPERM,
    kernel, lineage, maps,
    verdict::Verdict,
};

/// Whether the caller is held out: lockdown is on and it is not an agent.
#[inline(always)]
fn locked_out() -> bool {
    maps::config().lockdown == 1 && lineage::current_flags() & label_flags::AGENT == 0
}

#[inline(always)]
fn owned(kind: u32, id: u64) -> bool {
    let key = OwnKey { kind, _pad: 0, id };
    // SAFETY: presence test only.
    unsafe { maps::OWN.get(&key) }.is_some()
}

/// Refuses with `-EPERM` and says so.
#[inline(always)]
fn refuse() -> i32 {
    maps::count(counter::TAMPER_DENIED);
    let none: Digest = [0; DIGEST_LEN];
    let parent = lineage::current_permit();
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() };
    emit(
        &Decided {
            hook: hook::GUARD,
            cgroup_id,
            mode: mode::ENFORCE,
            outcome: decision::DENY,
            verdict: &Verdict::refused(reason::TAMPER),
            hash_status: 0,
            flags: 0,
            digest: &none,
            parent_permit: &parent,
        },
        Paths::None,
    );
    -EPERM
}

#[inline(always)]
fn read<T: Copy>(addr: u64) -> Option<T> {
    // SAFETY: faults are reported, not taken.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// `bpf(cmd, attr, size)`: program loads that could override a decision,
/// link descriptors by id.
#[inline(always)]
pub fn check_bpf(ctx: &LsmContext) -> i32 {
    let cmd: u32 = ctx.arg(0);
    let attr: *const c_void = ctx.arg(1);
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    if !locked_out() || attr.is_null() {
        return 0;
    }
    let attr = attr as u64;
    match cmd {
        bpf_cmd::PROG_LOAD => {
            let prog_type: u32 =
                read(attr + bpf_cmd::OFF_PROG_TYPE).unwrap_or(bpf_cmd::PROG_TYPE_LSM);
            let attach: u32 = read(attr + bpf_cmd::OFF_EXPECTED_ATTACH_TYPE).unwrap_or(0);
            if prog_type == bpf_cmd::PROG_TYPE_LSM
                || (prog_type == bpf_cmd::PROG_TYPE_TRACING
                    && attach == bpf_cmd::ATTACH_MODIFY_RETURN)
            {
                return refuse();
            }
            0
        }
        bpf_cmd::LINK_GET_FD_BY_ID => match read::<u32>(attr + bpf_cmd::OFF_LINK_ID) {
            Some(id) if !owned(own::LINK, u64::from(id)) => 0,
            _ => refuse(),
        },
        _ => 0,
    }
}

/// `bpf_map(map, fmode)`: a descriptor to one of authz's maps.
#[inline(always)]
pub fn check_bpf_map(ctx: &LsmContext) -> i32 {
    let map: *const c_void = ctx.arg(0);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if !locked_out() {
        return 0;
    }
    let o = kernel::offsets();
    if map.is_null() || o.bpf_map_id == 0 {
        return refuse();
    }
    // SAFETY: BTF pointer, offset from BTF.
    let id = unsafe { kernel::member_u32(map, o.bpf_map_id) };
    if owned(own::MAP, u64::from(id)) {
        return refuse();
    }
    0
}

/// `bpf_prog(prog)`: a descriptor to one of authz's programs.
#[inline(always)]
pub fn check_bpf_prog(ctx: &LsmContext) -> i32 {
    let prog: *const c_void = ctx.arg(0);
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    if !locked_out() {
        return 0;
    }
    let o = kernel::offsets();
    if prog.is_null() || o.bpf_prog_aux == 0 || o.bpf_prog_aux_id == 0 {
        return refuse();
    }
    // SAFETY: BTF pointers, offsets from BTF.
    let id = unsafe {
        let aux = kernel::member_ptr(prog, o.bpf_prog_aux);
        if aux.is_null() {
            return refuse();
        }
        kernel::member_u32(aux, o.bpf_prog_aux_id)
    };
    if owned(own::PROG, u64::from(id)) {
        return refuse();
    }
    0
}

/// Whether `dir` (a BTF `struct inode *`) is one of authz's pin directories.
#[inline(always)]
fn pin_dir(dir: *const c_void) -> bool {
    let o = kernel::offsets();
    if dir.is_null() || !o.guard_usable() {
        // Cannot tell: lockdown refuses.
        return true;
    }
    // SAFETY: BTF pointers, offsets from BTF.
    unsafe {
        let sb = kernel::member_ptr(dir, o.inode_sb);
        if sb.is_null() || kernel::member_u64(sb, o.sb_magic) != BPF_FS_MAGIC {
            return false;
        }
        owned(own::PIN_DIR, kernel::member_u64(dir, o.inode_ino))
    }
}

/// `inode_permission(inode, mask)`: a pinned object opened (`BPF_OBJ_GET`
/// checks the pin's inode before it hands out a descriptor). Cheap first:
/// lockdown, then the superblock's magic, then the maps.
#[inline(always)]
pub fn check_inode_permission(ctx: &LsmContext) -> i32 {
    let inode: *const c_void = ctx.arg(0);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if maps::config().lockdown != 1 || inode.is_null() {
        return 0;
    }
    let o = kernel::offsets();
    if !o.guard_usable() {
        return 0;
    }
    // SAFETY: BTF pointers, offsets from BTF.
    let (dev, ino) = unsafe {
        let sb = kernel::member_ptr(inode, o.inode_sb);
        if sb.is_null() || kernel::member_u64(sb, o.sb_magic) != BPF_FS_MAGIC {
            return 0;
        }
        (
            kernel::member_u32(sb, o.sb_dev),
            kernel::member_u64(inode, o.inode_ino),
        )
    };
    if owned(own::PIN_FS, u64::from(dev))
        && owned(own::PIN, ino)
        && lineage::current_flags() & label_flags::AGENT == 0
    {
        return refuse();
    }
    0
}

/// `inode_unlink(dir, dentry)`: a pin removed.
#[inline(always)]
pub fn check_unlink(ctx: &LsmContext) -> i32 {
    let dir: *const c_void = ctx.arg(0);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if locked_out() && pin_dir(dir) {
        return refuse();
    }
    0
}

/// `inode_rename(old_dir, old_dentry, new_dir, new_dentry)`: a pin moved
/// away or replaced.
#[inline(always)]
pub fn check_rename(ctx: &LsmContext) -> i32 {
    let old_dir: *const c_void = ctx.arg(0);
    let new_dir: *const c_void = ctx.arg(2);
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    if locked_out() && (pin_dir(old_dir) || pin_dir(new_dir)) {
        return refuse();
    }
    0
}

/// `inode_rmdir(dir, dentry)`: a pin directory removed.
#[inline(always)]
pub fn check_rmdir(ctx: &LsmContext) -> i32 {
    let dentry: *const c_void = ctx.arg(1);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if !locked_out() {
        return 0;
    }
    let o = kernel::offsets();
    if dentry.is_null() || o.dentry_inode == 0 {
        return refuse();
    }
    // SAFETY: BTF pointer, offset from BTF.
    let inode = unsafe { kernel::member_ptr(dentry, o.dentry_inode) };
    if pin_dir(inode) {
        return refuse();
    }
    0
}

/// `sb_umount(mnt, flags)`: the bpffs holding the pins unmounted.
#[inline(always)]
pub fn check_umount(ctx: &LsmContext) -> i32 {
    let mnt: *const c_void = ctx.arg(0);
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    if !locked_out() {
        return 0;
    }
    let o = kernel::offsets();
    if mnt.is_null() || !o.guard_usable() {
        return refuse();
    }
    // SAFETY: BTF pointers, offsets from BTF.
    let dev = unsafe {
        let sb = kernel::member_ptr(mnt, o.vfsmount_sb);
        if sb.is_null() {
            return refuse();
        }
        kernel::member_u32(sb, o.sb_dev)
    };
    if owned(own::PIN_FS, u64::from(dev)) {
        return refuse();
    }
    0
}

/// `ptrace_access_check(child, mode)` attaching to the agent.
///
/// # Safety
/// `child` must be the hook's BTF `struct task_struct *`.
#[inline(always)]
pub unsafe fn ptrace_of_agent(child: *mut aya_ebpf::bindings::task_struct) -> bool {
    if !locked_out() {
        return false;
    }
    // SAFETY: per the contract.
    let flags = unsafe { lineage::flags_of(child) };
    flags & label_flags::AGENT != 0
}

/// Refuses the ptrace attach already found to target the agent.
#[inline(always)]
pub fn refuse_ptrace() -> i32 {
    refuse()
}

/// Whether the caller is an agent under lockdown: its code is then held to
/// [`agent_file_code`] and [`agent_memory_code`].
#[inline(always)]
pub fn agent_locked() -> bool {
    maps::config().lockdown == 1 && lineage::current_flags() & label_flags::AGENT != 0
}

/// An agent under lockdown maps `file` as code: allowed (`None`: the usual
/// checks follow) only when its content is final and its digest is an agent
/// digest (the binaries and libraries recorded when lockdown began or a
/// signed adoption added them). `may_hash`: the hook may sleep; otherwise
/// only a cached digest counts.
///
/// # Safety
/// `file` must be a BTF `struct file *` (a hook argument or `vma->vm_file`).
#[inline(always)]
pub unsafe fn agent_file_code(file: *const c_void, may_hash: bool) -> Option<i32> {
    if file.is_null() {
        return Some(refuse());
    }
    // SAFETY: per the contract.
    let Some(facts) = (unsafe { kernel::file_facts(file) }) else {
        return Some(refuse());
    };
    if !facts.final_content {
        return Some(refuse());
    }
    let digest = if may_hash {
        let mut out: Digest = [0; DIGEST_LEN];
        let cacheable = maps::fs_flags(facts.magic) & authz_common::fs_flags::CACHE != 0
            && facts.linked_no_writer;
        // SAFETY: per the contract; the caller's hook is sleepable.
        match unsafe { crate::digest::file_sha256_cached(file, &facts, cacheable, &mut out) } {
            Ok(_) => out,
            Err(_) => return Some(refuse()),
        }
    } else {
        // SAFETY: per the contract.
        match unsafe { crate::digest::cached_sha256(&facts) } {
            Some(d) => d,
            None => return Some(refuse()),
        }
    };
    if !agent_code_digest(&digest) {
        return Some(refuse());
    }
    None
}

/// An agent under lockdown never makes memory no file backs executable.
#[inline(always)]
pub fn agent_memory_code() -> i32 {
    refuse()
}

/// The label flag an exec of `digest` gives: [`label_flags::AGENT`] when it
/// is an authorized agent binary.
#[inline(always)]
pub fn agent_flag(digest: &Digest) -> u32 {
    // SAFETY: the value is copied out at once.
    match unsafe { maps::AGENTS.get(digest) } {
        Some(&agent_code::BINARY) => label_flags::AGENT,
        _ => 0,
    }
}

/// Whether `digest` is agent code of either kind.
#[inline(always)]
fn agent_code_digest(digest: &Digest) -> bool {
    // SAFETY: presence test only.
    unsafe { maps::AGENTS.get(digest) }.is_some()
}
