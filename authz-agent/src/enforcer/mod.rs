//! The kernel side, seen from userspace: loading and attaching the BPF LSM
//! program, and reading and writing its maps.
//!
//! [`Enforcer`] is the one owner of the loaded [`aya::Ebpf`] object. The daemon
//! wraps it in an actor task; tests and the `check` command use it directly.
pub mod btf;
pub mod event;
pub mod pin;
pub mod preflight;
pub mod selftest;

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    path::Path,
    time::{Duration, Instant},
};

use authz_common::{counter, mode, scope, Config, Digest, Permit, PermitKey};
use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{Lsm, ProgramError},
    Ebpf, EbpfLoader,
};

pub use event::{Decision, DecisionEvent, Reason};
pub use preflight::{KernelSupport, PreflightError};

/// The BPF object built from `authz-ebpf` by build.rs.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/authz"));

/// The LSM programs in the object, each named for its hook, in attach order:
/// the cache invalidation (`file_open`) and lineage bookkeeping are in place
/// before the first decision.
pub(crate) const PROGRAMS: [&str; 4] = [
    "file_open",
    "task_alloc",
    "bprm_committed_creds",
    "bprm_check_security",
];
const HOOK: &str = "bprm_check_security";

/// Size of the event ring buffer unless configured (as in authz-ebpf's maps.rs).
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

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
    /// cgroup ids of the subtrees to enforce; empty = the whole host. Applied
    /// before the program is attached, so no exec outside them is ever decided.
    pub enforced_cgroups: Vec<u64>,
    /// Size of the decision event ring buffer in bytes (a power of two, at
    /// least a page); `None` keeps the built-in 1 MiB.
    pub event_ring_bytes: Option<u32>,
    /// Pin maps and links under this bpffs directory, so enforcement outlives
    /// the process and a restart re-adopts it. `None`: everything is detached
    /// when the [`Enforcer`] is dropped (tests, `check`).
    pub pin_dir: Option<std::path::PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Audit,
            selftest: true,
            cgroup_root: crate::cgroup::CGROUP_ROOT.into(),
            max_permits: 131_072,
            enforced_cgroups: Vec::new(),
            event_ring_bytes: None,
            pin_dir: None,
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
    digests: HashMap<MapData, Digest, u32>,
    enforced: HashMap<MapData, u64, u32>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    pending: VecDeque<DecisionEvent>,
    config: Config,
    max_permits: u32,
    support: KernelSupport,
    pin_dir: Option<std::path::PathBuf>,
    layout: pin::Layout,
    adopted: bool,
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
        let offsets = btf::kernel_offsets(Path::new(btf::VMLINUX_BTF))?;
        let ring_bytes = opts.event_ring_bytes.unwrap_or(DEFAULT_RING_BYTES);
        let layout = pin::Layout::new(opts.max_permits, ring_bytes);
        let mut loader = EbpfLoader::new();
        loader
            // TASK_LABELS (task storage) has no typed wrapper in aya 0.14; the
            // kernel program is its only user.
            .allow_unsupported_maps()
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("PERMITS", opts.max_permits)
            .map_max_entries("DIGESTS", opts.max_permits)
            .map_max_entries("EVENTS", ring_bytes);
        let mut adopted = false;
        let pin_paths: Vec<(&'static str, std::path::PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                preflight::ensure_bpffs().map_err(pin::PinError::Bpffs)?;
                let maps_dir = layout.maps_dir(dir);
                adopted = maps_dir.join("CONFIG").exists();
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
        let mut ebpf = loader.load(BPF_OBJECT).map_err(EnforcerError::Object)?;

        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(EnforcerError::MissingMap(name));
        let config_map: Array<MapData, Config> =
            Array::try_from(take("CONFIG")?).map_err(map_err("CONFIG"))?;
        let permits = HashMap::try_from(take("PERMITS")?).map_err(map_err("PERMITS"))?;
        let digests = HashMap::try_from(take("DIGESTS")?).map_err(map_err("DIGESTS"))?;
        let enforced =
            HashMap::try_from(take("ENFORCED_CGROUPS")?).map_err(map_err("ENFORCED_CGROUPS"))?;
        let counters = PerCpuArray::try_from(take("COUNTERS")?).map_err(map_err("COUNTERS"))?;
        let events = RingBuf::try_from(take("EVENTS")?).map_err(map_err("EVENTS"))?;

        let config = if adopted {
            let mut c = config_map.get(&0, 0).map_err(map_err("CONFIG"))?;
            c.selftest_cgroup_id = 0;
            tracing::info!(
                mode = mode::name(c.mode),
                "re-adopting pinned enforcement state"
            );
            c
        } else {
            Config {
                mode: opts.mode.raw(),
                scope: scope::HOST,
                selftest_cgroup_id: 0,
            }
        };
        let mut enforcer = Self {
            ebpf,
            config_map,
            permits,
            digests,
            enforced,
            counters,
            events: Some(events),
            pending: VecDeque::new(),
            config,
            max_permits: opts.max_permits,
            support,
            pin_dir: opts.pin_dir.clone(),
            layout,
            adopted,
        };
        // The configuration is in place before the hook can fire.
        enforcer.set_scope(&opts.enforced_cgroups)?;
        Ok(enforcer)
    }

    /// Can this kernel run authz? Loads the object and every program (the
    /// verifier runs) without attaching anything, then unloads. This is what
    /// turns "this kernel refuses trampoline programs" into an error before
    /// anything else is read or changed.
    pub fn probe() -> Result<KernelSupport, EnforcerError> {
        let mut probe = Self::open(&LoadOptions {
            mode: Mode::Off,
            selftest: false,
            max_permits: 16,
            event_ring_bytes: Some(4096),
            ..LoadOptions::default()
        })?;
        probe.load_programs()?;
        Ok(probe.support.clone())
    }

    /// Loads every program into the kernel (the verifier runs here) against
    /// the running kernel's BTF; nothing is attached yet.
    fn load_programs(&mut self) -> Result<(), EnforcerError> {
        let kernel_btf = aya::Btf::from_sys_fs()
            .map_err(|e| EnforcerError::Object(aya::EbpfError::BtfError(e)))?;
        for name in PROGRAMS {
            self.lsm(name)?
                .load(name, &kernel_btf)
                .map_err(classify_load_error)?;
        }
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

    /// Loads every program into the kernel (the verifier runs here), then
    /// attaches each, pins the links when a pin directory is set (atomically replacing the
    /// previous run's links, so at every instant at least one program enforces),
    /// then runs the self-test unless `opts.selftest` is false.
    pub fn attach(&mut self, opts: &LoadOptions) -> Result<(), EnforcerError> {
        self.load_programs()?;
        let pin_dir = self.pin_dir.clone();
        for name in PROGRAMS {
            let program = self.lsm(name)?;
            let link_id = program
                .attach()
                .map_err(|e| EnforcerError::Attach(name, e))?;
            if let Some(dir) = &pin_dir {
                let link = program
                    .take_link(link_id)
                    .map_err(|e| EnforcerError::Attach(name, e))?;
                pin::pin_link(dir, name, aya::programs::links::FdLink::from(link))?;
            }
        }
        if let Some(dir) = &self.pin_dir {
            pin::remove_stale_maps(dir, &self.layout);
        }
        tracing::info!(
            hook = HOOK,
            pinned = self.pin_dir.is_some(),
            "BPF LSM program attached"
        );
        if opts.selftest {
            selftest::run(self, &opts.cgroup_root)?;
        }
        Ok(())
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

    pub(crate) fn set_selftest_cgroup(&mut self, cgroup_id: u64) -> Result<(), EnforcerError> {
        self.config.selftest_cgroup_id = cgroup_id;
        self.write_config()
    }

    /// Limits enforcement to the given cgroup subtrees (by id); an empty list
    /// means the whole host.
    #[tracing::instrument(skip(self))]
    pub fn set_scope(&mut self, subtrees: &[u64]) -> Result<(), EnforcerError> {
        let existing: Vec<u64> = self.enforced.keys().filter_map(Result::ok).collect();
        for id in subtrees {
            self.enforced
                .insert(id, 1, 0)
                .map_err(map_err("ENFORCED_CGROUPS"))?;
        }
        for id in existing.iter().filter(|id| !subtrees.contains(id)) {
            let _ = self.enforced.remove(id);
        }
        self.config.scope = if subtrees.is_empty() {
            scope::HOST
        } else {
            scope::SUBTREES
        };
        self.write_config()
    }

    fn write_config(&mut self) -> Result<(), EnforcerError> {
        self.config_map
            .set(0, self.config, 0)
            .map_err(map_err("CONFIG"))
    }

    /// Installs (or replaces) a permit.
    #[tracing::instrument(skip_all, fields(digest = %hex::encode(key.digest), cgroup_id = key.cgroup_id))]
    pub fn grant(&mut self, key: PermitKey, permit: Permit) -> Result<(), EnforcerError> {
        let existed = self.permits.get(&key, 0).is_ok();
        if !existed {
            let count = self.digests.get(&key.digest, 0).unwrap_or(0);
            self.digests
                .insert(key.digest, count + 1, 0)
                .map_err(map_err("DIGESTS"))?;
        }
        match self.permits.insert(key, permit, 0) {
            Ok(()) => Ok(()),
            Err(e) => {
                if !existed {
                    self.release_digest(&key.digest);
                }
                if is_full(&e) {
                    Err(EnforcerError::PermitsFull(self.max_permits))
                } else {
                    Err(map_err("PERMITS")(e))
                }
            }
        }
    }

    /// Removes a permit; returns whether it was there.
    #[tracing::instrument(skip_all, fields(digest = %hex::encode(key.digest), cgroup_id = key.cgroup_id))]
    pub fn revoke(&mut self, key: &PermitKey) -> Result<bool, EnforcerError> {
        match self.permits.remove(key) {
            Ok(()) => {
                self.release_digest(&key.digest);
                Ok(true)
            }
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err("PERMITS")(e)),
        }
    }

    /// Removes every permit (incident response). Returns how many were removed.
    #[tracing::instrument(skip_all)]
    pub fn flush(&mut self) -> Result<usize, EnforcerError> {
        let keys: Vec<PermitKey> = self.permits.keys().filter_map(Result::ok).collect();
        let mut removed = 0;
        for key in &keys {
            if self.revoke(key)? {
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

    /// Every permit in the kernel map.
    pub fn permits(&self) -> Vec<(PermitKey, Permit)> {
        self.permits.iter().filter_map(Result::ok).collect()
    }

    /// The kernel's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, EnforcerError> {
        let mut out = Counters::new();
        for (index, name) in counter::NAMES.iter().enumerate() {
            let values = self
                .counters
                .get(&(index as u32), 0)
                .map_err(map_err("COUNTERS"))?;
            out.insert(*name, values.iter().sum());
        }
        Ok(out)
    }

    /// Decision events the kernel dropped because the ring was full, so far.
    pub fn events_dropped(&self) -> Result<u64, EnforcerError> {
        let values = self
            .counters
            .get(&counter::EVENTS_DROPPED, 0)
            .map_err(map_err("COUNTERS"))?;
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

/// Nanoseconds on `CLOCK_BOOTTIME`, the clock the kernel program compares
/// permit expiry with.
pub fn boot_time_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Converts a wall-clock instant into `CLOCK_BOOTTIME` nanoseconds (0 when it
/// is before boot, i.e. already expired).
pub fn wall_to_boot_ns(when: std::time::SystemTime) -> u64 {
    let now_wall = std::time::SystemTime::now();
    let now_boot = boot_time_ns();
    match when.duration_since(now_wall) {
        Ok(ahead) => now_boot.saturating_add(ahead.as_nanos().min(u64::MAX as u128) as u64),
        Err(behind) => {
            now_boot.saturating_sub(behind.duration().as_nanos().min(u64::MAX as u128) as u64)
        }
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
    fn wall_clock_maps_onto_boot_clock() {
        let now = boot_time_ns();
        let in_an_hour = wall_to_boot_ns(std::time::SystemTime::now() + Duration::from_secs(3600));
        let delta = in_an_hour - now;
        assert!(
            (3_599_000_000_000..3_601_000_000_000).contains(&delta),
            "{delta}"
        );
        let long_ago = std::time::SystemTime::UNIX_EPOCH;
        assert!(wall_to_boot_ns(long_ago) < now);
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
