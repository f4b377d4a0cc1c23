//! The SHA-256 of the file being executed, computed by the kernel (IMA).
use authz_common::{Digest, DIGEST_LEN, HASH_ALGO_SHA256};
use aya_ebpf::helpers::generated::bpf_ima_file_hash;
use core::ffi::c_void;

/// Why no digest could be had.
#[derive(Clone, Copy)]
pub enum DigestError {
    /// The `linux_binprm::file` offset is unknown or the pointer is null.
    NoFile,
    /// `bpf_ima_file_hash` failed (negative errno) or used another algorithm.
    Hash(i64),
}

/// Computes the SHA-256 of `file` into `out`.
///
/// Only a return of `HASH_ALGO_SHA256` counts: any other algorithm (an IMA policy
/// with another `ima_hash=`) or an error fails closed.
///
/// # Safety
/// `file` must be a BTF-typed `struct file *` the verifier trusts (`bprm->file`).
#[inline(always)]
pub unsafe fn file_sha256(file: *const c_void, out: &mut Digest) -> Result<i64, DigestError> {
    if file.is_null() {
        return Err(DigestError::NoFile);
    }
    // SAFETY: `file` is trusted per the contract; `out` is DIGEST_LEN writable bytes.
    let status = unsafe {
        bpf_ima_file_hash(file as *mut _, out.as_mut_ptr().cast(), DIGEST_LEN as u32)
    };
    if status == HASH_ALGO_SHA256 {
        Ok(status)
    } else {
        Err(DigestError::Hash(status))
    }
}
