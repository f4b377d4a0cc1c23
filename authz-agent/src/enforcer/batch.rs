//! Filling a hash map with many entries in one bpf(2) call
//! (`BPF_MAP_UPDATE_BATCH`, Linux 5.6+), which aya 0.14 does not expose: a
//! start with 100,000 permits would otherwise cost one call per row. A kernel
//! or map type without batch operations gets one update per entry instead.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{HashMap, IterableMap as _, MapData, MapError},
    sys::SyscallError,
    Pod,
};

/// `BPF_MAP_UPDATE_BATCH` (`enum bpf_cmd` in the kernel's uapi).
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

/// One `BPF_MAP_UPDATE_BATCH` call for `keys[i] -> values[i]`.
fn update_batch_call<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> io::Result<()> {
    debug_assert_eq!(keys.len(), values.len());
    let count = u32::try_from(keys.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let fd = map.fd().as_fd().as_raw_fd();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: u32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        elem_flags: BPF_ANY,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid, initialised `bpf_attr.batch` (the kernel
    // zero-fills the rest of the union for the size given); `keys` and
    // `values` point to `count` live, `Pod` (plain, repr(C)) elements that
    // the kernel only reads, for the duration of the call; `fd` is the
    // map's open descriptor, borrowed from `map`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
