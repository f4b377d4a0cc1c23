//! The kernel side, seen from userspace: loading and attaching the BPF LSM
//! program, and reading and writing its maps.
//!
//! [`Enforcer`] is the one owner of the loaded [`aya::Ebpf`] object. The daemon
//! wraps it in an actor task; tests and the `check` command use it directly.
pub mod batch;
pub mod btf;
pub mod clock;
pub mod event;
mod lock;
pub mod pin;
pub mod preflight;
pub mod scope;
pub mod selftest;

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    time::{Duration, Instant},
};

use authz_common::{
    counter, mode, own, role, scope as scope_kind, seq, Config, Digest, Guard, OwnKey, Permit,
    PermitKey, ScopeKey, ScopeNode,
};
use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{Lsm, ProgramError},
    Ebpf, EbpfLoader,
};

pub use clock::{boot_time_ns, wall_to_boot_ns};
pub use event::{Decision, DecisionEvent, Reason};
pub use lock::{locked_out, not_an_agent, pinned_lockdown, Unlocked};
pub use preflight::{KernelSupport, PreflightError};

/// The BPF object built from `authz-ebpf` by build.rs.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/authz"));

/// The LSM programs attached, each named for its hook, in attach order: the
/// cache invalidation (`file_open`, `inode_setattr`) and lineage bookkeeping
/// are in place before the first decision. `inode_setattr` is replaced by
/// `inode_setattr_idmap` on kernels whose hook has a leading `idmap`.
pub(crate) const PROGRAMS: [&str; 15] = [
    "file_open",
    SETATTR,
    "task_alloc",
    "bprm_committed_creds",
    "bprm_check_security",
    "mmap_file",
    "file_mprotect",
    "ptrace_access_check",
    "bpf",
    "bpf_map",
    "bpf_prog",
    "inode_unlink",
    "inode_rename",
    "inode_rmdir",
    "sb_umount",
];
const SETATTR: &str = "inode_setattr";
/// Lockdown's guard on opening pinned objects: it runs on every path lookup
/// on the host, so it is attached only while lockdown is on.
pub(crate) const INODE_PERMISSION: &str = "inode_permission";
/// The program `probe` loads: the smallest.
const PROBE_PROGRAM: &str = "bprm_committed_creds";
const SETATTR_IDMAP: &str = "inode_setattr_idmap";
/// Most threads loading programs at once.
const MAX_LOAD_THREADS: usize = 4;

/// The programs the verifier takes longest over, costliest first (measured:
/// together nine tenths of the loading time); loading starts with them so
/// that no thread is left with one of them at the end.
const VERIFIER_HEAVY: [&str; 3] = [HOOK, "mmap_file", "file_mprotect"];

/// Higher for a program that is costlier to verify.
fn verifier_cost_rank(name: &str) -> usize {
    VERIFIER_HEAVY
        .iter()
        .position(|h| *h == name)
        .map_or(0, |i| VERIFIER_HEAVY.len() - i)
}

/// Every program the object has (both `inode_setattr` variants), for
/// finding and removing pins.
pub(crate) const ALL_PROGRAMS: [&str; 17] = [
    "file_open",
    SETATTR,
    SETATTR_IDMAP,
    "task_alloc",
    "bprm_committed_creds",
    "bprm_check_security",
    "mmap_file",
    "file_mprotect",
    "ptrace_access_check",
    "bpf",
    "bpf_map",
    "bpf_prog",
    "inode_unlink",
    "inode_rename",
    "inode_rmdir",
    "sb_umount",
    INODE_PERMISSION,
];

/// Which permit map a row lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PermitUse {
    /// `authz_permits`: exec (and mapping) of the binary.
    Exec,
    /// `authz_mappings`: mapping only (a library, the loader).
    Map,
    /// `authz_jit`: the binary's processes may make memory executable.
    ExecMemory,
}

impl PermitUse {
    pub fn map_name(self) -> &'static str {
        match self {
            PermitUse::Exec => maps::PERMITS,
            PermitUse::Map => maps::MAPPINGS,
            PermitUse::ExecMemory => maps::JIT,
        }
    }
}

/// The object's maps, by the name the kernel shows (`bpftool map show`).
pub mod maps {
    pub const CONFIG: &str = "authz_config";
    pub const PERMITS: &str = "authz_permits";
    pub const MAPPINGS: &str = "authz_mappings";
    pub const JIT: &str = "authz_jit";
    pub const OWN: &str = "authz_own";
    pub const AGENTS: &str = "authz_agents";
    pub const GUARD: &str = "authz_guard";
    pub const REVOKED: &str = "authz_revoked";
    pub const DIGESTS: &str = "authz_digests";
    pub const SCOPE: &str = "authz_scope";
    pub const FILESYSTEMS: &str = "authz_fs";
    pub const SEQ: &str = "authz_seq";
    pub const ROLE: &str = "authz_role";
    pub const COUNTERS: &str = "authz_counters";
    pub const EVENTS: &str = "authz_events";
    pub const DIGEST_CACHE: &str = "authz_cache";
    pub const TASK_LABELS: &str = "authz_labels";
}
const HOOK: &str = "bprm_check_security";

/// Size of the event ring buffer unless configured (as in authz-ebpf's maps.rs).
pub const DEFAULT_RING_BYTES: u32 = authz_common::EVENT_RING_BYTES;
/// Ring of the throw-away copy `probe` loads (one page: the smallest allowed).
const PROBE_RING_BYTES: u32 = 4096;

/// `EPERM`, as the kernel returns it from `BPF_PROG_LOAD`.
const EPERM: i32 = libc::EPERM;

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error("this kernel cannot run authz")]
    Preflight(#[from] PreflightError),
    #[error("cannot read kernel struct layouts")]
    Btf(#[from] btf::BtfError),
    #[error("cannot load the BPF object (maps or relocations)")]
    Object(#[source] aya::EbpfError),
    #[error("the BPF object has no program `{0}` (a build problem)")]
    MissingProgram(&'static str),
    #[error("the BPF object has no map `{0}` (a build problem)")]
    MissingMap(&'static str),
    #[error(
        "the kernel refused to load the BPF LSM program (BPF_PROG_LOAD returned EPERM with an \
         empty verifier log) although `bpf` is an active LSM: this kernel does not allow programs \
         that attach through BPF trampolines (lsm/, fentry/), so authz cannot enforce here; {}",
        preflight::VM_HINT
    )]
    TrampolineRefused,
    #[error("the kernel's verifier rejected the BPF LSM program ({errno}); last lines of its log:\n{log}")]
    Verifier { errno: io::Error, log: String },
    #[error("cannot attach the BPF LSM program to {0}")]
    Attach(&'static str, #[source] ProgramError),
    #[error("cannot load the BPF LSM program")]
    Program(#[source] ProgramError),
    #[error("BPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the permit map is full ({0} entries)")]
    PermitsFull(u32),
    #[error("the enforcement self-test failed")]
    SelfTest(#[from] selftest::SelfTestError),
    #[error("cannot pin the enforcement state")]
    Pin(#[from] pin::PinError),
    #[error("enforce_cgroups")]
    Scope(#[from] scope::ScopeError),
    #[error("the new programs failed their self-test; the programs that were enforcing before keep enforcing")]
    NewProgramsFailed(#[source] Box<EnforcerError>),
    #[error(
        "the kernel is locked down and this binary (sha256 {digest}) is not an authorized agent: \
         the kernel keeps enforcing; to run a new agent binary, submit a signed adopt-agent \
         statement to the running agent (`authz-agent lockdown adopt`)"
    )]
    NotAnAgent { digest: String },
    #[error("lockdown")]
    Lock(#[from] crate::lockdown::LockError),
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> EnforcerError {
    move |source| EnforcerError::Map { map, source }
}

/// Enforcement mode.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Allow everything; decide nothing.
    Off,
    /// Decide and report every exec, but allow it.
    #[default]
    Audit,
    /// Refuse every exec without a valid permit.
    Enforce,
}

impl Mode {
    pub fn raw(self) -> u32 {
        match self {
            Mode::Off => mode::OFF,
            Mode::Audit => mode::AUDIT,
            Mode::Enforce => mode::ENFORCE,
        }
    }

    /// Any value the kernel does not know means enforce there, so here too.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            mode::OFF => Mode::Off,
            mode::AUDIT => Mode::Audit,
            _ => Mode::Enforce,
        }
    }

    pub fn as_str(self) -> &'static str {
        mode::name(self.raw())
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to load the enforcer.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Mode set before the program is attached.
    pub mode: Mode,
    /// Run the self-test after attaching (an exec that must be refused).
    pub selftest: bool,
    /// Where cgroup v2 is mounted.
    pub cgroup_root: std::path::PathBuf,
    /// Capacity of the permit map.
    pub max_permits: u32,
    /// cgroup paths of the subtrees to enforce (`/jobs.slice`); empty = the
    /// whole host. The kernel matches them by path at every exec, so they need
    /// not exist. Applied before the program is attached.
    pub enforced_paths: Vec<String>,
    /// Superblock magics trusted for exec beyond the built-in local
    /// filesystems (`trusted_filesystems` in the config).
    pub trusted_filesystems: Vec<u64>,
    /// Which allowed execs send an event (`authz_common::sample`).
    pub allowed_sample: u32,
    /// Files mapped executable: off, audit or enforce (within `mode`).
    pub libraries: Mode,
    /// Executable memory no file backs: off (allow), audit or enforce (deny).
    pub exec_memory: Mode,
    /// Size of the decision event ring buffer in bytes (a power of two, at
    /// least a page); `None` keeps the built-in 1 MiB.
    pub event_ring_bytes: Option<u32>,
    /// Pin maps and links under this bpffs directory, so enforcement outlives
    /// the process and a restart re-adopts it. `None`: everything is detached
    /// when the [`Enforcer`] is dropped (tests, `check`).
    pub pin_dir: Option<std::path::PathBuf>,
    /// Lockdown is wanted (the config's `lockdown`): its path guard is
    /// attached with the rest.
    pub lockdown: bool,
    /// What a locked kernel checks this start against (see
    /// [`crate::lockdown`]); `None` admits nothing into a locked kernel.
    pub admission: Option<Admission>,
}

/// What an agent starting against a locked kernel brings.
#[derive(Clone, Debug)]
pub struct Admission {
    pub config_path: std::path::PathBuf,
    /// SHA-256 of the configuration file's bytes.
    pub config_digest: Digest,
    /// A signed unlock statement: admits another configuration, and ends
    /// lockdown.
    pub unlock: Option<crate::vocab::statement::Statement>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Audit,
            selftest: true,
            cgroup_root: crate::defaults::CGROUP_ROOT.into(),
            max_permits: authz_common::DEFAULT_MAX_PERMITS,
            enforced_paths: Vec::new(),
            trusted_filesystems: Vec::new(),
            allowed_sample: authz_common::sample::ALL,
            libraries: Mode::Off,
            exec_memory: Mode::Off,
            event_ring_bytes: None,
            pin_dir: None,
            lockdown: false,
            admission: None,
        }
    }
}

/// Per-CPU counters summed over CPUs, by name.
pub type Counters = BTreeMap<&'static str, u64>;

/// The loaded and attached kernel program, and its maps.
pub struct Enforcer {
    ebpf: Ebpf,
    config_map: Array<MapData, Config>,
    permits: HashMap<MapData, PermitKey, Permit>,
    mappings: HashMap<MapData, PermitKey, Permit>,
    jit: HashMap<MapData, PermitKey, Permit>,
    digests: HashMap<MapData, Digest, u32>,
    scope: HashMap<MapData, ScopeKey, ScopeNode>,
    filesystems: HashMap<MapData, u64, u32>,
    seq: Array<MapData, u64>,
    role: Array<MapData, u32>,
    /// This copy's id, in every event it sends.
    instance: u64,
    /// Epoch of the sequence numbers in the (possibly adopted) maps.
    epoch: u64,
    /// The programs this kernel gets, in attach order.
    programs: Vec<&'static str>,
    /// The enforced subtrees last written (empty: the whole host).
    scope_paths: Vec<String>,
    /// The extra filesystems trusted, as last written.
    trusted_filesystems: Vec<u64>,
    /// Ids of every map of the object.
    map_ids: Vec<u32>,
    /// The links this agent attached and pinned: holding them keeps the
    /// programs attached even if the pins are removed.
    held_links: Vec<(&'static str, aya::programs::links::FdLink)>,
    own: HashMap<MapData, OwnKey, u32>,
    agents: HashMap<MapData, Digest, u32>,
    guard: Array<MapData, Guard>,
    revoked: HashMap<MapData, [u8; authz_common::ARTIFACT_ID_LEN], u64>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    pending: VecDeque<DecisionEvent>,
    config: Config,
    max_permits: u32,
    support: KernelSupport,
    pin_dir: Option<std::path::PathBuf>,
    layout: pin::Layout,
    adopted: bool,
    /// The statement this start ended lockdown with.
    unlocked: Option<Unlocked>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("config", &self.config)
            .field("support", &self.support)
            .finish_non_exhaustive()
    }
}

impl Enforcer {
    /// Checks the kernel, loads the program with this kernel's struct offsets,
    /// sets the mode, attaches, and (by default) proves with a self-test that the
    /// hook fires and refuses.
    #[tracing::instrument(name = "enforcer_load", skip_all, fields(mode = %opts.mode))]
    pub fn load(opts: &LoadOptions) -> Result<Self, EnforcerError> {
        let mut enforcer = Self::open(opts)?;
        enforcer.attach(opts)?;
        Ok(enforcer)
    }

    /// Checks the kernel and loads the object with this kernel's offsets:
    /// maps exist (created, or reused from the pin directory), nothing is
    /// attached yet. With fresh maps the mode and scope from `opts` are written
    /// now; with reused (pinned) maps the mode in force is kept, so a restart
    /// never changes what the kernel enforces. Call [`Enforcer::attach`] next.
    #[tracing::instrument(name = "enforcer_open", skip_all, fields(mode = %opts.mode))]
    pub fn open(opts: &LoadOptions) -> Result<Self, EnforcerError> {
        let support = preflight::check()?;
        let layout_facts = btf::running_kernel_layout()?;
        let offsets = layout_facts.offsets;
        let mut programs = PROGRAMS.to_vec();
        if layout_facts.setattr_idmap {
            programs[1] = SETATTR_IDMAP;
        }
        let ring_bytes = opts.event_ring_bytes.unwrap_or(DEFAULT_RING_BYTES);
        let layout = pin::Layout::new(opts.max_permits, ring_bytes);
        let instance = u64::from_ne_bytes(selftest::rand_bytes());
        let mut loader = EbpfLoader::new();
        loader
            // The task storage map has no typed wrapper in aya 0.14; the kernel
            // program is its only user.
            .allow_unsupported_maps()
            .override_global("OFFSETS", &offsets, true)
            .override_global("INSTANCE", &instance, true)
            .map_max_entries(maps::PERMITS, opts.max_permits)
            .map_max_entries(maps::MAPPINGS, opts.max_permits)
            .map_max_entries(maps::JIT, opts.max_permits)
            .map_max_entries(maps::DIGESTS, opts.max_permits)
            .map_max_entries(maps::EVENTS, ring_bytes);
        let mut adopted = false;
        let pin_paths: Vec<(&'static str, std::path::PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                preflight::ensure_bpffs().map_err(pin::PinError::Bpffs)?;
                let maps_dir = layout.maps_dir(dir);
                match std::fs::symlink_metadata(maps_dir.join(maps::CONFIG)) {
                    Ok(_) => adopted = true,
                    // Under lockdown the kernel refuses the pinned objects'
                    // paths to anything but recorded agent code: say so
                    // rather than fail later on whatever it refuses next.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        return Err(lock::not_an_agent());
                    }
                    Err(_) => {}
                }
                std::fs::create_dir_all(&maps_dir)
                    .map_err(|e| pin::PinError::Io(maps_dir.clone(), e))?;
                pin::MAPS
                    .iter()
                    .map(|name| (*name, maps_dir.join(name)))
                    .collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = match loader.load(BPF_OBJECT) {
            Ok(ebpf) => ebpf,
            // Under lockdown the kernel hands pinned maps only to agents.
            Err(e) if adopted && lock::refused_by_lockdown(&e) => {
                return Err(lock::not_an_agent());
            }
            Err(e) => return Err(EnforcerError::Object(e)),
        };

        let map_ids: Vec<u32> = ebpf
            .maps()
            .filter_map(|(_, m)| map_data(m).info().ok().map(|i| i.id()))
            .collect();
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(EnforcerError::MissingMap(name));
        let config_map: Array<MapData, Config> =
            Array::try_from(take(maps::CONFIG)?).map_err(map_err(maps::CONFIG))?;
        let permits = HashMap::try_from(take(maps::PERMITS)?).map_err(map_err(maps::PERMITS))?;
        let mappings = HashMap::try_from(take(maps::MAPPINGS)?).map_err(map_err(maps::MAPPINGS))?;
        let jit = HashMap::try_from(take(maps::JIT)?).map_err(map_err(maps::JIT))?;
        let digests = HashMap::try_from(take(maps::DIGESTS)?).map_err(map_err(maps::DIGESTS))?;
        let scope_map = HashMap::try_from(take(maps::SCOPE)?).map_err(map_err(maps::SCOPE))?;
        let filesystems =
            HashMap::try_from(take(maps::FILESYSTEMS)?).map_err(map_err(maps::FILESYSTEMS))?;
        let seq_map: Array<MapData, u64> =
            Array::try_from(take(maps::SEQ)?).map_err(map_err(maps::SEQ))?;
        let role_map = Array::try_from(take(maps::ROLE)?).map_err(map_err(maps::ROLE))?;
        let counters =
            PerCpuArray::try_from(take(maps::COUNTERS)?).map_err(map_err(maps::COUNTERS))?;
        let own = HashMap::try_from(take(maps::OWN)?).map_err(map_err(maps::OWN))?;
        let agents = HashMap::try_from(take(maps::AGENTS)?).map_err(map_err(maps::AGENTS))?;
        let guard = Array::try_from(take(maps::GUARD)?).map_err(map_err(maps::GUARD))?;
        let revoked = HashMap::try_from(take(maps::REVOKED)?).map_err(map_err(maps::REVOKED))?;
        let events = RingBuf::try_from(take(maps::EVENTS)?).map_err(map_err(maps::EVENTS))?;

        let config = if adopted {
            let mut c = config_map.get(&0, 0).map_err(map_err(maps::CONFIG))?;
            c.selftest_cgroup_id = 0;
            tracing::info!(
                mode = mode::name(c.mode),
                "re-adopting pinned enforcement state"
            );
            c
        } else {
            Config {
                mode: opts.mode.raw(),
                scope: scope_kind::HOST,
                ..Config::default()
            }
        };
        let config = Config {
            allowed_sample: opts.allowed_sample,
            libraries: opts.libraries.raw(),
            exec_memory: opts.exec_memory.raw(),
            ..config
        };
        let mut enforcer = Self {
            ebpf,
            config_map,
            permits,
            mappings,
            jit,
            digests,
            scope: scope_map,
            filesystems,
            seq: seq_map,
            role: role_map,
            instance,
            epoch: 0,
            programs,
            scope_paths: Vec::new(),
            trusted_filesystems: Vec::new(),
            map_ids,
            held_links: Vec::new(),
            own,
            agents,
            guard,
            revoked,
            counters,
            events: Some(events),
            pending: VecDeque::new(),
            config,
            max_permits: opts.max_permits,
            support,
            pin_dir: opts.pin_dir.clone(),
            layout,
            adopted,
            unlocked: None,
        };
        enforcer.epoch = enforcer.ensure_epoch()?;
        // A locked kernel takes nothing from this start that lockdown did not
        // begin with, unless a signed statement ends it.
        if adopted && enforcer.config.lockdown == 1 {
            enforcer.admit(opts)?;
        }
        // The configuration is in place before the hook can fire.
        enforcer.set_filesystems(&opts.trusted_filesystems)?;
        enforcer.set_scope(&opts.enforced_paths)?;
        Ok(enforcer)
    }

    /// The epoch of the event sequence numbers: kept from adopted maps,
    /// chosen now for fresh ones.
    fn ensure_epoch(&mut self) -> Result<u64, EnforcerError> {
        let current = self.seq.get(&seq::EPOCH, 0).map_err(map_err(maps::SEQ))?;
        if current != 0 {
            return Ok(current);
        }
        let epoch = u64::from_ne_bytes(selftest::rand_bytes()).max(1);
        self.seq
            .set(seq::EPOCH, epoch, 0)
            .map_err(map_err(maps::SEQ))?;
        Ok(epoch)
    }

    /// Random id of this loaded copy (in every event it sends).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Epoch of the event sequence numbers (new with fresh maps).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Can this kernel run authz? Loads the object and one program (the
    /// verifier runs) without attaching anything, then unloads. This is what
    /// turns "this kernel refuses trampoline programs" into an error before
    /// anything else is read or changed.
    pub fn probe() -> Result<KernelSupport, EnforcerError> {
        let mut probe = Self::open(&LoadOptions {
            mode: Mode::Off,
            selftest: false,
            max_permits: 16,
            event_ring_bytes: Some(PROBE_RING_BYTES),
            ..LoadOptions::default()
        })?;
        // One small program answers the question (trampoline programs load
        // or not); verifying all of them twice would only slow a start.
        let kernel_btf =
            btf::aya_kernel().map_err(|e| EnforcerError::Object(aya::EbpfError::BtfError(e)))?;
        probe
            .lsm(PROBE_PROGRAM)?
            .load(PROBE_PROGRAM, &kernel_btf)
            .map_err(classify_load_error)?;
        Ok(probe.support.clone())
    }

    /// Loads every program into the kernel (the verifier runs here) against
    /// the running kernel's BTF; nothing is attached yet.
    ///
    /// The verifier runs in the loading thread and, for a privileged loader,
    /// under no global lock, so the programs are loaded by a few threads at
    /// once, the costliest first: under emulation the three decision
    /// programs take seconds each, and every start waits for them.
    #[tracing::instrument(level = "debug", skip_all, fields(programs = self.programs.len()))]
    fn load_programs(&mut self) -> Result<(), EnforcerError> {
        let started = std::time::Instant::now();
        let kernel_btf =
            btf::aya_kernel().map_err(|e| EnforcerError::Object(aya::EbpfError::BtfError(e)))?;
        let wanted = self.programs.clone();
        let mut jobs: Vec<(&'static str, &mut Lsm)> = Vec::with_capacity(wanted.len());
        for (name, program) in self.ebpf.programs_mut() {
            if let Some(&name) = wanted.iter().find(|w| **w == name) {
                let lsm: &mut Lsm = program.try_into().map_err(EnforcerError::Program)?;
                jobs.push((name, lsm));
            }
        }
        if let Some(missing) = wanted.iter().find(|w| !jobs.iter().any(|(n, _)| n == *w)) {
            return Err(EnforcerError::MissingProgram(missing));
        }
        // Popped from the end: the costliest last in the vector.
        jobs.sort_by_key(|(name, _)| verifier_cost_rank(name));
        let queue = std::sync::Mutex::new(jobs);
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, MAX_LOAD_THREADS);
        let kernel_btf = &*kernel_btf;
        let results: Vec<Result<(), (&'static str, ProgramError)>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let queue = &queue;
                    s.spawn(move || loop {
                        let job = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .pop();
                        let Some((name, lsm)) = job else {
                            return Ok(());
                        };
                        let hook = if name == SETATTR_IDMAP { SETATTR } else { name };
                        let t = std::time::Instant::now();
                        lsm.load(hook, kernel_btf).map_err(|e| (name, e))?;
                        let info = lsm.info().ok();
                        tracing::debug!(
                            program = name,
                            ms = t.elapsed().as_millis() as u64,
                            verified_insns =
                                info.as_ref().and_then(|i| i.verified_instruction_count()),
                            insns = info
                                .as_ref()
                                .and_then(|i| i.size_translated())
                                .map(|b| b / 8),
                            "program verified and loaded"
                        );
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for result in results {
            if let Err((name, e)) = result {
                tracing::debug!(program = name, "program refused by the kernel");
                return Err(classify_load_error(e));
            }
        }
        tracing::info!(
            programs = wanted.len(),
            threads,
            ms = started.elapsed().as_millis() as u64,
            "BPF programs verified and loaded"
        );
        Ok(())
    }

    fn lsm(&mut self, name: &'static str) -> Result<&mut Lsm, EnforcerError> {
        self.ebpf
            .program_mut(name)
            .ok_or(EnforcerError::MissingProgram(name))?
            .try_into()
            .map_err(EnforcerError::Program)
    }

    /// Whether the maps were reused from an earlier run's pins.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Loads every program into the kernel (the verifier runs here), attaches
    /// each next to whatever copy is attached already (on probation: the new
    /// copy decides nothing but the self-test's probe), proves it with the
    /// self-test unless `opts.selftest` is false, and only then makes it
    /// decide and, when a pin directory is set, swaps the link pins
    /// (atomically replacing the previous run's, so at every instant at least
    /// one proven copy enforces).
    ///
    /// If the self-test fails, the new copy is detached and the previous one
    /// (pinned) keeps enforcing: [`EnforcerError::NewProgramsFailed`].
    pub fn attach(&mut self, opts: &LoadOptions) -> Result<(), EnforcerError> {
        let guard_paths = opts.lockdown || self.config.lockdown == 1;
        if guard_paths && !self.programs.contains(&INODE_PERMISSION) {
            self.programs.push(INODE_PERMISSION);
        }
        let loaded = self.load_programs();
        btf::forget_aya_kernel();
        loaded?;
        if opts.selftest {
            self.set_role(role::PROBATION)?;
        }
        let mut links = Vec::with_capacity(self.programs.len());
        for name in self.programs.clone() {
            let program = self.lsm(name)?;
            let link_id = program
                .attach()
                .map_err(|e| EnforcerError::Attach(name, e))?;
            links.push((name, link_id));
        }
        tracing::info!(
            hook = HOOK,
            probation = opts.selftest,
            "BPF LSM programs attached"
        );
        if opts.selftest {
            if let Err(e) = selftest::run(self, &opts.cgroup_root) {
                for (name, link_id) in links {
                    if let Ok(program) = self.lsm(name) {
                        let _ = program.detach(link_id);
                    }
                }
                if let (Some(dir), false) = (&self.pin_dir, self.adopted) {
                    // Maps made for this copy alone: nothing else uses them.
                    let _ = std::fs::remove_dir_all(self.layout.maps_dir(dir));
                }
                let kept = self.pin_dir.as_deref().is_some_and(pin::is_pinned);
                tracing::error!(
                    error = %crate::error_chain(&e),
                    previous_copy_enforcing = kept,
                    "the new programs failed their self-test and were detached"
                );
                return Err(if kept {
                    EnforcerError::NewProgramsFailed(Box::new(e))
                } else {
                    e
                });
            }
            self.set_role(role::ACTIVE)?;
        }
        if let Some(dir) = self.pin_dir.clone() {
            for (name, link_id) in links {
                let program = self.lsm(name)?;
                let link = program
                    .take_link(link_id)
                    .map_err(|e| EnforcerError::Attach(name, e))?;
                let held = pin::pin_link(&dir, name, aya::programs::links::FdLink::from(link))?;
                self.held_links.push((name, held));
            }
            pin::remove_stale_maps(&dir, &self.layout);
            pin::remove_stale_links(&dir, &self.programs);
        }
        self.register_own()?;
        Ok(())
    }

    /// Records authz's own maps, programs, links, pin directories and pin
    /// filesystem in `authz_own`, which lockdown guards.
    fn register_own(&mut self) -> Result<(), EnforcerError> {
        let mut wanted: Vec<OwnKey> = self
            .map_ids
            .iter()
            .map(|id| own_key(own::MAP, u64::from(*id)))
            .collect();
        for name in self.programs.clone() {
            if let Ok(info) = self
                .lsm(name)
                .and_then(|p| p.info().map_err(EnforcerError::Program))
            {
                wanted.push(own_key(own::PROG, u64::from(info.id())));
            }
        }
        for (_, link) in &self.held_links {
            if let Ok(info) = link.info() {
                wanted.push(own_key(own::LINK, u64::from(info.id())));
            }
        }
        if let Some(dir) = &self.pin_dir {
            use std::os::unix::fs::MetadataExt as _;
            for d in [dir.clone(), self.layout.maps_dir(dir)] {
                if let Ok(meta) = std::fs::metadata(&d) {
                    wanted.push(own_key(own::PIN_DIR, meta.ino()));
                    // The kernel's dev_t: MKDEV(major, minor) = major << 20 | minor.
                    let dev = (u64::from(libc::major(meta.dev())) << 20)
                        | u64::from(libc::minor(meta.dev()));
                    wanted.push(own_key(own::PIN_FS, dev));
                }
            }
            for d in [dir.clone(), self.layout.maps_dir(dir)] {
                for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if let Ok(meta) = entry.metadata() {
                        if meta.is_file() {
                            wanted.push(own_key(own::PIN, meta.ino()));
                        }
                    }
                }
            }
        }
        let existing: Vec<OwnKey> = self.own.keys().filter_map(Result::ok).collect();
        for key in &wanted {
            self.own.insert(key, 1, 0).map_err(map_err(maps::OWN))?;
        }
        for key in existing.iter().filter(|k| !wanted.contains(k)) {
            let _ = self.own.remove(key);
        }
        Ok(())
    }

    /// The configuration as the kernel holds it now (not as this agent last
    /// wrote it).
    pub fn kernel_config(&self) -> Result<Config, EnforcerError> {
        self.config_map.get(&0, 0).map_err(map_err(maps::CONFIG))
    }

    /// Compares what the kernel enforces with what this agent wrote, puts
    /// back whatever differs, and says what it found. Pins removed while the
    /// agent runs are put back from the link descriptors it holds.
    pub fn repair(&mut self) -> Vec<Tamper> {
        let mut found = Vec::new();
        match self.kernel_config() {
            Ok(c) if c == self.config => {}
            Ok(c) => {
                found.push(Tamper::new(
                    "config",
                    format!("{c:?}"),
                    format!("{:?}", self.config),
                ));
                let _ = self.write_config();
            }
            Err(e) => found.push(Tamper::new(
                "config",
                crate::error_chain(&e),
                "unreadable".into(),
            )),
        }
        match self.role.get(&0, 0) {
            Ok(role::ACTIVE) | Err(_) => {}
            Ok(other) => {
                found.push(Tamper::new("role", other.to_string(), "active".into()));
                let _ = self.set_role(role::ACTIVE);
            }
        }
        let paths = self.scope_paths.clone();
        if let Ok(trie) = scope::Trie::build(&paths) {
            let kernel: Vec<(ScopeKey, ScopeNode)> =
                self.scope.iter().filter_map(Result::ok).collect();
            let wanted = if trie.is_host() {
                Vec::new()
            } else {
                trie.nodes()
            };
            let same = kernel.len() == wanted.len()
                && wanted
                    .iter()
                    .all(|(k, n)| kernel.iter().any(|(kk, nn)| kk == k && nn == n));
            if !same {
                found.push(Tamper::new(
                    "scope",
                    format!("{} nodes", kernel.len()),
                    format!("{} nodes", wanted.len()),
                ));
                let _ = self.set_scope(&paths);
            }
        }
        let policy = scope::filesystem_policy(&self.trusted_filesystems);
        let kernel: std::collections::BTreeMap<u64, u32> =
            self.filesystems.iter().filter_map(Result::ok).collect();
        if kernel != policy {
            found.push(Tamper::new(
                "filesystems",
                format!("{} entries", kernel.len()),
                format!("{} entries", policy.len()),
            ));
            let trusted = self.trusted_filesystems.clone();
            let _ = self.set_filesystems(&trusted);
        }
        if let Some(dir) = self.pin_dir.clone() {
            let links = std::mem::take(&mut self.held_links);
            for (name, link) in links {
                let path = pin::link_pin(&dir, name);
                if path.exists() {
                    self.held_links.push((name, link));
                    continue;
                }
                found.push(Tamper::new(
                    "pin",
                    format!("{} missing", path.display()),
                    "pinned again".into(),
                ));
                match pin::pin_link(&dir, name, link) {
                    Ok(link) => self.held_links.push((name, link)),
                    Err(e) => {
                        tracing::error!(error = %crate::error_chain(&e), "cannot pin a link again")
                    }
                }
            }
        }
        for t in &found {
            tracing::warn!(object = t.object, found = %t.found, restored = %t.restored, "kernel state changed behind the agent's back; restored");
        }
        found
    }

    fn set_role(&mut self, value: u32) -> Result<(), EnforcerError> {
        self.role.set(0, value, 0).map_err(map_err(maps::ROLE))
    }

    /// The configuration the kernel enforces now.
    pub fn config(&self) -> Config {
        self.config
    }

    /// What the preflight found about this kernel.
    pub fn kernel(&self) -> &KernelSupport {
        &self.support
    }

    pub fn mode(&self) -> Mode {
        Mode::from_raw(self.config.mode)
    }

    /// Changes the mode; takes effect for the next exec.
    #[tracing::instrument(skip(self))]
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), EnforcerError> {
        self.config.mode = mode.raw();
        self.write_config()
    }

    /// Changes the `libraries` and `exec_memory` settings; takes effect for
    /// the next mapping.
    #[tracing::instrument(skip(self))]
    pub fn set_code_checks(
        &mut self,
        libraries: Mode,
        exec_memory: Mode,
    ) -> Result<(), EnforcerError> {
        self.config.libraries = libraries.raw();
        self.config.exec_memory = exec_memory.raw();
        self.write_config()
    }

    /// Changes which allowed execs send an event (`authz_common::sample`);
    /// refusals always do. Takes effect for the next exec.
    #[tracing::instrument(skip(self))]
    pub fn set_allowed_sample(&mut self, sample: u32) -> Result<(), EnforcerError> {
        self.config.allowed_sample = sample;
        self.write_config()
    }

    pub(crate) fn set_selftest_cgroup(&mut self, cgroup_id: u64) -> Result<(), EnforcerError> {
        self.config.selftest_cgroup_id = cgroup_id;
        self.write_config()
    }

    /// Limits enforcement to the cgroup subtrees at `paths` (`/jobs.slice`),
    /// matched by path in the kernel; an empty list (or `/`) means the whole
    /// host. Changes never leave a moment with less enforcement than either
    /// the old or the new scope: wider scope is written before narrower scope
    /// is removed.
    #[tracing::instrument(skip(self))]
    pub fn set_scope(&mut self, paths: &[String]) -> Result<(), EnforcerError> {
        let trie = scope::Trie::build(paths)?;
        let existing: Vec<ScopeKey> = self.scope.keys().filter_map(Result::ok).collect();
        self.scope_paths = if trie.is_host() {
            Vec::new()
        } else {
            paths.to_vec()
        };
        if trie.is_host() {
            self.config.scope = scope_kind::HOST;
            self.write_config()?;
            for key in &existing {
                let _ = self.scope.remove(key);
            }
            return Ok(());
        }
        for (key, node) in trie.nodes() {
            self.scope
                .insert(key, node, 0)
                .map_err(map_err(maps::SCOPE))?;
        }
        self.config.scope = scope_kind::SUBTREES;
        self.write_config()?;
        for key in existing.iter().filter(|k| !trie.contains(k)) {
            let _ = self.scope.remove(key);
        }
        Ok(())
    }

    /// The enforced subtrees (empty: the whole host).
    pub fn scope_paths(&self) -> &[String] {
        &self.scope_paths
    }

    /// The filesystems trusted beyond authz's built-in table (magics).
    pub fn trusted_filesystems(&self) -> &[u64] {
        &self.trusted_filesystems
    }

    /// Which filesystems execs may come from (and which may use the digest
    /// cache): authz's built-in table plus `trusted` magics.
    #[tracing::instrument(skip(self))]
    pub fn set_filesystems(&mut self, trusted: &[u64]) -> Result<(), EnforcerError> {
        self.trusted_filesystems = trusted.to_vec();
        let wanted = scope::filesystem_policy(trusted);
        let existing: Vec<u64> = self.filesystems.keys().filter_map(Result::ok).collect();
        for (magic, flags) in &wanted {
            self.filesystems
                .insert(magic, flags, 0)
                .map_err(map_err(maps::FILESYSTEMS))?;
        }
        for magic in existing.iter().filter(|m| !wanted.contains_key(m)) {
            let _ = self.filesystems.remove(magic);
        }
        Ok(())
    }

    fn write_config(&mut self) -> Result<(), EnforcerError> {
        self.config_map
            .set(0, self.config, 0)
            .map_err(map_err(maps::CONFIG))
    }

    fn permit_map(&mut self, use_: PermitUse) -> &mut HashMap<MapData, PermitKey, Permit> {
        match use_ {
            PermitUse::Exec => &mut self.permits,
            PermitUse::Map => &mut self.mappings,
            PermitUse::ExecMemory => &mut self.jit,
        }
    }

    /// Installs (or replaces) a permit row in the map for `use_`.
    #[tracing::instrument(skip_all, fields(?use_, digest = %hex::encode(key.digest), cgroup_id = key.cgroup_id))]
    pub fn grant(
        &mut self,
        use_: PermitUse,
        key: PermitKey,
        permit: Permit,
    ) -> Result<(), EnforcerError> {
        let name = use_.map_name();
        let existed = self.permit_map(use_).get(&key, 0).is_ok();
        if !existed {
            let count = self.digests.get(&key.digest, 0).unwrap_or(0);
            self.digests
                .insert(key.digest, count + 1, 0)
                .map_err(map_err(maps::DIGESTS))?;
        }
        match self.permit_map(use_).insert(key, permit, 0) {
            Ok(()) => Ok(()),
            Err(e) => {
                if !existed {
                    self.release_digest(&key.digest);
                }
                if is_full(&e) {
                    Err(EnforcerError::PermitsFull(self.max_permits))
                } else {
                    Err(map_err(name)(e))
                }
            }
        }
    }

    /// Installs (or replaces) many permit rows with a few bpf(2) calls
    /// ([`batch::insert_all`]) rather than four per row: what a start does
    /// with every stored permit. `new` says, for each row, whether the
    /// kernel lacks it now (the caller read the maps): each new row counts
    /// once more for its digest. On failure the digest counts are put back;
    /// rows already written stay (the next reconcile or integrity check
    /// removes what no permit backs).
    #[tracing::instrument(skip_all, fields(rows = rows.len()))]
    pub fn grant_many(
        &mut self,
        rows: &[(PermitUse, PermitKey, Permit, bool)],
    ) -> Result<(), EnforcerError> {
        let mut added: BTreeMap<Digest, u32> = BTreeMap::new();
        for (_, key, _, new) in rows {
            if *new {
                *added.entry(key.digest).or_default() += 1;
            }
        }
        let before: BTreeMap<Digest, u32> = if added.is_empty() {
            BTreeMap::new()
        } else {
            batch::entries(&self.digests).into_iter().collect()
        };
        let (digests, counts): (Vec<Digest>, Vec<u32>) = added
            .iter()
            .map(|(d, n)| (*d, before.get(d).copied().unwrap_or(0).saturating_add(*n)))
            .unzip();
        batch::insert_all(&mut self.digests, &digests, &counts).map_err(map_err(maps::DIGESTS))?;
        for use_ in [PermitUse::Exec, PermitUse::Map, PermitUse::ExecMemory] {
            let (keys, permits): (Vec<PermitKey>, Vec<Permit>) = rows
                .iter()
                .filter(|(u, ..)| *u == use_)
                .map(|(_, k, p, _)| (*k, *p))
                .unzip();
            if keys.is_empty() {
                continue;
            }
            if let Err(e) = batch::insert_all(self.permit_map(use_), &keys, &permits) {
                for d in &digests {
                    let _ = match before.get(d) {
                        Some(n) => self.digests.insert(d, n, 0),
                        None => self.digests.remove(d),
                    };
                }
                return Err(if is_full(&e) {
                    EnforcerError::PermitsFull(self.max_permits)
                } else {
                    map_err(use_.map_name())(e)
                });
            }
        }
        Ok(())
    }

    /// Removes a permit row; returns whether it was there.
    #[tracing::instrument(skip_all, fields(?use_, digest = %hex::encode(key.digest), cgroup_id = key.cgroup_id))]
    pub fn revoke(&mut self, use_: PermitUse, key: &PermitKey) -> Result<bool, EnforcerError> {
        match self.permit_map(use_).remove(key) {
            Ok(()) => {
                self.release_digest(&key.digest);
                Ok(true)
            }
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err(use_.map_name())(e)),
        }
    }

    /// Removes every permit row of every use (incident response). Returns how
    /// many were removed.
    #[tracing::instrument(skip_all)]
    pub fn flush(&mut self) -> Result<usize, EnforcerError> {
        let mut removed = 0;
        for (use_, key, _) in self.permits() {
            if self.revoke(use_, &key)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn release_digest(&mut self, digest: &Digest) {
        match self.digests.get(digest, 0) {
            Ok(n) if n > 1 => {
                let _ = self.digests.insert(digest, n - 1, 0);
            }
            _ => {
                let _ = self.digests.remove(digest);
            }
        }
    }

    /// Every permit row in the kernel's maps.
    pub fn permits(&self) -> Vec<(PermitUse, PermitKey, Permit)> {
        let rows = |use_: PermitUse, map: &HashMap<MapData, PermitKey, Permit>| {
            batch::entries(map)
                .into_iter()
                .map(move |(k, p)| (use_, k, p))
                .collect::<Vec<_>>()
        };
        let mut out = rows(PermitUse::Exec, &self.permits);
        out.extend(rows(PermitUse::Map, &self.mappings));
        out.extend(rows(PermitUse::ExecMemory, &self.jit));
        out
    }

    /// The kernel's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, EnforcerError> {
        let mut out = Counters::new();
        for (index, name) in counter::NAMES.iter().enumerate() {
            let values = self
                .counters
                .get(&(index as u32), 0)
                .map_err(map_err(maps::COUNTERS))?;
            out.insert(*name, values.iter().sum());
        }
        Ok(out)
    }

    /// Decision events the kernel dropped because the ring was full, so far.
    pub fn events_dropped(&self) -> Result<u64, EnforcerError> {
        let values = self
            .counters
            .get(&counter::EVENTS_DROPPED, 0)
            .map_err(map_err(maps::COUNTERS))?;
        Ok(values.iter().sum())
    }

    /// Takes the ring buffer for an async reader; afterwards the polling
    /// methods below return nothing.
    pub fn take_event_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Every event the kernel has queued, without waiting.
    pub fn drain_events(&mut self) -> Vec<DecisionEvent> {
        self.absorb_events();
        self.pending.drain(..).collect()
    }

    /// Moves every event the kernel has queued into the pending queue, making
    /// room on the ring; later `drain_events` and `wait_event` calls see them.
    pub fn absorb_events(&mut self) {
        if let Some(ring) = self.events.as_mut() {
            while let Some(item) = ring.next() {
                match event::decode(&item) {
                    Some(ev) => self.pending.push_back(ev),
                    None => tracing::warn!(len = item.len(), "short record on the event ring"),
                }
            }
        }
    }

    /// Waits up to `timeout` for the first event matching `pred`; events that do
    /// not match stay queued for later calls.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&DecisionEvent) -> bool,
    ) -> Option<DecisionEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            self.absorb_events();
            if let Some(pos) = self.pending.iter().position(&mut pred) {
                return self.pending.remove(pos);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Something found changed in the kernel's state behind the agent's back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tamper {
    /// What: `config`, `role`, `scope`, `filesystems`, `pin`, `permits`.
    pub object: &'static str,
    pub found: String,
    pub restored: String,
}

impl Tamper {
    pub fn new(object: &'static str, found: String, restored: String) -> Self {
        Self {
            object,
            found,
            restored,
        }
    }
}

fn own_key(kind: u32, id: u64) -> OwnKey {
    OwnKey { kind, _pad: 0, id }
}

/// The map data behind any map of the object (to read its id).
fn map_data(map: &aya::maps::Map) -> &MapData {
    use aya::maps::Map as M;
    match map {
        M::Array(m)
        | M::HashMap(m)
        | M::PerCpuArray(m)
        | M::RingBuf(m)
        | M::InodeStorage(m)
        | M::Unsupported(m)
        | M::ArrayOfMaps(m)
        | M::BloomFilter(m)
        | M::CgroupArray(m)
        | M::CgroupStorage(m)
        | M::CgrpStorage(m)
        | M::CpuMap(m)
        | M::DevMap(m)
        | M::DevMapHash(m)
        | M::HashOfMaps(m)
        | M::LpmTrie(m)
        | M::LruHashMap(m)
        | M::PerCpuCgroupStorage(m)
        | M::PerCpuHashMap(m)
        | M::PerCpuLruHashMap(m)
        | M::PerfEventArray(m)
        | M::ProgramArray(m)
        | M::Queue(m)
        | M::ReusePortSockArray(m)
        | M::SockHash(m)
        | M::SockMap(m)
        | M::SkStorage(m)
        | M::Stack(m)
        | M::StackTraceMap(m)
        | M::XskMap(m) => m,
    }
}

/// Turns a program load failure into the error a user can act on.
fn classify_load_error(e: ProgramError) -> EnforcerError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if io_error.raw_os_error() == Some(EPERM) && log.trim().is_empty() {
                EnforcerError::TrampolineRefused
            } else {
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                EnforcerError::Verifier {
                    errno: io_error,
                    log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                }
            }
        }
        other => EnforcerError::Program(other),
    }
}

fn is_full(e: &MapError) -> bool {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::E2BIG),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_mode_values_mean_enforce() {
        assert_eq!(Mode::from_raw(0), Mode::Enforce);
        assert_eq!(Mode::from_raw(77), Mode::Enforce);
        for m in [Mode::Off, Mode::Audit, Mode::Enforce] {
            assert_eq!(Mode::from_raw(m.raw()), m);
        }
    }

    #[test]
    fn the_bpf_object_is_embedded() {
        // A stub (empty) object means build.rs skipped the eBPF build.
        assert!(
            BPF_OBJECT.len() > 1024,
            "BPF object is {} bytes",
            BPF_OBJECT.len()
        );
        assert_eq!(&BPF_OBJECT[..4], b"\x7fELF");
    }
}
