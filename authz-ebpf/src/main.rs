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

#[cfg(target_arch = "bpf")]
mod digest;
#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod maps;

/// `int security_bprm_check(struct linux_binprm *bprm)`.
#[cfg(target_arch = "bpf")]
#[aya_ebpf::macros::lsm(hook = "bprm_check_security", sleepable)]
pub fn bprm_check_security(ctx: aya_ebpf::programs::LsmContext) -> i32 {
    exec::check(&ctx)
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("authz-ebpf holds BPF programs; authz-agent's build.rs builds them for the BPF target");
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
