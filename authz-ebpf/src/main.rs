//! authz kernel programs: a sleepable BPF LSM program on `bprm_check_security`
//! that refuses every exec whose content (SHA-256, computed here in the kernel)
//! has no live permit for the caller's cgroup.
//!
//! Split by concern: `maps` (state shared with the agent), `kernel` (reading kernel
//! structures through offsets taken from the running kernel's BTF), `digest`
//! (the file's SHA-256), `exec` (the decision and its event).
//!
//! Everything is gated on the BPF target so that host-side tooling
//! (`cargo clippy --workspace`, `cargo build --workspace`) sees a stub binary.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The atomic fetch-and-add for event sequence numbers (see `maps::next_seq`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod code;
#[cfg(target_arch = "bpf")]
mod digest;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod guard;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod lineage;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod verdict;

/// `int security_bprm_check(struct linux_binprm *bprm)`.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "bprm_check_security", sleepable)]
pub fn bprm_check_security(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    exec::check(&ctx)
}

/// `int security_file_open(struct file *file)`: opening a file for writing drops
/// its cached digest, so content written through that file is hashed afresh.
/// Never refuses.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "file_open")]
pub fn file_open(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    let file: *const core::ffi::c_void = ctx.arg(0);
    // SAFETY: `file` is the hook's BTF argument.
    let inode = unsafe { kernel::inode_if_writing(file) };
    if !inode.is_null() {
        // SAFETY: `inode` is `file->f_inode`, a BTF pointer.
        let _ = unsafe { maps::DIGEST_CACHE.delete(inode as *mut aya_ebpf::bindings::inode) };
    }
    // Keep what earlier BPF LSM programs decided.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    // SAFETY: `file` is the hook's BTF argument.
    unsafe { code::check_memory_write_open(file) }
}

/// `int security_mmap_file(struct file *file, unsigned long reqprot,
/// unsigned long prot, unsigned long flags)`: a file (a library, the loader,
/// a dlopen) or anonymous memory mapped executable. Sleepable: it hashes.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "mmap_file", sleepable)]
pub fn mmap_file(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    code::check_mmap(&ctx)
}

/// `int security_file_mprotect(struct vm_area_struct *vma, unsigned long
/// reqprot, unsigned long prot)`: execute added to a mapping. Not sleepable
/// on 6.1: decides from the digest cache.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "file_mprotect")]
pub fn file_mprotect(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    code::check_mprotect(&ctx)
}

/// `int security_ptrace_access_check(struct task_struct *child, unsigned int
/// mode)`: an attach lets the tracer write the tracee's code.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    code::check_ptrace(&ctx)
}

/// `int security_inode_setattr(struct dentry *dentry, struct iattr *attr)`
/// (up to 6.2): a size change without a writer (truncate(2) by path) changes
/// content without any open for writing: drop the file's cached digest (and
/// mark it when IMA holds a measurement IMA will not drop). Sleepable, for
/// `bpf_ima_inode_hash`. Never refuses. The agent attaches this one or
/// [`inode_setattr_idmap`], whichever matches the running kernel's hook.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "inode_setattr", sleepable)]
pub fn inode_setattr(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    resized(ctx.arg(0), ctx.arg(1));
    ctx.arg(2)
}

/// `int security_inode_setattr(struct mnt_idmap *idmap, struct dentry *dentry,
/// struct iattr *attr)` (6.3 on): as [`inode_setattr`].
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "inode_setattr", sleepable)]
pub fn inode_setattr_idmap(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    resized(ctx.arg(1), ctx.arg(2));
    ctx.arg(3)
}

#[cfg(target_arch = "bpf")]
#[inline(always)]
fn resized(dentry: *const core::ffi::c_void, attr: *const core::ffi::c_void) {
    // SAFETY: the hook's BTF arguments.
    if let Some(r) = unsafe { kernel::resized(dentry, attr) } {
        // SAFETY: `r.inode` is `dentry->d_inode`, a BTF pointer; sleepable program.
        unsafe { digest::forget_resized(r.inode as *mut aya_ebpf::bindings::inode, r.by_path) };
    }
}

/// `int security_bpf(int cmd, union bpf_attr *attr, unsigned int size)`:
/// lockdown (see `guard`). Sleepable: reads the user's path.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "bpf", sleepable)]
pub fn bpf(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    guard::check_bpf(&ctx)
}

/// `int security_bpf_map(struct bpf_map *map, fmode_t fmode)`: lockdown.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "bpf_map")]
pub fn bpf_map(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    guard::check_bpf_map(&ctx)
}

/// `int security_bpf_prog(struct bpf_prog *prog)`: lockdown.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "bpf_prog")]
pub fn bpf_prog(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    guard::check_bpf_prog(&ctx)
}

/// `int security_inode_permission(struct inode *inode, int mask)`: lockdown
/// (pinned objects opened by any path). Attached only while lockdown is on.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "inode_permission")]
pub fn inode_permission(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    guard::check_inode_permission(&ctx)
}

/// `int security_inode_unlink(struct inode *dir, struct dentry *dentry)`:
/// lockdown (pins).
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    guard::check_unlink(&ctx)
}

/// `int security_inode_rename(struct inode *old_dir, struct dentry
/// *old_dentry, struct inode *new_dir, struct dentry *new_dentry)`: lockdown.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    guard::check_rename(&ctx)
}

/// `int security_inode_rmdir(struct inode *dir, struct dentry *dentry)`:
/// lockdown.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "inode_rmdir")]
pub fn inode_rmdir(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    guard::check_rmdir(&ctx)
}

/// `int security_sb_umount(struct vfsmount *mnt, int flags)`: lockdown.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    guard::check_umount(&ctx)
}

/// `int security_task_alloc(struct task_struct *task, unsigned long clone_flags)`:
/// a new task inherits its parent's lineage label. Never refuses.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    let task: *mut aya_ebpf::bindings::task_struct = ctx.arg(0);
    // SAFETY: `task` is the hook's BTF argument.
    unsafe { lineage::inherit(task) };
    ctx.arg(2)
}

/// `void security_bprm_committed_creds(struct linux_binprm *bprm)`: the exec
/// went through, so the permit it was decided under becomes the task's label.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "bprm_committed_creds")]
pub fn bprm_committed_creds(_ctx: aya_ebpf::programs::LsmContext) -> i32 {
    lineage::commit();
    0
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "authz-ebpf holds BPF programs; authz-agent's build.rs builds them for the BPF target"
    );
    std::process::exit(2);
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects code that could get here.
    loop {}
}

/// LSM programs must declare a GPL-compatible license or the kernel refuses them.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
