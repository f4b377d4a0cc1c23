//! Lockdown: only the agent changes what the kernel enforces.
//!
//! While `Config::lockdown` is 1, a task that is not an agent (its image was
//! not exec'd from a binary whose digest is in `authz_agents`) may not:
//! obtain a descriptor to one of authz's maps or programs (`bpf_map`,
//! `bpf_prog`: every way to get one, `BPF_OBJ_GET` on a pin and
//! `*_GET_FD_BY_ID` alike, ends there) or links (`bpf`: `BPF_LINK_GET_FD_BY_ID`,
//! and `BPF_OBJ_GET` below the pin directory); remove, rename or replace a pin
//! (`inode_unlink`, `inode_rename`, `inode_rmdir` on the pin directories);
//! unmount the bpffs holding them (`sb_umount`); load a program that could
//! override an LSM decision (`bpf`: `BPF_PROG_LOAD` of an LSM or a
//! return-modifying tracing program); or attach to the agent with ptrace
//! (which `/proc/PID/mem` also needs). Every refusal is an event (`tamper`).
use authz_common::{
    bpf_cmd, counter, decision, hook, label_flags, mode, own, reason, Digest, OwnKey, BPF_FS_MAGIC,
    DIGEST_LEN, PIN_PATH_LEN,
};
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user_str_bytes},
    programs::LsmContext,
};
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
/// link descriptors by id, pins obtained by path.
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
        bpf_cmd::OBJ_GET => {
            let Some(pathname) = read::<u64>(attr + bpf_cmd::OFF_PATHNAME) else {
                return refuse();
            };
            let mut path = [0u8; PIN_PATH_LEN];
            // SAFETY: copies at most PIN_PATH_LEN bytes from user memory,
            // NUL-terminated; sleepable hook.
            if unsafe { bpf_probe_read_user_str_bytes(pathname as *const u8, &mut path) }.is_err() {
                return refuse();
            }
            // A relative path cannot be placed: refused, like a path below
            // the pin directory.
            if path[0] != b'/' || below_pin_dir(&path) {
                return refuse();
            }
            0
        }
        _ => 0,
    }
}

/// Whether `path` starts with the pin directory.
#[inline(always)]
fn below_pin_dir(path: &[u8; PIN_PATH_LEN]) -> bool {
    let Some(guard) = maps::GUARD.get(0) else {
        return true;
    };
    let dir = &guard.pin_dir;
    if dir[0] == 0 {
        return false;
    }
    let mut i = 0;
    while i < PIN_PATH_LEN {
        if dir[i] == 0 {
            // The whole directory matched: below it when the path goes on
            // with `/`, or is the directory itself.
            return path[i] == b'/' || path[i] == 0;
        }
        if dir[i] != path[i] {
            return false;
        }
        i += 1;
    }
    true
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

/// The label flag an exec of `digest` gives: [`label_flags::AGENT`] when it
/// is an authorized agent binary.
#[inline(always)]
pub fn agent_flag(digest: &Digest) -> u32 {
    // SAFETY: presence test only.
    if unsafe { maps::AGENTS.get(digest) }.is_some() {
        label_flags::AGENT
    } else {
        0
    }
}
