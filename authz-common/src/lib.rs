//! Types shared by the authz kernel programs (`authz-ebpf`) and the agent.
//!
//! Every type here crosses the user/kernel boundary through a BPF map, a ring
//! buffer or a read-only global, so each is `#[repr(C)]`, has no implicit padding
//! (checked by the `const` assertions at the bottom) and holds only plain integers
//! and byte arrays.
#![no_std]

/// Default capacity of the permit map (and of the digest count map); the
/// agent's `max_permits` setting overrides it at load.
pub const DEFAULT_MAX_PERMITS: u32 = 131_072;
/// The largest `max_permits` the agent accepts (4 Mi entries: a 256 MiB map).
pub const MAX_PERMITS_LIMIT: u32 = 4 * 1024 * 1024;

/// Sizes of the files authz reads: larger ones are refused before parsing.
pub mod limits {
    /// An artifact or delegation file.
    pub const MAX_ARTIFACT_BYTES: usize = 64 * 1024;
    /// The agent's configuration file (its trust policy included).
    pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
}

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
    /// Only processes whose cgroup's *path* is, or is below, a path in the
    /// `AUTHZ_SCOPE` trie. The kernel program reads the path at every exec, so
    /// a listed cgroup that is removed and created again (with a new id), or
    /// that does not exist yet, is enforced the moment it exists.
    pub const SUBTREES: u32 = 2;
}

/// Bytes of a cgroup directory name the scope trie compares. Longer names are
/// compared on their first `SCOPE_NAME_LEN - 1` bytes: two names sharing that
/// prefix are treated alike, which can only widen enforcement, never narrow it.
pub const SCOPE_NAME_LEN: usize = 64;
/// Token of the root cgroup in the scope trie: level-1 names hang off it.
pub const SCOPE_ROOT: u32 = 1;
/// Capacity of the scope trie (one node per distinct path component).
pub const MAX_SCOPE_NODES: u32 = 4096;

/// Key of the scope trie (`AUTHZ_SCOPE`): a cgroup directory name under the
/// node `parent`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScopeKey {
    /// Token of the parent node ([`SCOPE_ROOT`] for a top-level cgroup).
    pub parent: u32,
    pub _reserved: u32,
    /// The directory name, NUL-terminated and zero-padded (truncated to
    /// `SCOPE_NAME_LEN - 1` bytes, as `bpf_probe_read_kernel_str` reads it).
    pub name: [u8; SCOPE_NAME_LEN],
}

impl ScopeKey {
    /// The key for `name` under `parent`, truncated the way the kernel reads it.
    pub fn new(parent: u32, name: &[u8]) -> Self {
        let mut key = Self {
            parent,
            _reserved: 0,
            name: [0; SCOPE_NAME_LEN],
        };
        let n = if name.len() < SCOPE_NAME_LEN {
            name.len()
        } else {
            SCOPE_NAME_LEN - 1
        };
        let mut i = 0;
        while i < n {
            key.name[i] = name[i];
            i += 1;
        }
        key
    }
}

/// Value of the scope trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeNode {
    /// This node's token: the `parent` of its children's keys.
    pub token: u32,
    /// [`scope_flags`].
    pub flags: u32,
}

/// Flags of a [`ScopeNode`].
pub mod scope_flags {
    /// The path ending here is an enforced subtree.
    pub const ENFORCED: u32 = 1;
}

/// Role of a loaded copy of the programs, element 0 of the (unpinned)
/// `AUTHZ_ROLE` map. A restart loads new programs next to the pinned ones; the
/// new ones stay on probation until their self-test passed.
pub mod role {
    /// Decides every exec (also the value of a map nobody wrote).
    pub const ACTIVE: u32 = 0;
    /// Decides only the self-test cgroup's execs; everything else is left to
    /// the programs already attached.
    pub const PROBATION: u32 = 1;
}

/// Slots of the `AUTHZ_SEQ` array.
pub mod seq {
    /// The sequence number the next decision event gets.
    pub const NEXT: u32 = 0;
    /// Random id the agent wrote when it created the maps: sequence numbers
    /// are comparable only within one epoch.
    pub const EPOCH: u32 = 1;
    /// Number of slots.
    pub const SLOTS: u32 = 2;
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
    /// The file's content can still change after the check: an unsealed memfd,
    /// an unlinked (`O_TMPFILE`, deleted) file, or a file open for writing.
    pub const MUTABLE_CONTENT: u32 = 16;
    /// The file lives on a filesystem that cannot guarantee the hashed bytes are
    /// the executed bytes (FUSE, network and cluster filesystems, anything
    /// unknown) and the configuration does not trust it.
    pub const UNTRUSTED_FS: u32 = 17;
    /// The file's size changed without a writer (truncate by path) and IMA
    /// holds a measurement of it that may predate the change: no fresh digest
    /// can be had.
    pub const DIGEST_STALE: u32 = 18;
    /// Lockdown: someone other than the agent reached for authz's BPF
    /// objects, pins or process, or loaded a program that could override an
    /// LSM decision.
    pub const TAMPER: u32 = 25;
    /// Memory made executable that no file backs: anonymous memory, or a
    /// private mapping written to (a JIT, or injected code), while
    /// `exec_memory` is not `allow` and the process's permit grants none.
    pub const EXEC_MEMORY: u32 = 19;
    /// `mprotect` adding execute to a file mapping whose digest the kernel
    /// has not verified (the hook cannot hash; it decides from the cache).
    pub const UNVERIFIED_MPROTECT: u32 = 20;
    /// A write into process memory from outside (`/proc/PID/mem`, ptrace)
    /// while `exec_memory` is `deny`.
    pub const CODE_WRITE: u32 = 21;
    /// A file mapped executable (a library, the loader, a dlopen) whose
    /// digest has no permit for this cgroup.
    pub const LIBRARY_NO_PERMIT: u32 = 22;
    /// As [`LIBRARY_NO_PERMIT`], but the permit expired.
    pub const LIBRARY_EXPIRED: u32 = 23;
    /// As [`LIBRARY_NO_PERMIT`], but permits exist for other cgroups.
    pub const LIBRARY_WRONG_CGROUP: u32 = 24;

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
            MUTABLE_CONTENT => "mutable-content",
            UNTRUSTED_FS => "untrusted-filesystem",
            DIGEST_STALE => "digest-stale",
            EXEC_MEMORY => "exec-memory",
            UNVERIFIED_MPROTECT => "mprotect-unverified",
            CODE_WRITE => "code-write",
            LIBRARY_NO_PERMIT => "library-no-permit",
            LIBRARY_EXPIRED => "library-expired",
            LIBRARY_WRONG_CGROUP => "library-wrong-cgroup",
            TAMPER => "tamper",
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
    pub const DENIED_MUTABLE: u32 = 13;
    pub const DENIED_UNTRUSTED_FS: u32 = 14;
    pub const DENIED_DIGEST_STALE: u32 = 15;
    /// File mappings made executable that were allowed.
    pub const MAPS_ALLOWED: u32 = 16;
    /// ... refused (or, in audit, that would have been).
    pub const MAPS_DENIED: u32 = 17;
    /// Executable memory no file backs, refused (or would have been).
    pub const EXEC_MEMORY_DENIED: u32 = 18;
    /// Writes into process memory from outside, refused.
    pub const CODE_WRITES_DENIED: u32 = 19;
    /// Lockdown refusals.
    pub const TAMPER_DENIED: u32 = 20;
    /// Number of counters (size of the map).
    pub const COUNT: u32 = 21;

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
        "denied_mutable_content",
        "denied_untrusted_filesystem",
        "denied_digest_stale",
        "maps_allowed",
        "maps_denied",
        "exec_memory_denied",
        "code_writes_denied",
        "tamper_denied",
    ];
}

/// Which check an [`ExecEvent`] reports ([`ExecEvent::hook`]).
pub mod hook {
    /// An `execve` (`bprm_check_security`).
    pub const EXEC: u32 = 0;
    /// A file or anonymous memory mapped executable (`mmap_file`).
    pub const MMAP: u32 = 1;
    /// Execute added to a mapping (`file_mprotect`).
    pub const MPROTECT: u32 = 2;
    /// A write into process memory from outside (`/proc/PID/mem`, ptrace).
    pub const MEMORY_WRITE: u32 = 3;
    /// Lockdown's guards (bpf objects, pins, the agent's process).
    pub const GUARD: u32 = 4;

    pub const fn name(hook: u32) -> &'static str {
        match hook {
            EXEC => "exec",
            MMAP => "mmap",
            MPROTECT => "mprotect",
            MEMORY_WRITE => "memory-write",
            GUARD => "guard",
            _ => "unknown",
        }
    }
}

/// `PROT_EXEC` (include/uapi/asm-generic/mman-common.h).
pub const PROT_EXEC: u64 = 0x4;
/// `VM_EXEC` (include/linux/mm.h).
pub const VM_EXEC: u64 = 0x4;
/// `PTRACE_MODE_ATTACH` (include/linux/ptrace.h).
pub const PTRACE_MODE_ATTACH: u32 = 0x2;
/// `PROC_SUPER_MAGIC`: procfs.
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;

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
    /// Which allowed execs send an event ([`sample`]); refusals always do.
    pub allowed_sample: u32,
    /// Files mapped executable (libraries, the loader, dlopen, mmap): one
    /// of [`mode`], applied within the global mode (the less strict wins).
    pub libraries: u32,
    /// Executable memory no file backs, and writes into process memory from
    /// outside: one of [`mode`] (off = allow), within the global mode.
    pub exec_memory: u32,
    /// 1: only the agent (a task exec'd from a binary whose digest is in
    /// `authz_agents`) may obtain descriptors to authz's maps, programs and
    /// links, remove or rename its pins, unmount their bpffs, load programs
    /// that could override an LSM decision, or ptrace the agent.
    pub lockdown: u32,
}

/// Values of [`Config::allowed_sample`]: `N` sends one allowed exec in N (per
/// CPU); an allowed exec that sends nothing reserves no ring space and copies
/// no path.
pub mod sample {
    /// Every allowed exec (also 0, the value nobody wrote).
    pub const ALL: u32 = 1;
    /// No allowed exec.
    pub const NONE: u32 = u32::MAX;
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
    /// `struct task_struct`, member `cgroups` (a `struct css_set *`).
    pub task_cgroups: u32,
    /// `struct css_set`, member `dfl_cgrp`.
    pub css_set_dfl_cgrp: u32,
    /// `struct cgroup`, member `level`.
    pub cgroup_level: u32,
    /// `struct cgroup`, member `ancestors` (array of `struct cgroup *`, by level).
    pub cgroup_ancestors: u32,
    /// `struct cgroup`, member `kn`.
    pub cgroup_kn: u32,
    /// `struct kernfs_node`, member `name`.
    pub kernfs_node_name: u32,
    /// `struct dentry`, member `d_inode`.
    pub dentry_inode: u32,
    /// `struct iattr`, member `ia_valid` (offset 0 in every kernel so far: it
    /// is meaningful when `known` has [`offset_known::IATTR_VALID`]).
    pub iattr_valid: u32,
    /// `struct shmem_inode_info`: offset of `seals` minus offset of
    /// `vfs_inode` (negative), meaningful when `known` has
    /// [`offset_known::SHMEM_SEALS`].
    pub shmem_seals_delta: i32,
    /// [`offset_known`]: fields whose value may legitimately be 0 or negative.
    pub known: u32,
    /// `struct vm_area_struct`, member `vm_file`.
    pub vma_file: u32,
    /// `struct vm_area_struct`, member `vm_flags` (offset 0 in some kernels:
    /// meaningful when `known` has [`offset_known::VMA_FLAGS`]).
    pub vma_flags: u32,
    /// `struct vm_area_struct`, member `anon_vma` (pages of its own: a private
    /// mapping that was written to).
    pub vma_anon_vma: u32,
    /// `struct file`, member `f_path` (a `struct path`).
    pub file_path: u32,
    /// `struct file`, member `f_path.dentry`.
    pub file_dentry: u32,
    /// `struct dentry`, member `d_name.name`.
    pub dentry_name: u32,
    /// `struct bpf_map`, member `id`.
    pub bpf_map_id: u32,
    /// `struct bpf_prog`, member `aux`.
    pub bpf_prog_aux: u32,
    /// `struct bpf_prog_aux`, member `id`.
    pub bpf_prog_aux_id: u32,
    /// `struct vfsmount`, member `mnt_sb`.
    pub vfsmount_sb: u32,
    /// `struct super_block`, member `s_dev`.
    pub sb_dev: u32,
    /// `struct inode`, member `i_ino`.
    pub inode_ino: u32,
}

impl KernelOffsets {
    /// Whether every field the content checks read (what the file is, where it
    /// lives, who can still change it) is known. Without them every exec in
    /// scope is refused.
    pub const fn content_usable(&self) -> bool {
        self.file_inode != 0
            && self.inode_sb != 0
            && self.sb_magic != 0
            && self.inode_nlink != 0
            && self.inode_writecount != 0
    }

    /// Whether every field the scope check reads (the caller's cgroup path) is
    /// known. Without them every exec counts as in scope.
    pub const fn scope_usable(&self) -> bool {
        self.task_cgroups != 0
            && self.css_set_dfl_cgrp != 0
            && self.cgroup_level != 0
            && self.cgroup_ancestors != 0
            && self.cgroup_kn != 0
            && self.kernfs_node_name != 0
    }

    /// Whether every field the mapping checks read is known. Without them
    /// every executable mapping in scope is refused.
    pub const fn mapping_usable(&self) -> bool {
        self.vma_file != 0 && self.vma_anon_vma != 0 && self.known & offset_known::VMA_FLAGS != 0
    }

    /// Whether every field lockdown's guards read is known. Without them
    /// lockdown cannot be turned on.
    pub const fn guard_usable(&self) -> bool {
        self.bpf_map_id != 0
            && self.bpf_prog_aux != 0
            && self.bpf_prog_aux_id != 0
            && self.vfsmount_sb != 0
            && self.sb_dev != 0
            && self.inode_ino != 0
            && self.inode_sb != 0
            && self.sb_magic != 0
            && self.dentry_inode != 0
    }

    /// Whether every field the digest cache's validity check reads is known,
    /// and the `inode_setattr` program can see size changes (without it a
    /// truncate would not drop a cached digest).
    pub const fn cache_usable(&self) -> bool {
        self.dentry_inode != 0
            && self.known & offset_known::IATTR_VALID != 0
            && self.file_inode != 0
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

/// Bits of [`KernelOffsets::known`].
pub mod offset_known {
    pub const SHMEM_SEALS: u32 = 1 << 0;
    pub const IATTR_VALID: u32 = 1 << 1;
    pub const VMA_FLAGS: u32 = 1 << 2;
}

/// `FMODE_WRITE` (include/linux/fs.h): the file is open for writing.
pub const FMODE_WRITE: u32 = 0x2;

/// `ATTR_SIZE` (include/linux/fs.h): a setattr that changes the file's size.
pub const ATTR_SIZE: u32 = 1 << 3;
/// `ATTR_FILE` (include/linux/fs.h): the setattr comes through an open file
/// (ftruncate, `O_TRUNC`); without it, a path (truncate(2)).
pub const ATTR_FILE: u32 = 1 << 13;

/// memfd seals (include/uapi/linux/fcntl.h).
pub mod seals {
    pub const SEAL: u32 = 0x0001;
    pub const SHRINK: u32 = 0x0002;
    pub const GROW: u32 = 0x0004;
    /// Refuses writes through every descriptor, and cannot be set while a
    /// shared writable mapping exists (unlike `F_SEAL_FUTURE_WRITE`).
    pub const WRITE: u32 = 0x0008;
    /// What makes a memfd's content final: no write, no shrink, no growth.
    pub const IMMUTABLE: u32 = WRITE | SHRINK | GROW;
}

/// `TMPFS_MAGIC`: tmpfs, and the internal mount memfds live on.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// What authz lets a filesystem do, stored per superblock magic in the
/// `AUTHZ_FS` map. A magic that is not in the map may do nothing: execs from
/// it are refused in scope (`untrusted-filesystem`).
pub mod fs_flags {
    /// Execs from it may be allowed: every content change goes through this
    /// kernel's VFS, so the bytes hashed are the bytes executed.
    pub const EXEC: u32 = 1 << 0;
    /// Its files' digests may be cached per inode: a VM test proves that
    /// every way to change a file's content on it drops the cached digest.
    pub const CACHE: u32 = 1 << 1;
}

/// A filesystem authz knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filesystem {
    /// The name `/proc/filesystems` and `mount -t` use.
    pub name: &'static str,
    /// `super_block::s_magic`.
    pub magic: u64,
    /// Default [`fs_flags`]; `trusted_filesystems` in the agent's config adds
    /// [`fs_flags::EXEC`] to others.
    pub flags: u32,
}

const LOCAL: u32 = fs_flags::EXEC;
const LOCAL_CACHED: u32 = fs_flags::EXEC | fs_flags::CACHE;
const UNTRUSTED: u32 = 0;

/// Every filesystem authz knows. Local filesystems are trusted for exec; the
/// digest cache is on only where the VM tests (`digest_cache::`) prove
/// invalidation; FUSE, network and cluster filesystems can serve one content
/// to the hash and another to the loader, so they are refused unless the
/// configuration trusts them.
pub const FILESYSTEMS: [Filesystem; 29] = [
    Filesystem {
        name: "ext4",
        magic: 0xEF53,
        flags: LOCAL_CACHED,
    },
    Filesystem {
        name: "xfs",
        magic: 0x5846_5342,
        flags: LOCAL_CACHED,
    },
    Filesystem {
        name: "btrfs",
        magic: 0x9123_683E,
        flags: LOCAL_CACHED,
    },
    Filesystem {
        name: "tmpfs",
        magic: TMPFS_MAGIC,
        flags: LOCAL_CACHED,
    },
    Filesystem {
        name: "ramfs",
        magic: 0x8584_58F6,
        flags: LOCAL_CACHED,
    },
    Filesystem {
        name: "squashfs",
        magic: 0x7371_7368,
        flags: LOCAL,
    },
    Filesystem {
        name: "erofs",
        magic: 0xE0F5_E1E2,
        flags: LOCAL,
    },
    Filesystem {
        name: "f2fs",
        magic: 0xF2F5_2010,
        flags: LOCAL,
    },
    Filesystem {
        name: "zfs",
        magic: 0x2FC1_2FC1,
        flags: LOCAL,
    },
    Filesystem {
        name: "overlay",
        magic: 0x794C_7630,
        flags: LOCAL,
    },
    Filesystem {
        name: "bcachefs",
        magic: 0xCA45_1A4E,
        flags: LOCAL,
    },
    Filesystem {
        name: "iso9660",
        magic: 0x9660,
        flags: LOCAL,
    },
    Filesystem {
        name: "udf",
        magic: 0x1501_3346,
        flags: LOCAL,
    },
    Filesystem {
        name: "vfat",
        magic: 0x4D44,
        flags: LOCAL,
    },
    Filesystem {
        name: "exfat",
        magic: 0x2011_BAB0,
        flags: LOCAL,
    },
    Filesystem {
        name: "ntfs3",
        magic: 0x5346_544E,
        flags: LOCAL,
    },
    Filesystem {
        name: "jfs",
        magic: 0x3153_464A,
        flags: LOCAL,
    },
    Filesystem {
        name: "nilfs2",
        magic: 0x3434,
        flags: LOCAL,
    },
    Filesystem {
        name: "fuse",
        magic: 0x6573_5546,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "nfs",
        magic: 0x6969,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "cifs",
        magic: 0xFF53_4D42,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "smb2",
        magic: 0xFE53_4D42,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "9p",
        magic: 0x0102_1997,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "ceph",
        magic: 0x00C3_6400,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "afs",
        magic: 0x6B41_4653,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "gfs2",
        magic: 0x0116_1970,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "ocfs2",
        magic: 0x7461_636F,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "coda",
        magic: 0x7375_7245,
        flags: UNTRUSTED,
    },
    Filesystem {
        name: "orangefs",
        magic: 0x2001_1124,
        flags: UNTRUSTED,
    },
];

/// The filesystem called `name` in [`FILESYSTEMS`].
pub fn filesystem(name: &str) -> Option<&'static Filesystem> {
    FILESYSTEMS
        .iter()
        .find(|f| f.name.as_bytes() == name.as_bytes())
}

/// Capacity of the `AUTHZ_FS` map.
pub const MAX_FILESYSTEMS: u32 = 128;

/// Per-inode digest cache entry (the `AUTHZ_DIGESTS` inode storage).
///
/// A digest is used only while the inode's change time, size and i_version
/// still equal the values read *before* it was computed; but the cache does not
/// rely on those moving: every content change drops the entry (an open for
/// writing, a setattr that changes the size), and no entry is made while the
/// file has a writer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheEntry {
    pub digest: Digest,
    pub ctime_sec: u64,
    pub size: u64,
    pub version: u64,
    pub ctime_nsec: u32,
    /// [`cache_flags`].
    pub flags: u32,
}

/// Flags of a [`CacheEntry`].
pub mod cache_flags {
    /// The entry holds a digest.
    pub const DIGEST: u32 = 1 << 0;
    /// The file's size changed by path (no open file, so IMA, which forgets
    /// a measurement only when a writer closes the file, keeps it): `digest`
    /// holds the measurement IMA had then, which no exec may trust.
    pub const IMA_STALE: u32 = 1 << 1;
}

/// Per-task lineage label (the `TASK_LABELS` task storage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskLabel {
    /// Permit the task's current image was started under (zero: none).
    pub permit_id: [u8; ARTIFACT_ID_LEN],
    /// Permit of an exec in progress, made current when the exec commits.
    pub pending_id: [u8; ARTIFACT_ID_LEN],
    /// 1 once an exec's check recorded `pending_id` (and `pending_flags`).
    pub pending: u32,
    /// [`label_flags`] of the task's current image.
    pub flags: u32,
    /// [`label_flags`] the exec in progress would give, made current on commit.
    pub pending_flags: u32,
    pub _reserved: u32,
}

/// Flags of a [`TaskLabel`].
pub mod label_flags {
    /// The image runs under a permit that grants executable memory (a JIT).
    pub const EXEC_MEMORY: u32 = 1 << 0;
    /// The image is an authz agent (its digest is in `authz_agents`).
    pub const AGENT: u32 = 1 << 1;
}

/// Values of the `authz_agents` map.
pub mod agent_code {
    /// An agent binary: a task exec'd from it is an agent.
    pub const BINARY: u32 = 1;
    /// Code an agent maps (its loader and libraries); exec'ing it makes no
    /// agent.
    pub const LIBRARY: u32 = 2;
}

/// Kinds of object in the `authz_own` map: what lockdown guards.
pub mod own {
    pub const MAP: u32 = 1;
    pub const PROG: u32 = 2;
    pub const LINK: u32 = 3;
    /// A bpffs directory holding authz's pins (by inode number).
    pub const PIN_DIR: u32 = 4;
    /// The bpffs superblock holding authz's pins (by `s_dev`).
    pub const PIN_FS: u32 = 5;
    /// A pinned object's inode on that superblock (by inode number): opening
    /// it (`BPF_OBJ_GET`) through any path, bind mount or chroot is refused.
    pub const PIN: u32 = 6;
}

/// Key of the `authz_own` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OwnKey {
    /// One of [`own`].
    pub kind: u32,
    pub _pad: u32,
    /// The object's id (map, program, link), inode number or device.
    pub id: u64,
}

/// Capacity of the `authz_own` map.
pub const MAX_OWN: u32 = 256;
/// Capacity of the `authz_revoked` map: revocations kept where only the
/// agent can change them, so deleting the state directory's list brings
/// nothing back.
pub const MAX_REVOKED: u32 = 65_536;
/// Capacity of the `authz_agents` map (agent binaries and the libraries they map).
pub const MAX_AGENTS: u32 = 256;

/// Most trust roots whose key ids lockdown records (a signed unlock or
/// agent adoption must come from one of them).
pub const MAX_LOCK_ROOTS: usize = 16;

/// What lockdown needs to know beyond [`OwnKey`]s: element 0 of `authz_guard`.
/// The kernel reads only `pin_dir`; the rest is the state lockdown was
/// entered with, kept where only the agent can change it (this map is guarded
/// like every other), so an agent started later with a different
/// configuration, trust roots or host identity cannot quietly weaken it.
/// The kernel programs do not read it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guard {
    /// SHA-256 of the configuration file lockdown was entered with.
    pub config_digest: [u8; DIGEST_LEN],
    /// SHA-256 of the host identity (`/etc/machine-id`) at that time.
    pub host_digest: [u8; DIGEST_LEN],
    /// Key ids of the trust roots at that time (`roots` of them used).
    pub root_key_ids: [[u8; DIGEST_LEN]; MAX_LOCK_ROOTS],
    /// When lockdown began (Unix seconds, the agent's clock): a statement
    /// issued before it cannot end this lockdown.
    pub locked_at: u64,
    pub roots: u32,
    pub _pad: u32,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            config_digest: [0; DIGEST_LEN],
            host_digest: [0; DIGEST_LEN],
            root_key_ids: [[0; DIGEST_LEN]; MAX_LOCK_ROOTS],
            locked_at: 0,
            roots: 0,
            _pad: 0,
        }
    }
}

/// `BPF_FS_MAGIC`: bpffs.
pub const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// `bpf(2)` commands and `union bpf_attr` offsets the `bpf` hook reads
/// (include/uapi/linux/bpf.h: stable ABI).
pub mod bpf_cmd {
    pub const PROG_LOAD: u32 = 5;
    pub const LINK_GET_FD_BY_ID: u32 = 30;
    /// `BPF_PROG_TYPE_TRACING`.
    pub const PROG_TYPE_TRACING: u32 = 26;
    /// `BPF_PROG_TYPE_LSM`.
    pub const PROG_TYPE_LSM: u32 = 29;
    /// `BPF_MODIFY_RETURN`: a tracing program that can change a return value.
    pub const ATTACH_MODIFY_RETURN: u32 = 26;
    /// `prog_load.prog_type`, `.expected_attach_type`.
    pub const OFF_PROG_TYPE: u64 = 0;
    pub const OFF_EXPECTED_ATTACH_TYPE: u64 = 68;
    /// `link_id` of `BPF_LINK_GET_FD_BY_ID`.
    pub const OFF_LINK_ID: u64 = 0;
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
    /// Position of this event among every event the kernel put on the ring in
    /// this epoch (`AUTHZ_SEQ`): a gap in what the agent logged is visible.
    pub seq: u64,
    /// Random id of the loaded copy of the programs that decided (set at load),
    /// so the self-test can tell new programs from the ones they replace.
    pub instance: u64,
    /// Which check decided ([`hook`]).
    pub hook: u32,
    pub _pad: u32,
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
            seq: 0,
            instance: 0,
            hook: 0,
            _pad: 0,
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
const _: () = assert!(core::mem::size_of::<Config>() == 4 + 4 + 8 + 4 * 4);
const _: () = assert!(core::mem::size_of::<PermitKey>() == DIGEST_LEN + 8);
const _: () = assert!(core::mem::size_of::<Permit>() == 2 * 8 + 2 * ARTIFACT_ID_LEN);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 37 * 4);
const _: () = assert!(core::mem::size_of::<ScopeKey>() == 2 * 4 + SCOPE_NAME_LEN);
const _: () = assert!(core::mem::size_of::<ScopeNode>() == 2 * 4);
const _: () = assert!(core::mem::size_of::<OwnKey>() == 2 * 4 + 8);
const _: () = assert!(
    core::mem::size_of::<Guard>() == 2 * DIGEST_LEN + MAX_LOCK_ROOTS * DIGEST_LEN + 8 + 2 * 4
);
const _: () = assert!(core::mem::size_of::<CacheEntry>() == DIGEST_LEN + 3 * 8 + 2 * 4);
const _: () = assert!(core::mem::size_of::<TaskLabel>() == 2 * ARTIFACT_ID_LEN + 4 * 4);
const _: () = assert!(
    core::mem::size_of::<ExecEvent>()
        == 6 * 8 + 12 * 4 + DIGEST_LEN + 2 * ARTIFACT_ID_LEN + COMM_LEN + 2 * FILENAME_LEN
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
    // SAFETY: as above.
    unsafe impl aya::Pod for ScopeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ScopeNode {}
    // SAFETY: as above.
    unsafe impl aya::Pod for OwnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Guard {}
}
