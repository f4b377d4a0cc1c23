//! Filling and reading a hash map with many entries per bpf(2) call
//! (`BPF_MAP_UPDATE_BATCH`, `BPF_MAP_LOOKUP_BATCH`, Linux 5.6+), which aya
//! 0.14 does not expose: a start with 100,000 permits would otherwise cost a
//! call per row to write them, and every integrity check two calls per row to
//! read them. A kernel or map type without batch operations gets one call
//! per entry instead.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{HashMap, IterableMap as _, MapData, MapError},
    sys::SyscallError,
    Pod,
};

/// `BPF_MAP_LOOKUP_BATCH` (`enum bpf_cmd` in the kernel's uapi).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_UPDATE_BATCH`.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// `BPF_ANY`: create or replace.
const BPF_ANY: u64 = 0;
/// Most entries handed to the kernel in one call (bounds the kernel's
/// temporary copy; a call per this many rows is noise).
const MAX_PER_CALL: usize = 16_384;
/// The kernel's `ENOTSUPP` (not in libc: it never reaches user space by
/// name, but bpf(2) returns it for map types without batch operations).
const ENOTSUPP: i32 = 524;

/// `union bpf_attr`'s `batch` member, as the kernel lays it out.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Whether `e` says this kernel or map cannot do batch updates at all.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) | Some(ENOTSUPP)
    )
}

/// Calls bpf(2) with `cmd` and `attr`.
///
/// # Safety
/// Every pointer in `attr` must be valid for the kernel to read or write
/// (as `cmd` does) `attr.count` elements of the map's key and value sizes
/// (or, for the batch tokens, a `u64`) for the duration of the call.
unsafe fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: the caller's contract; `attr` is a valid, initialised
    // `bpf_attr.batch` (the kernel zero-fills the rest of the union for the
    // size given).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn map_fd(map: &MapData) -> io::Result<u32> {
    u32::try_from(map.fd().as_fd().as_raw_fd())
        .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
}

/// One `BPF_MAP_UPDATE_BATCH` call for `keys[i] -> values[i]`.
fn update_batch_call<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> io::Result<()> {
    debug_assert_eq!(keys.len(), values.len());
    let count = u32::try_from(keys.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: map_fd(map)?,
        elem_flags: BPF_ANY,
        ..BatchAttr::default()
    };
    // SAFETY: `keys` and `values` point to `count` live `Pod` (plain,
    // repr(C)) elements of the map's key and value types, which the kernel
    // only reads during the call; the fd is the map's, borrowed from `map`.
    unsafe { bpf_batch(BPF_MAP_UPDATE_BATCH, &mut attr) }
}

/// Every entry of `map`, read with `BPF_MAP_LOOKUP_BATCH` calls; `None`
/// when this kernel or map cannot (the caller reads entry by entry).
fn lookup_all<K: Pod, V: Pod>(map: &MapData) -> io::Result<Option<Vec<(K, V)>>> {
    let fd = map_fd(map)?;
    let mut out = Vec::new();
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut keys: Vec<K> = Vec::with_capacity(MAX_PER_CALL);
        let mut values: Vec<V> = Vec::with_capacity(MAX_PER_CALL);
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: MAX_PER_CALL as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` have room for `count` elements of the
        // map's key and value types, which the kernel writes; the tokens are
        // live `u64`s (a hash map's token is a `u32` bucket index).
        let result = unsafe { bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let filled = (attr.count as usize).min(MAX_PER_CALL);
        let done = match result {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) if unsupported(&e) || e.raw_os_error() == Some(libc::ENOSPC) => return Ok(None),
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel wrote `filled` (its updated `count`, at most
        // what we offered) whole elements to each buffer; `Pod` types are
        // valid for any bytes.
        unsafe {
            keys.set_len(filled);
            values.set_len(filled);
        }
        out.extend(keys.into_iter().zip(values));
        if done {
            return Ok(Some(out));
        }
        token_in = token_out;
        first = false;
    }
}

/// Every entry of `map`: in a few batch calls where the kernel can, else
/// entry by entry (two calls each). Entries that vanish while it is read are
/// skipped, as [`HashMap::iter`] does.
pub fn entries<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> Vec<(K, V)> {
    match lookup_all(map.map()) {
        Ok(Some(all)) => all,
        Ok(None) => map.iter().filter_map(Result::ok).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "batch map read failed; reading entry by entry");
            map.iter().filter_map(Result::ok).collect()
        }
    }
}

/// Creates or replaces `keys[i] -> values[i]` in `map` (equal lengths): a
/// few batch calls, or one update per entry where batches are not supported.
/// A failure leaves some entries written (as a failed per-entry loop would).
pub fn insert_all<K: Pod, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    keys: &[K],
    values: &[V],
) -> Result<(), MapError> {
    if keys.len() != values.len() {
        return Err(MapError::SyscallError(SyscallError {
            call: "bpf_map_update_batch",
            io_error: io::Error::from_raw_os_error(libc::EINVAL),
        }));
    }
    let mut batches = true;
    for (k, v) in keys.chunks(MAX_PER_CALL).zip(values.chunks(MAX_PER_CALL)) {
        if batches {
            match update_batch_call(map.map(), k, v) {
                Ok(()) => continue,
                Err(e) if unsupported(&e) => {
                    tracing::debug!(error = %e, "no batch map updates here; one update per entry");
                    batches = false;
                }
                Err(io_error) => {
                    return Err(MapError::SyscallError(SyscallError {
                        call: "bpf_map_update_batch",
                        io_error,
                    }))
                }
            }
        }
        for (key, value) in k.iter().zip(v) {
            map.insert(key, value, 0)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use super::*;

    /// A fresh BPF hash map of u64 -> u64 with room for `max` entries.
    fn hash_map(max: u32) -> HashMap<MapData, u64, u64> {
        /// `union bpf_attr`'s map-creation member, the fields used here.
        #[repr(C)]
        struct CreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        const BPF_MAP_CREATE: libc::c_long = 0;
        const BPF_MAP_TYPE_HASH: u32 = 1;
        let attr = CreateAttr {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 8,
            value_size: 8,
            max_entries: max,
            map_flags: 0,
        };
        // SAFETY: a valid map-creation attribute, read by the kernel only.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_CREATE,
                &attr as *const CreateAttr,
                std::mem::size_of::<CreateAttr>(),
            )
        };
        assert!(fd >= 0, "create a BPF map: {}", io::Error::last_os_error());
        // SAFETY: bpf(2) returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let data = MapData::from_fd(fd).expect("map info");
        HashMap::try_from(aya::maps::Map::HashMap(data)).expect("a hash map")
    }

    #[test]
    fn many_entries_are_written_and_read_back_in_batches() {
        const N: u64 = 40_000;
        let mut map = hash_map(N as u32);
        let keys: Vec<u64> = (0..N).collect();
        let values: Vec<u64> = keys.iter().map(|k| k * 3 + 1).collect();
        // This kernel has batch operations: they are what is measured here.
        update_batch_call(map.map(), &keys[..2], &values[..2]).expect("one batch call");
        insert_all(&mut map, &keys, &values).unwrap();
        assert_eq!(map.get(&12_345, 0).unwrap(), 12_345 * 3 + 1);
        let mut read = lookup_all::<u64, u64>(map.map())
            .unwrap()
            .expect("batch lookups");
        read.sort_unstable();
        let expected: Vec<(u64, u64)> = keys.iter().copied().zip(values.iter().copied()).collect();
        assert_eq!(read, expected);
        let mut again = entries(&map);
        again.sort_unstable();
        assert_eq!(again, expected);
        // Replacing is allowed (BPF_ANY).
        insert_all(&mut map, &[7], &[0]).unwrap();
        assert_eq!(map.get(&7, 0).unwrap(), 0);
    }

    #[test]
    fn an_empty_map_reads_as_empty_and_a_full_one_refuses_more() {
        let mut map = hash_map(10);
        assert_eq!(entries(&map), Vec::new());
        let keys: Vec<u64> = (0..20).collect();
        let e = insert_all(&mut map, &keys, &keys).unwrap_err();
        assert!(
            matches!(&e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG)),
            "{e}"
        );
        assert!(insert_all(&mut map, &keys[..2], &keys[..1]).is_err());
    }
}
