//! The SHA-256 of the file being executed, computed by the kernel (IMA), and
//! the per-inode cache that spares hashing it again.
//!
//! The cache rests on one invariant, enforced rather than assumed: **a cached
//! digest never outlives a change of the file's content.**
//! - Entries are made only for files with no writer (`i_writecount <= 0`),
//!   linked, on filesystems flagged `CACHE` (each proven by a VM test).
//! - Every way to change a linked file's content needs either an open for
//!   writing (write, mmap writes, fallocate, copy_file_range/clone into it,
//!   O_TRUNC, ftruncate) or a size change by path (truncate(2)): the
//!   `file_open` and `inode_setattr` programs drop the entry on both.
//! - A writer cannot appear while an exec hashes (exec denies write access to
//!   the file it runs), so no entry is made from content that is changing.
//! The inode's change time, size and i_version are still compared, as a second
//! line, but nothing depends on a filesystem moving them.
use authz_common::{cache_flags, counter, CacheEntry, Digest, DIGEST_LEN, HASH_ALGO_SHA256};
use aya_ebpf::{
    bindings::inode,
    helpers::generated::{bpf_ima_file_hash, bpf_ima_inode_hash},
};
use core::ffi::c_void;

use crate::{kernel::FileFacts, maps};

/// Why no digest could be had.
#[derive(Clone, Copy)]
pub enum DigestError {
    /// The `linux_binprm::file` offset is unknown or the pointer is null.
    NoFile,
    /// `bpf_ima_file_hash` failed (negative errno) or used another algorithm.
    Hash(i64),
    /// The file's size changed by path while IMA held a measurement of it,
    /// and IMA still answers with that measurement.
    Stale,
}

/// A digest and where it came from.
#[derive(Clone, Copy)]
pub struct Hashed {
    /// The hash algorithm `bpf_ima_file_hash` reported (always SHA-256 here).
    pub status: i64,
    /// Taken from the per-inode cache rather than computed now.
    pub cached: bool,
}

/// The SHA-256 of `file` into `out`: from the per-inode cache when `cacheable`
/// and the entry's stamp still matches, else computed by IMA (and cached when
/// `cacheable`).
///
/// Cache entries are never updated in place: a stale entry is deleted and a new
/// one created whole (the kernel copies the value in under its lock), so two
/// racing execs cannot leave a digest paired with another content's stamp. The
/// stamp is read *before* hashing, so a change during hashing only causes a
/// miss later.
///
/// # Safety
/// `file` must be a BTF-typed `struct file *` the verifier trusts (`bprm->file`)
/// and `facts` its facts.
#[inline(always)]
pub unsafe fn file_sha256_cached(
    file: *const c_void,
    facts: &FileFacts,
    cacheable: bool,
    out: &mut Digest,
) -> Result<Hashed, DigestError> {
    if file.is_null() {
        return Err(DigestError::NoFile);
    }
    let node = facts.inode as *mut inode;
    let stamp = if cacheable { facts.stamp } else { None };
    // The measurement IMA held when the file was resized by path, if any.
    let mut stale: Option<Digest> = None;
    // SAFETY: `node` is a BTF `struct inode *` loaded from `file`.
    let entry = unsafe { maps::DIGEST_CACHE.get_ptr_mut(node) };
    if !entry.is_null() {
        // SAFETY: non-null pointer to a live storage value; entries are never
        // written after creation, so this copy is consistent.
        let e: CacheEntry = unsafe { *entry };
        if let Some(s) = stamp {
            if e.flags == cache_flags::DIGEST
                && e.ctime_sec == s.ctime_sec
                && e.ctime_nsec == s.ctime_nsec
                && e.size == s.size
                && e.version == s.version
            {
                *out = e.digest;
                maps::count(counter::CACHE_HITS);
                return Ok(Hashed {
                    status: HASH_ALGO_SHA256,
                    cached: true,
                });
            }
        }
        if e.flags & cache_flags::IMA_STALE != 0 {
            stale = Some(e.digest);
        } else {
            // SAFETY: as above.
            let _ = unsafe { maps::DIGEST_CACHE.delete(node) };
        }
    }
    if stamp.is_some() {
        maps::count(counter::CACHE_MISSES);
    }
    // SAFETY: as for `file_sha256`.
    let status = unsafe { file_sha256(file, out) }?;
    if let Some(old) = stale {
        // IMA answers from its cache while it holds a measurement: getting
        // exactly the value it held at the resize means that is (or may be)
        // what it answered with. Refuse, and keep the marker. Content that
        // really is the same again is refused too (fail closed) until a
        // writer rewrites it, which makes IMA measure afresh.
        if *out == old {
            *out = [0; DIGEST_LEN];
            return Err(DigestError::Stale);
        }
        // SAFETY: as above.
        let _ = unsafe { maps::DIGEST_CACHE.delete(node) };
    }
    if let Some(s) = stamp {
        let mut fresh = CacheEntry {
            digest: *out,
            ctime_sec: s.ctime_sec,
            size: s.size,
            version: s.version,
            ctime_nsec: s.ctime_nsec,
            flags: cache_flags::DIGEST,
        };
        // SAFETY: BTF inode pointer; `fresh` initialises the new entry. If another
        // exec created one first, that one stays (it is equally consistent).
        let _ = unsafe { maps::DIGEST_CACHE.get_or_insert_ptr_mut(node, Some(&mut fresh)) };
    }
    Ok(Hashed {
        status,
        cached: false,
    })
}

/// The cached digest of the file `facts` describe, when the cache may be
/// used for it and its entry's stamp still matches (no hashing: for hooks
/// that cannot sleep).
///
/// # Safety
/// `facts.inode` must be a BTF `struct inode *`.
#[inline(always)]
pub unsafe fn cached_sha256(facts: &FileFacts) -> Option<Digest> {
    let fs = maps::fs_flags(facts.magic);
    if fs & authz_common::fs_flags::CACHE == 0 || !facts.linked_no_writer {
        return None;
    }
    let s = facts.stamp?;
    // SAFETY: per the contract.
    let entry = unsafe { maps::DIGEST_CACHE.get_ptr_mut(facts.inode as *mut inode) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null pointer to a live storage value, never written after
    // creation.
    let e: CacheEntry = unsafe { *entry };
    (e.flags == cache_flags::DIGEST
        && e.ctime_sec == s.ctime_sec
        && e.ctime_nsec == s.ctime_nsec
        && e.size == s.size
        && e.version == s.version)
        .then_some(e.digest)
}

/// Forgets what is cached about `node` after its size changed. When the
/// change came by path (no open file: IMA forgets a measurement only when a
/// writer closes the file) and IMA holds a measurement, leaves a marker with
/// that measurement, so that no exec trusts it.
///
/// # Safety
/// `node` must be a BTF-typed `struct inode *` (the `inode_setattr` hook's
/// `dentry->d_inode`), in a sleepable program.
#[inline(always)]
pub unsafe fn forget_resized(node: *mut inode, by_path: bool) {
    // SAFETY: per the contract.
    let _ = unsafe { maps::DIGEST_CACHE.delete(node) };
    if !by_path {
        return;
    }
    let mut marker = CacheEntry {
        flags: cache_flags::IMA_STALE,
        ..CacheEntry::default()
    };
    // SAFETY: BTF inode pointer; `marker.digest` is DIGEST_LEN writable bytes.
    let ima =
        unsafe { bpf_ima_inode_hash(node, marker.digest.as_mut_ptr().cast(), DIGEST_LEN as u32) };
    if ima == HASH_ALGO_SHA256 {
        // SAFETY: as above; `marker` initialises the new entry.
        let _ = unsafe { maps::DIGEST_CACHE.get_or_insert_ptr_mut(node, Some(&mut marker)) };
    }
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
