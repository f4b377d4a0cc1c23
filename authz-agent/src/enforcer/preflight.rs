//! Can this kernel run authz? Checked before anything is loaded, so that a user
//! on an unsuitable host gets one clear sentence saying what is missing and what
//! to do, not a verifier dump.
use std::{fs, io, path::Path};

use super::btf::VMLINUX_BTF;

/// Where securityfs lists the active LSMs.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";
const SECURITYFS: &str = "/sys/kernel/security";
/// Where bpffs is mounted for pinning.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Oldest kernel with everything authz uses (`bpf_ima_file_hash`, sleepable LSM).
pub const MIN_KERNEL: (u32, u32) = (5, 18);

/// Hint printed with every "cannot enforce here" error.
pub const VM_HINT: &str =
    "to try authz on a host whose kernel cannot run it, boot the project's VM: `cargo xtask vm`";

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("authz-agent must run as root (it loads BPF LSM programs); effective uid is {0}")]
    NotRoot(u32),
    #[error("kernel {release} is too old: authz needs Linux >= {}.{} for bpf_ima_file_hash in sleepable BPF LSM programs; {VM_HINT}", MIN_KERNEL.0, MIN_KERNEL.1)]
    KernelTooOld { release: String },
    #[error("cannot read the active LSM list {LSM_LIST} (securityfs is not mounted and mounting it failed); {VM_HINT}")]
    NoSecurityFs(#[source] io::Error),
    #[error("BPF LSM is not active: {LSM_LIST} lists `{active}`, without `bpf`. Build the kernel with CONFIG_BPF_LSM=y and add `bpf` to the `lsm=` boot parameter (e.g. lsm={active},bpf), then reboot; {VM_HINT}")]
    BpfLsmInactive { active: String },
    #[error("{VMLINUX_BTF} is missing: the kernel needs CONFIG_DEBUG_INFO_BTF=y so authz can read struct layouts; {VM_HINT}")]
    NoBtf,
}

/// What the preflight found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelSupport {
    pub release: String,
    pub active_lsms: Vec<String>,
    /// Whether IMA runs a measurement policy (it then caches file hashes,
    /// which authz accounts for: see `authz_common::cache_flags::IMA_STALE`).
    pub ima: ImaPolicy,
}

/// What IMA does on this host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImaPolicy {
    /// A policy measures files (and IMA keeps their hashes cached).
    pub active: bool,
    /// The `ima_policy=`/`ima_tcb` boot parameters, if any.
    pub boot_policy: Option<String>,
    /// Entries in IMA's measurement list (1 is the boot aggregate alone).
    pub measurements: Option<u64>,
}

/// Where IMA says how many measurements it holds.
const IMA_COUNT: &str = "/sys/kernel/security/ima/runtime_measurements_count";

impl ImaPolicy {
    /// Reads the boot parameters and IMA's measurement count.
    pub fn detect() -> Self {
        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let measurements = fs::read_to_string(IMA_COUNT)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Self::from_parts(&cmdline, measurements)
    }

    fn from_parts(cmdline: &str, measurements: Option<u64>) -> Self {
        let boot: Vec<&str> = cmdline
            .split_whitespace()
            .filter(|w| w.starts_with("ima_policy=") || *w == "ima_tcb")
            .collect();
        let boot_policy = (!boot.is_empty()).then(|| boot.join(" "));
        Self {
            active: boot_policy.is_some() || measurements.is_some_and(|n| n > 1),
            boot_policy,
            measurements,
        }
    }
}

/// Checks everything that can be checked without loading a program.
#[tracing::instrument(level = "debug")]
pub fn check() -> Result<KernelSupport, PreflightError> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 {
        return Err(PreflightError::NotRoot(euid));
    }
    let release = kernel_release();
    if let Some(version) = parse_release(&release) {
        if version < MIN_KERNEL {
            return Err(PreflightError::KernelTooOld { release });
        }
    }
    let active = read_lsm_list().map_err(PreflightError::NoSecurityFs)?;
    let active_lsms: Vec<String> = active
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !active_lsms.iter().any(|l| l == "bpf") {
        return Err(PreflightError::BpfLsmInactive {
            active: active.trim().to_owned(),
        });
    }
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(PreflightError::NoBtf);
    }
    Ok(KernelSupport {
        release,
        active_lsms,
        ima: ImaPolicy::detect(),
    })
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// (major, minor) of a release string such as `6.1.0-56-amd64`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Reads the LSM list, mounting securityfs first when it is not mounted.
pub fn read_lsm_list() -> io::Result<String> {
    match fs::read_to_string(LSM_LIST) {
        Ok(list) => Ok(list),
        Err(first) if first.kind() == io::ErrorKind::NotFound => {
            mount_pseudo("securityfs", SECURITYFS).map_err(|_| first)?;
            fs::read_to_string(LSM_LIST)
        }
        Err(e) => Err(e),
    }
}

/// Mounts bpffs at [`BPFFS`] unless something is mounted there already.
pub fn ensure_bpffs() -> io::Result<()> {
    if is_mounted_fs(BPFFS, "bpf")? {
        return Ok(());
    }
    mount_pseudo("bpf", BPFFS)
}

fn mount_pseudo(fstype: &str, target: &str) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    fs::create_dir_all(target).ok();
    mount(
        Some(fstype),
        target,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Whether a filesystem of type `fstype` is mounted at `target`.
pub fn is_mounted_fs(target: &str, fstype: &str) -> io::Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut f = line.split_whitespace();
        let (_, mnt, ty) = (f.next(), f.next(), f.next());
        mnt == Some(target) && ty == Some(fstype)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.17.1").unwrap() < MIN_KERNEL);
        assert!(parse_release("5.18.0").unwrap() >= MIN_KERNEL);
    }

    #[test]
    fn ima_policy_from_the_command_line_or_the_measurement_count() {
        let none = ImaPolicy::from_parts("console=ttyS0 quiet", Some(1));
        assert!(!none.active);
        let tcb = ImaPolicy::from_parts("console=ttyS0 ima_policy=tcb", Some(1));
        assert!(tcb.active);
        assert_eq!(tcb.boot_policy.as_deref(), Some("ima_policy=tcb"));
        assert!(
            ImaPolicy::from_parts("", Some(57)).active,
            "a loaded policy measured files"
        );
        assert!(!ImaPolicy::from_parts("", None).active);
    }

    #[test]
    fn inactive_bpf_lsm_message_says_what_to_do() {
        let msg = PreflightError::BpfLsmInactive {
            active: "lockdown,yama".into(),
        }
        .to_string();
        assert!(msg.contains("lsm=lockdown,yama,bpf"), "{msg}");
        assert!(msg.contains("cargo xtask vm"), "{msg}");
    }
}
