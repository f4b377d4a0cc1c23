//! Reading kernel structures without baking in the build machine's layout.
//!
//! Rust BPF programs get no CO-RE relocations, so member offsets come from the
//! running kernel's BTF: the agent reads them at load time and writes them into
//! [`OFFSETS`], a read-only global. The kernel freezes that map before
//! verification, so the verifier sees each offset as a constant and still types
//! the result of a load through a BTF pointer (`bprm->file` stays a `struct file *`
//! it trusts for `bpf_ima_file_hash`).
use authz_common::{KernelOffsets, CACHEABLE_FS_MAGIC, FILENAME_LEN, FMODE_WRITE};
use aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes;
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
};

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

/// The inode of `file` and its stamp, when its digest may be cached: every
/// offset known, a filesystem on the local allowlist, still linked (not a memfd
/// or an unlinked/O_TMPFILE file), and nobody holds it open for writing.
///
/// # Safety
/// `file` must be a BTF-typed `struct file *` (`bprm->file`).
#[inline(always)]
pub unsafe fn cache_candidate(file: *const c_void) -> Option<(*const c_void, InodeStamp)> {
    let o = offsets();
    if file.is_null() || !o.cache_usable() {
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
        let mut local = false;
        let mut i = 0;
        while i < CACHEABLE_FS_MAGIC.len() {
            if CACHEABLE_FS_MAGIC[i] == magic {
                local = true;
            }
            i += 1;
        }
        if !local || member_u32(inode, o.inode_nlink) == 0 {
            return None;
        }
        // i_writecount > 0: open for writing somewhere (negative: denied to writers).
        if (member_u32(inode, o.inode_writecount) as i32) > 0 {
            return None;
        }
        let stamp = InodeStamp {
            ctime_sec: member_u64(inode, o.inode_ctime_sec),
            ctime_nsec: member_u32(inode, o.inode_ctime_nsec),
            size: member_u64(inode, o.inode_size),
            // Bit 0 is I_VERSION_QUERIED, which IMA sets when it hashes: compare
            // the counter only.
            version: member_u64(inode, o.inode_version) >> I_VERSION_QUERIED_SHIFT,
        };
        Some((inode, stamp))
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
