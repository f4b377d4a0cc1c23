//! Types shared by the authz kernel programs (`authz-ebpf`) and the agent.
//!
//! Every type here crosses the user/kernel boundary through a BPF map, a ring
//! buffer or a read-only global, so each is `#[repr(C)]`, has no implicit padding
//! (checked by the `const` assertions at the bottom) and holds only plain integers
//! and byte arrays.
#![no_std]

/// Length of a SHA-256 digest.
pub const DIGEST_LEN: usize = 32;
/// A SHA-256 digest of an executable's content.
pub type Digest = [u8; DIGEST_LEN];
/// Length of an artifact id (128 random bits).
pub const ARTIFACT_ID_LEN: usize = 16;
/// Length of `task_struct::comm`.
pub const COMM_LEN: usize = 16;
/// Bytes of `linux_binprm::filename` carried in an event (NUL-terminated, truncated).
pub const FILENAME_LEN: usize = 256;
/// How many cgroup levels below the root the kernel program walks when it looks
/// for a permit granted to an ancestor with descendants included.
pub const MAX_CGROUP_DEPTH: u32 = 16;
/// Size of the decision-event ring buffer (`EVENTS`): about 1,500 events,
/// which is what the kernel can queue while no agent reads the ring.
pub const EVENT_RING_BYTES: u32 = 1 << 20;

/// `hash_algo` value the kernel's IMA uses for SHA-256 (`HASH_ALGO_SHA256`,
/// include/uapi/linux/hash_info.h). `bpf_ima_file_hash` returns it on success.
pub const HASH_ALGO_SHA256: i64 = 4;

/// Enforcement mode, stored in [`Config::mode`].
///
/// The kernel program treats any value it does not know (including 0, the value
/// of a map nobody has written) as [`mode::ENFORCE`]: it fails closed.
pub mod mode {
    /// Decide nothing, allow everything, emit no events.
    pub const OFF: u32 = 1;
    /// Decide and report, but allow.
    pub const AUDIT: u32 = 2;
    /// Deny every exec without a valid permit.
    pub const ENFORCE: u32 = 3;

    /// Human name of a mode value.
    pub const fn name(mode: u32) -> &'static str {
        match mode {
            OFF => "off",
            AUDIT => "audit",
            ENFORCE => "enforce",
            _ => "enforce (unset)",
        }
    }
}

/// Which cgroups are subject to the mode, stored in [`Config::scope`].
pub mod scope {
    /// Every process on the host (any unknown value means this too).
    pub const HOST: u32 = 1;
    /// Only processes whose cgroup is, or is below, a cgroup in the
    /// `ENFORCED_CGROUPS` map.
    pub const SUBTREES: u32 = 2;
}

/// What the kernel did with an exec.
pub mod decision {
    /// The exec went ahead.
    pub const ALLOW: u32 = 1;
    /// The exec was refused with `-EPERM`.
    pub const DENY: u32 = 2;
    /// Audit mode: the exec went ahead, but enforce mode would have refused it.
    pub const AUDIT_DENY: u32 = 3;

    pub const fn name(decision: u32) -> &'static str {
        match decision {
            ALLOW => "allow",
            DENY => "deny",
            AUDIT_DENY => "audit-deny",
            _ => "unknown",
        }
    }
}

/// Why the kernel decided as it did ([`ExecEvent::reason`]).
pub mod reason {
    /// A permit for this digest in the process's own cgroup.
    pub const PERMIT: u32 = 1;
    /// A permit for this digest on an ancestor cgroup, with descendants included.
    pub const PERMIT_INHERITED: u32 = 2;
    /// The process runs outside every enforced subtree.
    pub const OUT_OF_SCOPE: u32 = 3;
    /// No permit for this digest anywhere.
    pub const NO_PERMIT: u32 = 10;
    /// A permit exists but it expired.
    pub const EXPIRED: u32 = 11;
    /// Permits exist for this digest, but for other cgroups.
    pub const WRONG_CGROUP: u32 = 12;
    /// The kernel could not compute a SHA-256 of the file.
    pub const DIGEST_FAILED: u32 = 13;
    /// The exec came from the agent's self-test cgroup, which is always refused.
    pub const SELFTEST: u32 = 14;
    /// Kernel structures could not be read (a missing offset or a failed read).
    pub const INTERNAL: u32 = 15;

    pub const fn name(reason: u32) -> &'static str {
        match reason {
            PERMIT => "permit",
            PERMIT_INHERITED => "permit-inherited",
            OUT_OF_SCOPE => "out-of-scope",
            NO_PERMIT => "no-permit",
            EXPIRED => "expired",
            WRONG_CGROUP => "wrong-cgroup",
            DIGEST_FAILED => "digest-failed",
            SELFTEST => "selftest",
            INTERNAL => "internal-error",
            _ => "unknown",
        }
    }
}

/// Index of each per-CPU counter in the `COUNTERS` map.
pub mod counter {
    pub const ALLOWED: u32 = 0;
    pub const DENIED_NO_PERMIT: u32 = 1;
    pub const DENIED_EXPIRED: u32 = 2;
    pub const DENIED_WRONG_CGROUP: u32 = 3;
    pub const DENIED_DIGEST_FAILED: u32 = 4;
    pub const DENIED_SELFTEST: u32 = 5;
    pub const DENIED_INTERNAL: u32 = 6;
    pub const AUDIT_WOULD_DENY: u32 = 7;
    pub const DIGEST_ERRORS: u32 = 8;
    pub const CACHE_HITS: u32 = 9;
    pub const CACHE_MISSES: u32 = 10;
    pub const EVENTS_DROPPED: u32 = 11;
    pub const OUT_OF_SCOPE: u32 = 12;
    /// Number of counters (size of the map).
    pub const COUNT: u32 = 13;

    /// Names in index order, for reports.
    pub const NAMES: [&str; COUNT as usize] = [
        "allowed",
        "denied_no_permit",
        "denied_expired",
        "denied_wrong_cgroup",
        "denied_digest_failed",
        "denied_selftest",
        "denied_internal",
        "audit_would_deny",
        "digest_errors",
        "cache_hits",
        "cache_misses",
        "events_dropped",
        "out_of_scope",
    ];
}

/// Flags on an [`ExecEvent`].
pub mod event_flags {
    /// The digest came from the per-inode cache instead of a fresh hash.
    pub const DIGEST_CACHED: u32 = 1 << 0;
    /// The digest field holds a valid SHA-256.
    pub const DIGEST_VALID: u32 = 1 << 1;
}

/// Runtime configuration: element 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// One of [`mode`].
    pub mode: u32,
    /// One of [`scope`].
    pub scope: u32,
    /// Execs from this cgroup are always denied (reason [`reason::SELFTEST`]);
    /// the agent uses it to prove the hook fires. 0 = none.
    pub selftest_cgroup_id: u64,
}

/// Key of the `PERMITS` map: a binary's content in one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PermitKey {
    pub digest: Digest,
    /// cgroup v2 id (the cgroup directory's inode number).
    pub cgroup_id: u64,
}

/// Value of the `PERMITS` map: what the artifacts for one (digest, cgroup)
/// allow, in two slots because one key can carry several artifacts.
///
/// Expiries are `CLOCK_BOOTTIME` nanoseconds, compared by the kernel with
/// `bpf_ktime_get_boot_ns()` on every exec; 0 means "no such permit".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permit {
    /// Until when execs in this very cgroup are allowed (any artifact for the
    /// key covers its own cgroup).
    pub expires_boot_ns: u64,
    /// Until when execs in cgroups *below* this one are allowed (only
    /// artifacts with descendants included count).
    pub descendants_expires_boot_ns: u64,
    /// The artifact behind `expires_boot_ns`.
    pub artifact_id: [u8; ARTIFACT_ID_LEN],
    /// The artifact behind `descendants_expires_boot_ns`.
    pub descendants_artifact_id: [u8; ARTIFACT_ID_LEN],
}

impl Permit {
    /// A permit for one artifact.
    pub const fn single(
        artifact_id: [u8; ARTIFACT_ID_LEN],
        expires_boot_ns: u64,
        descendants: bool,
    ) -> Self {
        Self {
            expires_boot_ns,
            descendants_expires_boot_ns: if descendants { expires_boot_ns } else { 0 },
            artifact_id,
            descendants_artifact_id: if descendants {
                artifact_id
            } else {
                [0; ARTIFACT_ID_LEN]
            },
        }
    }
}

/// Kernel structure offsets, read by the agent from the running kernel's BTF and
/// handed to the program as a read-only global before load. A zero offset means
/// "not found"; the program then fails closed where it needs that field (no
/// `bprm->file`: refuse; no inode stamp fields: never use the digest cache).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct linux_binprm`, member `file`.
    pub binprm_file: u32,
    /// `struct linux_binprm`, member `filename` (the path given to execve).
    pub binprm_filename: u32,
    /// `struct linux_binprm`, member `interp` (the file being checked now: the
    /// interpreter on the second pass of a `#!` script).
    pub binprm_interp: u32,
    /// `struct task_struct`, member `real_parent`.
    pub task_real_parent: u32,
    /// `struct task_struct`, member `tgid`.
    pub task_tgid: u32,
    /// `struct file`, member `f_inode`.
    pub file_inode: u32,
    /// `struct file`, member `f_mode`.
    pub file_mode: u32,
    /// `struct inode`, member `i_sb`.
    pub inode_sb: u32,
    /// `struct inode`, member `i_nlink` (inside an anonymous union).
    pub inode_nlink: u32,
    /// `struct inode`, member `i_size`.
    pub inode_size: u32,
    /// `struct inode`, member `i_writecount` (an `atomic_t`).
    pub inode_writecount: u32,
    /// `struct inode`, member `i_version` (an `atomic64_t`).
    pub inode_version: u32,
    /// Seconds of the inode's change time (`i_ctime.tv_sec`, `__i_ctime.tv_sec`
    /// or `i_ctime_sec`, depending on the kernel).
    pub inode_ctime_sec: u32,
    /// Nanoseconds of the change time (read as 32 bits in every layout).
    pub inode_ctime_nsec: u32,
    /// `struct super_block`, member `s_magic`.
    pub sb_magic: u32,
}

impl KernelOffsets {
    /// Whether every field the digest cache's validity check reads is known.
    pub const fn cache_usable(&self) -> bool {
        self.file_inode != 0
            && self.inode_sb != 0
            && self.inode_nlink != 0
            && self.inode_size != 0
            && self.inode_writecount != 0
            && self.inode_version != 0
            && self.inode_ctime_sec != 0
            && self.inode_ctime_nsec != 0
            && self.sb_magic != 0
    }
}

/// `FMODE_WRITE` (include/linux/fs.h): the file is open for writing.
pub const FMODE_WRITE: u32 = 0x2;

/// Filesystems whose files may use the digest cache: local filesystems where
/// every content change goes through this kernel and moves the inode's change
/// time. Network, FUSE and overlay filesystems can change content behind the
/// inode's back, so their files are hashed at every exec.
pub const CACHEABLE_FS_MAGIC: [u64; 9] = [
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58F6, // ramfs (initramfs rootfs)
    0x7371_7368, // squashfs (read-only)
    0xE0F5_E1E2, // erofs (read-only)
    0xF2F5_2010, // f2fs
    0x2FC1_2FC1, // zfs
];

/// Per-inode digest cache entry (the `DIGEST_CACHE` inode storage).
///
/// Valid only while the inode's change time, size and i_version still equal the
/// values read *before* the digest was computed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheEntry {
    pub digest: Digest,
    pub ctime_sec: u64,
    pub size: u64,
    pub version: u64,
    pub ctime_nsec: u32,
    /// 1 once the entry holds a digest.
    pub valid: u32,
}

/// Per-task lineage label (the `TASK_LABELS` task storage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskLabel {
    /// Permit the task's current image was started under (zero: none).
    pub permit_id: [u8; ARTIFACT_ID_LEN],
    /// Permit of an exec in progress, made current when the exec commits.
    pub pending_id: [u8; ARTIFACT_ID_LEN],
    /// 1 while `pending_id` holds the outcome of an exec in progress.
    pub pending: u32,
    pub _reserved: u32,
}

/// One exec decision, sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// `bpf_ktime_get_boot_ns()` at the decision.
    pub boot_ns: u64,
    pub cgroup_id: u64,
    /// cgroup of the permit that allowed the exec (0 when none).
    pub permit_cgroup_id: u64,
    /// Expiry of the permit that was found (0 when none).
    pub permit_expires_boot_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// One of [`decision`].
    pub decision: u32,
    /// One of [`reason`].
    pub reason: u32,
    /// [`mode`] in force at the decision.
    pub mode: u32,
    /// What `bpf_ima_file_hash` returned: the hash algorithm, or a negative errno.
    pub hash_status: i32,
    /// [`event_flags`].
    pub flags: u32,
    pub digest: Digest,
    pub permit_id: [u8; ARTIFACT_ID_LEN],
    /// Permit under which the exec'ing process's current image was started
    /// (inherited across fork): the link to the previous exec in the lineage.
    pub parent_permit_id: [u8; ARTIFACT_ID_LEN],
    pub comm: [u8; COMM_LEN],
    /// `bprm->filename`: the path given to execve.
    pub filename: [u8; FILENAME_LEN],
    /// `bprm->interp`: the file this decision is about (differs from
    /// `filename` for the interpreter of a `#!` script).
    pub interp: [u8; FILENAME_LEN],
}

impl ExecEvent {
    pub const fn zeroed() -> Self {
        Self {
            boot_ns: 0,
            cgroup_id: 0,
            permit_cgroup_id: 0,
            permit_expires_boot_ns: 0,
            pid: 0,
            tgid: 0,
            ppid: 0,
            uid: 0,
            gid: 0,
            decision: 0,
            reason: 0,
            mode: 0,
            hash_status: 0,
            flags: 0,
            digest: [0; DIGEST_LEN],
            permit_id: [0; ARTIFACT_ID_LEN],
            parent_permit_id: [0; ARTIFACT_ID_LEN],
            comm: [0; COMM_LEN],
            filename: [0; FILENAME_LEN],
            interp: [0; FILENAME_LEN],
        }
    }
}

// No implicit padding anywhere: each size is the sum of its fields.
const _: () = assert!(core::mem::size_of::<Config>() == 4 + 4 + 8);
const _: () = assert!(core::mem::size_of::<PermitKey>() == DIGEST_LEN + 8);
const _: () = assert!(core::mem::size_of::<Permit>() == 2 * 8 + 2 * ARTIFACT_ID_LEN);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 15 * 4);
const _: () = assert!(core::mem::size_of::<CacheEntry>() == DIGEST_LEN + 3 * 8 + 2 * 4);
const _: () = assert!(core::mem::size_of::<TaskLabel>() == 2 * ARTIFACT_ID_LEN + 2 * 4);
const _: () = assert!(
    core::mem::size_of::<ExecEvent>()
        == 4 * 8 + 10 * 4 + DIGEST_LEN + 2 * ARTIFACT_ID_LEN + COMM_LEN + 2 * FILENAME_LEN
);

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and byte
    // arrays, and has no padding (asserted above), so every bit pattern is valid.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PermitKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Permit {}
    // SAFETY: as above.
    unsafe impl aya::Pod for KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExecEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CacheEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TaskLabel {}
}
