//! Reading kernel structures without baking in the build machine's layout.
//!
//! Rust BPF programs get no CO-RE relocations, so member offsets come from the
//! running kernel's BTF: the agent reads them at load time and writes them into
//! [`OFFSETS`], a read-only global. The kernel freezes that map before
//! verification, so the verifier sees each offset as a constant and still types
//! the result of a load through a BTF pointer (`bprm->file` stays a `struct file *`
//! it trusts for `bpf_ima_file_hash`).
use authz_common::{
    offset_known, scope_flags, seals, KernelOffsets, ScopeKey, ATTR_FILE, ATTR_SIZE, FILENAME_LEN,
    FMODE_WRITE, MAX_CGROUP_DEPTH, PROC_SUPER_MAGIC, SCOPE_NAME_LEN, SCOPE_ROOT, TMPFS_MAGIC,
    VM_EXEC,
};
use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated::bpf_d_path,
};
use core::ffi::c_void;

/// Filled by the agent from /sys/kernel/btf/vmlinux before load; zero = unknown.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    binprm_file: 0,
    binprm_filename: 0,
    binprm_interp: 0,
    task_real_parent: 0,
    task_tgid: 0,
    file_inode: 0,
    file_mode: 0,
    inode_sb: 0,
    inode_nlink: 0,
    inode_size: 0,
    inode_writecount: 0,
    inode_version: 0,
    inode_ctime_sec: 0,
    inode_ctime_nsec: 0,
    sb_magic: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_level: 0,
    cgroup_ancestors: 0,
    cgroup_kn: 0,
    kernfs_node_name: 0,
    dentry_inode: 0,
    iattr_valid: 0,
    shmem_seals_delta: 0,
    known: 0,
    vma_file: 0,
    vma_flags: 0,
    vma_anon_vma: 0,
    file_path: 0,
    file_dentry: 0,
    dentry_name: 0,
    bpf_map_id: 0,
    bpf_prog_aux: 0,
    bpf_prog_aux_id: 0,
    vfsmount_sb: 0,
    sb_dev: 0,
    inode_ino: 0,
};

/// Random id of this loaded copy, set by the agent at load (0: unset).
#[unsafe(no_mangle)]
static INSTANCE: u64 = 0;

/// This copy's instance id (see `authz_common::ExecEvent::instance`).
#[inline(always)]
pub fn instance() -> u64 {
    // SAFETY: a valid, aligned static, read volatile for the same reason as
    // `OFFSETS`.
    unsafe { core::ptr::read_volatile(&INSTANCE) }
}

/// The offsets the agent supplied.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: `OFFSETS` is a valid, aligned static. The read is volatile so the
    // compiler keeps a load from the (loader-filled) read-only map instead of
    // folding in the zeros it was compiled with.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// Loads the pointer member `offset` bytes into the kernel object at `base`.
///
/// This is a direct load, not `bpf_probe_read_kernel`, so that the verifier types
/// the result from BTF.
///
/// # Safety
/// `base` must be a BTF-typed kernel pointer the verifier knows, and `offset` a
/// member offset of that type taken from the running kernel's BTF.
#[inline(always)]
pub unsafe fn member_ptr(base: *const c_void, offset: u32) -> *const c_void {
    // SAFETY: per the contract above; the verifier checks the access against BTF
    // and rejects the program if the offset does not name a pointer member.
    unsafe {
        *(base
            .cast::<u8>()
            .add(offset as usize)
            .cast::<*const c_void>())
    }
}

/// Loads the `u32`/`i32` member `offset` bytes into the kernel object at `base`.
///
/// # Safety
/// As for [`member_ptr`], for a 32-bit integer member.
#[inline(always)]
pub unsafe fn member_u32(base: *const c_void, offset: u32) -> u32 {
    // SAFETY: per the contract above.
    unsafe { *(base.cast::<u8>().add(offset as usize).cast::<u32>()) }
}

/// Loads the `u64` member `offset` bytes into the kernel object at `base`.
///
/// # Safety
/// As for [`member_ptr`], for a 64-bit integer member.
#[inline(always)]
pub unsafe fn member_u64(base: *const c_void, offset: u32) -> u64 {
    // SAFETY: per the contract above.
    unsafe { *(base.cast::<u8>().add(offset as usize).cast::<u64>()) }
}

/// `bprm->file`, or null when the offset is unknown.
///
/// # Safety
/// `bprm` must be the hook's `struct linux_binprm *` argument.
#[inline(always)]
pub unsafe fn binprm_file(bprm: *const c_void) -> *const c_void {
    let offset = offsets().binprm_file;
    if offset == 0 {
        return core::ptr::null();
    }
    // SAFETY: `bprm` is the hook's BTF argument and `offset` came from BTF.
    unsafe { member_ptr(bprm, offset) }
}

/// Which path of `struct linux_binprm` to copy.
#[derive(Clone, Copy)]
pub enum BinprmPath {
    /// `filename`: the path given to execve.
    Filename,
    /// `interp`: the file being checked now.
    Interp,
}

/// Copies a path string of `bprm` into `out`.
///
/// # Safety
/// `bprm` must be the hook's `struct linux_binprm *` argument.
#[inline(always)]
pub unsafe fn binprm_path(bprm: *const c_void, which: BinprmPath, out: &mut [u8; FILENAME_LEN]) {
    let offset = match which {
        BinprmPath::Filename => offsets().binprm_filename,
        BinprmPath::Interp => offsets().binprm_interp,
    };
    if offset == 0 {
        return;
    }
    // SAFETY: `bprm` is the hook's BTF argument and `offset` came from BTF.
    let name = unsafe { member_ptr(bprm, offset) };
    // SAFETY: the helper copies at most `out.len()` bytes and NUL-terminates; a
    // fault leaves `out` as it was (zeroed by the caller).
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name.cast(), out) };
}

/// Whether this check is the exec's first (the file named in execve), not the
/// interpreter pass of a `#!` script: `bprm->interp` still points at
/// `bprm->filename` until binfmt_script replaces it.
///
/// # Safety
/// `bprm` must be the hook's `struct linux_binprm *` argument.
#[inline(always)]
pub unsafe fn is_first_pass(bprm: *const c_void) -> bool {
    let o = offsets();
    if o.binprm_filename == 0 || o.binprm_interp == 0 {
        return true;
    }
    // SAFETY: BTF pointer, offsets from BTF.
    unsafe { member_ptr(bprm, o.binprm_filename) == member_ptr(bprm, o.binprm_interp) }
}

/// tgid of the current task's parent, or 0 when it cannot be read.
#[inline(always)]
pub fn parent_tgid() -> u32 {
    let offsets = offsets();
    if offsets.task_real_parent == 0 || offsets.task_tgid == 0 {
        return 0;
    }
    // SAFETY: returns the current task as a trusted BTF pointer; never null here.
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task_btf() };
    if task.is_null() {
        return 0;
    }
    // SAFETY: `task` is a BTF `task_struct *`, offsets come from that BTF.
    unsafe {
        let parent = member_ptr(task.cast(), offsets.task_real_parent);
        if parent.is_null() {
            return 0;
        }
        member_u32(parent, offsets.task_tgid)
    }
}

/// `I_VERSION_QUERIED_SHIFT` (include/linux/iversion.h): the low bit of
/// `i_version` is a flag, the counter sits above it.
const I_VERSION_QUERIED_SHIFT: u32 = 1;

/// What proves a file unchanged since its digest was cached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InodeStamp {
    pub ctime_sec: u64,
    pub ctime_nsec: u32,
    pub size: u64,
    pub version: u64,
}

/// What the exec check needs to know about the file being executed.
#[derive(Clone, Copy)]
pub struct FileFacts {
    /// `file->f_inode` (a BTF pointer).
    pub inode: *const c_void,
    /// Superblock magic of its filesystem.
    pub magic: u64,
    /// Its content cannot change any more once this check is done: linked and
    /// nobody holds it open for writing, or a memfd sealed against every write.
    pub final_content: bool,
    /// Linked, no writer: its digest may be cached.
    pub linked_no_writer: bool,
    /// The cache stamp, when every stamp offset is known.
    pub stamp: Option<InodeStamp>,
}

/// Reads a `T` at kernel address `addr`; `None` when the read faults.
#[inline(always)]
fn read<T: Copy>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copies from any kernel address and fails
    // cleanly (no fault) when it is not mapped.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The facts about `file`, or `None` when a needed offset is unknown or a
/// read fails (the caller refuses: fail closed).
///
/// # Safety
/// `file` must be a BTF-typed `struct file *` (`bprm->file`).
#[inline(always)]
pub unsafe fn file_facts(file: *const c_void) -> Option<FileFacts> {
    let o = offsets();
    if file.is_null() || !o.content_usable() {
        return None;
    }
    // SAFETY: `file` is a BTF pointer; every offset below came from BTF.
    unsafe {
        let inode = member_ptr(file, o.file_inode);
        if inode.is_null() {
            return None;
        }
        let sb = member_ptr(inode, o.inode_sb);
        if sb.is_null() {
            return None;
        }
        let magic = member_u64(sb, o.sb_magic);
        let linked = member_u32(inode, o.inode_nlink) != 0;
        // i_writecount > 0: open for writing somewhere (negative: denied to
        // writers, as exec does while it runs).
        let writer = (member_u32(inode, o.inode_writecount) as i32) > 0;
        let final_content = if writer {
            false
        } else if linked {
            true
        } else {
            // Unlinked: an O_TMPFILE or deleted file (refused: it can be
            // reopened for writing through /proc), or a memfd, whose own
            // descriptor writes without ever taking write access. A memfd is
            // final only when sealed against writes, shrinking and growth;
            // F_SEAL_WRITE cannot be set while a shared writable mapping
            // exists and stops writes through every descriptor.
            magic == TMPFS_MAGIC && memfd_sealed(inode, &o)
        };
        let stamp = if o.cache_usable() {
            Some(InodeStamp {
                ctime_sec: member_u64(inode, o.inode_ctime_sec),
                ctime_nsec: member_u32(inode, o.inode_ctime_nsec),
                size: member_u64(inode, o.inode_size),
                // Bit 0 is I_VERSION_QUERIED, which IMA sets when it hashes:
                // compare the counter only.
                version: member_u64(inode, o.inode_version) >> I_VERSION_QUERIED_SHIFT,
            })
        } else {
            None
        };
        Some(FileFacts {
            inode,
            magic,
            final_content,
            linked_no_writer: linked && !writer,
            stamp,
        })
    }
}

/// Whether the tmpfs inode at `inode` carries every seal that makes its
/// content final. Reads `SHMEM_I(inode)->seals` (every inode of a tmpfs
/// superblock is embedded in a `struct shmem_inode_info`).
#[inline(always)]
fn memfd_sealed(inode: *const c_void, o: &KernelOffsets) -> bool {
    if o.known & offset_known::SHMEM_SEALS == 0 {
        return false;
    }
    let addr = (inode as u64).wrapping_add(o.shmem_seals_delta as i64 as u64);
    match read::<u32>(addr) {
        Some(s) => s & seals::IMMUTABLE == seals::IMMUTABLE,
        None => false,
    }
}

/// `file->f_inode` when `file` is open for writing, else null.
///
/// # Safety
/// `file` must be a BTF-typed `struct file *`.
#[inline(always)]
pub unsafe fn inode_if_writing(file: *const c_void) -> *const c_void {
    let o = offsets();
    if file.is_null() || o.file_mode == 0 || o.file_inode == 0 {
        return core::ptr::null();
    }
    // SAFETY: BTF pointer, offsets from BTF.
    unsafe {
        if member_u32(file, o.file_mode) & FMODE_WRITE == 0 {
            return core::ptr::null();
        }
        member_ptr(file, o.file_inode)
    }
}

/// A size change seen by `inode_setattr`.
#[derive(Clone, Copy)]
pub struct Resized {
    /// `dentry->d_inode`.
    pub inode: *const c_void,
    /// Through a path (truncate(2)), not an open file.
    pub by_path: bool,
}

/// The inode `attr` resizes, or `None` when it changes no size.
///
/// # Safety
/// `dentry` and `attr` must be the `inode_setattr` hook's BTF arguments.
#[inline(always)]
pub unsafe fn resized(dentry: *const c_void, attr: *const c_void) -> Option<Resized> {
    let o = offsets();
    if dentry.is_null()
        || attr.is_null()
        || o.dentry_inode == 0
        || o.known & offset_known::IATTR_VALID == 0
    {
        return None;
    }
    // SAFETY: BTF pointers, offsets from BTF.
    unsafe {
        let valid = member_u32(attr, o.iattr_valid);
        if valid & ATTR_SIZE == 0 {
            return None;
        }
        let inode = member_ptr(dentry, o.dentry_inode);
        if inode.is_null() {
            return None;
        }
        Some(Resized {
            inode,
            by_path: valid & ATTR_FILE == 0,
        })
    }
}

/// Whether the current task's cgroup *path* is, or is below, an enforced
/// subtree in the scope trie. Reads the path at every call (`task->cgroups->
/// dfl_cgrp->ancestors[level]->kn->name`), so it needs no agent to follow
/// cgroups that are removed and created again. `None` when it cannot tell
/// (an offset unknown, a read failed, deeper than the walk): the caller
/// enforces.
#[inline(always)]
pub fn current_cgroup_enforced() -> Option<bool> {
    let o = offsets();
    if !o.scope_usable() {
        return None;
    }
    // SAFETY: helper without arguments; the current task, never null.
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task_btf() } as u64;
    let css: u64 = read(task + u64::from(o.task_cgroups))?;
    let cgroup: u64 = read(css + u64::from(o.css_set_dfl_cgrp))?;
    let level: i32 = read(cgroup + u64::from(o.cgroup_level))?;
    if level < 0 || level as u32 > MAX_CGROUP_DEPTH {
        return None;
    }
    let mut key = ScopeKey {
        parent: SCOPE_ROOT,
        _reserved: 0,
        name: [0; SCOPE_NAME_LEN],
    };
    // Level 0 is the root; `ancestors[k]` is the ancestor at level k, the
    // cgroup itself at its own level.
    let mut k: u32 = 1;
    while k <= MAX_CGROUP_DEPTH {
        if k > level as u32 {
            return Some(false);
        }
        let slot = cgroup + u64::from(o.cgroup_ancestors) + 8 * u64::from(k);
        let ancestor: u64 = read(slot)?;
        let kn: u64 = read(ancestor + u64::from(o.cgroup_kn))?;
        let name: u64 = read(kn + u64::from(o.kernfs_node_name))?;
        key.name = [0; SCOPE_NAME_LEN];
        // SAFETY: copies at most SCOPE_NAME_LEN bytes, NUL-terminated.
        unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut key.name) }.ok()?;
        // SAFETY: the value is copied out at once.
        match unsafe { crate::maps::SCOPE.get(&key) }.copied() {
            None => return Some(false),
            Some(node) if node.flags & scope_flags::ENFORCED != 0 => return Some(true),
            Some(node) => key.parent = node.token,
        }
        k += 1;
    }
    None
}

/// The full path of `file` into `out` (NUL-terminated; empty when unknown).
///
/// # Safety
/// `file` must be a BTF-typed `struct file *`, in a sleepable LSM hook
/// (where `bpf_d_path` is allowed).
#[inline(always)]
pub unsafe fn file_path(file: *const c_void, out: &mut [u8; FILENAME_LEN]) {
    let o = offsets();
    if file.is_null() || o.file_path == 0 {
        return;
    }
    // SAFETY: `&file->f_path` is a BTF `struct path *` (offset from BTF);
    // the helper writes at most `out.len()` bytes, NUL-terminated.
    unsafe {
        let path = file.cast::<u8>().add(o.file_path as usize) as *mut aya_ebpf::bindings::path;
        let n = bpf_d_path(path, out.as_mut_ptr().cast(), FILENAME_LEN as u32);
        if n < 0 {
            out[0] = 0;
        }
    }
}

/// The name (last component) of `file` into `out`.
///
/// # Safety
/// `file` must be a BTF-typed `struct file *`.
#[inline(always)]
pub unsafe fn file_name(file: *const c_void, out: &mut [u8; FILENAME_LEN]) {
    let o = offsets();
    if file.is_null() || o.file_dentry == 0 || o.dentry_name == 0 {
        return;
    }
    let Some(dentry) = read::<u64>(file as u64 + u64::from(o.file_dentry)) else {
        return;
    };
    let Some(name) = read::<u64>(dentry + u64::from(o.dentry_name)) else {
        return;
    };
    // SAFETY: copies at most `out.len()` bytes, NUL-terminated.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, out) };
}

/// Whether `file` is a procfs file named `mem` (`/proc/PID/mem`).
///
/// # Safety
/// `file` must be a BTF-typed `struct file *`.
#[inline(always)]
pub unsafe fn is_proc_mem(file: *const c_void) -> bool {
    let o = offsets();
    if file.is_null() || o.file_inode == 0 || o.inode_sb == 0 || o.sb_magic == 0 {
        return false;
    }
    // SAFETY: BTF pointer, offsets from BTF.
    let magic = unsafe {
        let inode = member_ptr(file, o.file_inode);
        if inode.is_null() {
            return false;
        }
        let sb = member_ptr(inode, o.inode_sb);
        if sb.is_null() {
            return false;
        }
        member_u64(sb, o.sb_magic)
    };
    if magic != PROC_SUPER_MAGIC {
        return false;
    }
    let mut name = [0u8; FILENAME_LEN];
    // SAFETY: as above.
    unsafe { file_name(file, &mut name) };
    name[0] == b'm' && name[1] == b'e' && name[2] == b'm' && name[3] == 0
}

/// What the mapping checks need to know about a `vm_area_struct`.
#[derive(Clone, Copy)]
pub struct Vma {
    /// `vma->vm_file` (null: anonymous).
    pub file: *const c_void,
    /// Already executable.
    pub exec: bool,
    /// Has pages of its own (a private mapping that was written to).
    pub written: bool,
}

/// The facts of `vma`, or `None` when an offset is unknown.
///
/// # Safety
/// `vma` must be a BTF-typed `struct vm_area_struct *`.
#[inline(always)]
pub unsafe fn vma(vma: *const c_void) -> Option<Vma> {
    let o = offsets();
    if vma.is_null() || !o.mapping_usable() {
        return None;
    }
    // SAFETY: BTF pointer, offsets from BTF.
    unsafe {
        Some(Vma {
            file: member_ptr(vma, o.vma_file),
            exec: member_u64(vma, o.vma_flags) & VM_EXEC != 0,
            written: !member_ptr(vma, o.vma_anon_vma).is_null(),
        })
    }
}
