//! The SHA-256 of the file being executed, computed by the kernel (IMA).
use authz_common::{counter, CacheEntry, Digest, DIGEST_LEN, HASH_ALGO_SHA256};
use aya_ebpf::{bindings::inode, helpers::generated::bpf_ima_file_hash};
use core::ffi::c_void;

use crate::{kernel, maps};

/// Why no digest could be had.
#[derive(Clone, Copy)]
pub enum DigestError {
    /// The `linux_binprm::file` offset is unknown or the pointer is null.
    NoFile,
    /// `bpf_ima_file_hash` failed (negative errno) or used another algorithm.
    Hash(i64),
}

/// A digest and where it came from.
#[derive(Clone, Copy)]
pub struct Hashed {
    /// The hash algorithm `bpf_ima_file_hash` reported (always SHA-256 here).
    pub status: i64,
    /// Taken from the per-inode cache rather than computed now.
    pub cached: bool,
}

/// The SHA-256 of `file` into `out`, from the per-inode cache when the inode
/// provably did not change since it was hashed, else computed by IMA (and
/// cached when the file qualifies, see [`kernel::cache_candidate`]).
///
/// Cache entries are never updated in place: a stale entry is deleted and a new
/// one created whole (the kernel copies the value in under its lock), so two
/// racing execs cannot leave a digest paired with another content's stamp. The
/// stamp is read *before* hashing, so a change during hashing only causes a
/// miss later.
///
/// # Safety
/// `file` must be a BTF-typed `struct file *` the verifier trusts (`bprm->file`).
#[inline(always)]
pub unsafe fn file_sha256_cached(
    file: *const c_void,
    out: &mut Digest,
) -> Result<Hashed, DigestError> {
    if file.is_null() {
        return Err(DigestError::NoFile);
    }
    // SAFETY: `file` is `bprm->file` per the contract.
    let candidate = unsafe { kernel::cache_candidate(file) };
    if let Some((inode, stamp)) = candidate {
        // SAFETY: `inode` is a BTF `struct inode *` loaded from `file`.
        let entry = unsafe { maps::DIGEST_CACHE.get_ptr_mut(inode as *mut inode) };
        if !entry.is_null() {
            // SAFETY: non-null pointer to a live storage value; entries are never
            // written after creation, so this copy is consistent.
            let e: CacheEntry = unsafe { *entry };
            if e.valid == 1
                && e.ctime_sec == stamp.ctime_sec
                && e.ctime_nsec == stamp.ctime_nsec
                && e.size == stamp.size
                && e.version == stamp.version
            {
                *out = e.digest;
                maps::count(counter::CACHE_HITS);
                return Ok(Hashed {
                    status: HASH_ALGO_SHA256,
                    cached: true,
                });
            }
            // SAFETY: as above.
            let _ = unsafe { maps::DIGEST_CACHE.delete(inode as *mut inode) };
        }
        maps::count(counter::CACHE_MISSES);
    }
    // SAFETY: as for `file_sha256`.
    let status = unsafe { file_sha256(file, out) }?;
    if let Some((inode, stamp)) = candidate {
        let mut fresh = CacheEntry {
            digest: *out,
            ctime_sec: stamp.ctime_sec,
            size: stamp.size,
            version: stamp.version,
            ctime_nsec: stamp.ctime_nsec,
            valid: 1,
        };
        // SAFETY: BTF inode pointer; `fresh` initialises the new entry. If another
        // exec created one first, that one stays (it is equally consistent).
        let _ = unsafe {
            maps::DIGEST_CACHE.get_or_insert_ptr_mut(inode as *mut inode, Some(&mut fresh))
        };
    }
    Ok(Hashed {
        status,
        cached: false,
    })
}

/// Computes the SHA-256 of `file` into `out` with IMA.
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
    let status =
        unsafe { bpf_ima_file_hash(file as *mut _, out.as_mut_ptr().cast(), DIGEST_LEN as u32) };
    if status == HASH_ALGO_SHA256 {
        Ok(status)
    } else {
        Err(DigestError::Hash(status))
    }
}
