//! Reading kernel structures without baking in the build machine's layout.
//!
//! Rust BPF programs get no CO-RE relocations, so member offsets come from the
//! running kernel's BTF: the agent reads them at load time and writes them into
//! [`OFFSETS`], a read-only global. The kernel freezes that map before
//! verification, so the verifier sees each offset as a constant and still types
//! the result of a load through a BTF pointer (`bprm->file` stays a `struct file *`
//! it trusts for `bpf_ima_file_hash`).
use authz_common::{KernelOffsets, FILENAME_LEN};
use aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes;
use core::ffi::c_void;

/// Filled by the agent from /sys/kernel/btf/vmlinux before load; zero = unknown.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    binprm_file: 0,
    binprm_filename: 0,
    task_real_parent: 0,
    task_tgid: 0,
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
    unsafe { *(base.cast::<u8>().add(offset as usize).cast::<*const c_void>()) }
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

/// Copies `bprm->filename` (the path as passed to execve) into `out`.
///
/// # Safety
/// `bprm` must be the hook's `struct linux_binprm *` argument.
#[inline(always)]
pub unsafe fn binprm_filename(bprm: *const c_void, out: &mut [u8; FILENAME_LEN]) {
    let offset = offsets().binprm_filename;
    if offset == 0 {
        return;
    }
    // SAFETY: `bprm` is the hook's BTF argument and `offset` came from BTF.
    let name = unsafe { member_ptr(bprm, offset) };
    // SAFETY: the helper copies at most `out.len()` bytes and NUL-terminates; a
    // fault leaves `out` as it was (zeroed by the caller).
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name.cast(), out) };
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
