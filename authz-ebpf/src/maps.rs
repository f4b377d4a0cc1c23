//! State shared with the agent. The agent writes permits, configuration,
//! scope and filesystem policy; the program writes events, counters, the
//! digest cache and lineage labels. Every map is named `authz_*` (the kernel
//! keeps 15 characters), so `bpftool map show` says whose it is.
use authz_common::{
    counter, seq, CacheEntry, Config, Digest, Guard, OwnKey, Permit, PermitKey, ScopeKey,
    ScopeNode, TaskLabel, MAX_FILESYSTEMS, MAX_SCOPE_NODES,
};
use aya_ebpf::bindings::{
    bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE, task_struct, BPF_F_NO_PREALLOC,
    BPF_LOCAL_STORAGE_GET_F_CREATE,
};
use aya_ebpf::helpers::generated::bpf_task_storage_get;
use aya_ebpf::{
    btf_maps::InodeStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};

/// Capacity of `authz_own` (maps, programs, links, pin directories).
pub const MAX_OWN: u32 = authz_common::MAX_OWN;
/// Capacity of `authz_agents`.
pub const MAX_AGENTS: u32 = authz_common::MAX_AGENTS;

/// Default capacity of the permit map; the agent may resize it before load.
pub const MAX_PERMITS: u32 = authz_common::DEFAULT_MAX_PERMITS;

/// Permits by (digest, cgroup id).
#[map(name = "authz_permits")]
pub static PERMITS: HashMap<PermitKey, Permit> = HashMap::with_max_entries(MAX_PERMITS, 0);

/// Mapping permits by (digest, cgroup id): files that may be mapped
/// executable (libraries, the loader) but not exec'd. A file with an exec
/// permit may be mapped too. Not preallocated: most hosts hold few.
#[map(name = "authz_mappings")]
pub static MAPPINGS: HashMap<PermitKey, Permit> =
    HashMap::with_max_entries(MAX_PERMITS, BPF_F_NO_PREALLOC);

/// Executable-memory grants by (digest, cgroup id): a process exec'd from
/// this binary in this cgroup may make memory executable (a JIT).
#[map(name = "authz_jit")]
pub static JIT: HashMap<PermitKey, Permit> =
    HashMap::with_max_entries(MAX_PERMITS, BPF_F_NO_PREALLOC);

/// Digests that hold at least one permit in some cgroup (value: how many), so a
/// refusal can say "wrong cgroup" rather than "no permit".
#[map(name = "authz_digests")]
pub static DIGESTS: HashMap<Digest, u32> = HashMap::with_max_entries(MAX_PERMITS, 0);

/// The enforced subtrees as a trie of cgroup directory names, when the scope
/// is `SUBTREES` (see `authz_common::ScopeKey`).
#[map(name = "authz_scope")]
pub static SCOPE: HashMap<ScopeKey, ScopeNode> = HashMap::with_max_entries(MAX_SCOPE_NODES, 0);

/// What each filesystem (by superblock magic) may do: `authz_common::fs_flags`.
/// A magic that is not here may do nothing.
#[map(name = "authz_fs")]
pub static FILESYSTEMS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_FILESYSTEMS, 0);

/// authz's own BPF objects and pin locations, for lockdown
/// (`authz_common::own`).
#[map(name = "authz_own")]
pub static OWN: HashMap<OwnKey, u32> = HashMap::with_max_entries(MAX_OWN, 0);

/// Digests of the authorized agent code (`authz_common::agent_code`): a task
/// exec'd from an agent binary is an agent (`label_flags::AGENT`); under
/// lockdown an agent maps as code only files listed here.
#[map(name = "authz_agents")]
pub static AGENTS: HashMap<Digest, u32> = HashMap::with_max_entries(MAX_AGENTS, 0);

/// Element 0: the state lockdown was entered with. Only the agent reads it;
/// it lives here so that only the agent can change it.
#[map(name = "authz_guard")]
pub static GUARD: Array<Guard> = Array::with_max_entries(1, 0);

/// Revoked artifact and delegation ids (value: Unix seconds after which the
/// entry may go, 0 never). Only the agent reads it: it keeps revocations
/// where only the agent can remove them.
#[map(name = "authz_revoked")]
pub static REVOKED: HashMap<[u8; authz_common::ARTIFACT_ID_LEN], u64> =
    HashMap::with_max_entries(authz_common::MAX_REVOKED, BPF_F_NO_PREALLOC);

/// Element 0: the runtime [`Config`].
#[map(name = "authz_config")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Element 0: this copy's `authz_common::role`. Never pinned: each load has
/// its own, so a new copy can be proven before it takes over.
#[map(name = "authz_role")]
pub static ROLE: Array<u32> = Array::with_max_entries(1, 0);

/// Event sequence numbers and their epoch (`authz_common::seq`).
#[map(name = "authz_seq")]
pub static SEQ: Array<u64> = Array::with_max_entries(seq::SLOTS, 0);

/// Per-CPU decision counters, indexed by `authz_common::counter`.
#[map(name = "authz_counters")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Decision events for the agent. Enforcement never waits on it: when it is
/// full the event is dropped and `EVENTS_DROPPED` counts it.
#[map(name = "authz_events")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(authz_common::EVENT_RING_BYTES, 0);

/// Digest of each executed file, kept with the inode itself (freed with it),
/// so a binary is hashed once rather than at every exec.
#[btf_map(name = "authz_cache")]
pub static DIGEST_CACHE: InodeStorage<CacheEntry> = InodeStorage::new();

/// BTF definition of a task storage map (aya-ebpf 0.2 has none): the layout
/// libbpf and aya's loader read from the `.maps` section.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders the loader patches; Rust never reads them.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The value stored for `task`; with `init`, created from it when absent.
    ///
    /// # Safety
    /// `task` must be a BTF `struct task_struct *` the verifier trusts.
    #[inline(always)]
    pub unsafe fn get(&self, task: *mut task_struct, init: Option<&mut T>) -> *mut T {
        let (value, flags) = match init {
            Some(v) => (v as *mut T, BPF_LOCAL_STORAGE_GET_F_CREATE as u64),
            None => (core::ptr::null_mut(), 0),
        };
        // SAFETY: `self` is a map definition; the helper checks `task`.
        unsafe {
            bpf_task_storage_get(
                core::ptr::from_ref(self).cast_mut().cast(),
                task.cast(),
                value.cast(),
                flags,
            )
        }
        .cast()
    }
}

/// Lineage: the permit each task's image was started under.
#[btf_map(name = "authz_labels")]
pub static TASK_LABELS: TaskStorage<TaskLabel> = TaskStorage::new();

/// Adds one to a counter.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(ptr) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: `ptr` points at this CPU's u64 slot of a live map value. The
        // program runs with migration disabled, so the slot stays this CPU's; the
        // BPF target has no atomic RMW in Rust's core, so a preemption between load
        // and store could lose an increment (rare, and only ever undercounts).
        unsafe { *ptr += 1 };
    }
}

/// The runtime configuration. Fails closed: with no readable configuration the
/// mode is 0, which the program treats as enforce.
#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(config) => *config,
        None => Config::default(),
    }
}

/// This copy's role; [`role::ACTIVE`](authz_common::role::ACTIVE) unless the
/// agent put it on probation.
#[inline(always)]
pub fn role() -> u32 {
    match ROLE.get(0) {
        Some(role) => *role,
        None => authz_common::role::ACTIVE,
    }
}

/// What the filesystem with superblock magic `magic` may do (0: nothing).
#[inline(always)]
pub fn fs_flags(magic: u64) -> u32 {
    // SAFETY: the value is copied out at once.
    match unsafe { FILESYSTEMS.get(&magic) } {
        Some(flags) => *flags,
        None => 0,
    }
}

/// Takes the next event sequence number (atomically: several CPUs decide at
/// once). 0 when the map cannot be read, which the agent treats as "unknown".
#[inline(always)]
pub fn next_seq() -> u64 {
    match SEQ.get_ptr_mut(seq::NEXT) {
        Some(ptr) => {
            let mut value: u64 = 1;
            // `AtomicU64::fetch_add` is not offered on the BPF target (no
            // compare-and-swap), and LLVM emits BPF's atomic fetch-and-add
            // (kernel 5.12+) only for CPU v3, which aya-build's fixed flags do
            // not select: so the one instruction is written out.
            // SAFETY: `ptr` points at a live, 8-byte aligned u64 map value that
            // only atomic operations touch; the instruction adds `value` to it
            // and leaves the previous value in `value`.
            unsafe {
                core::arch::asm!(
                    "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
                    p = in(reg) ptr,
                    v = inout(reg) value,
                    options(nostack),
                );
            }
            value + 1
        }
        None => 0,
    }
}
