//! The second VM image: a minimal Debian root filesystem with systemd as
//! PID 1, for what only the real service shows (the package installs, the
//! unit's `Type=notify`, sandbox, journald, reload, watchdog, stop and crash).
//!
//! Built once with mmdebstrap from Debian's own packages (the suite of this
//! machine, through its apt mirror), trimmed (no docs, man pages or
//! locales; no timers, gettys or first-boot work) and packed as an
//! uncompressed newc cpio under target/vm/systemd/: later runs reuse it. The
//! VM boots the same Debian kernel as the busybox VM, with the base image and
//! a small per-run archive (the package, the tests, a oneshot unit that runs
//! them on the serial console and powers off) concatenated as its initramfs;
//! the kernel unpacks both, and `rdinit=/sbin/init` starts systemd.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    util::{self, target_dir},
    vm::{Initramfs, EXIT_PREFIX, READY},
};

/// Debian packages of the image beyond the minbase variant: systemd as init,
/// procps (the package needs its `kill` for ExecReload=), and busybox (the
/// integration tests copy it as their test programs).
const PACKAGES: &[&str] = &["systemd", "systemd-sysv", "procps", "busybox-static"];
/// Bumped whenever the recipe below changes, so cached images are rebuilt.
const RECIPE: u32 = 1;
/// Units the image never starts: they cost boot time and do nothing here
/// (gettys would fight the tests for the serial console).
const REMOVED_UNIT_LINKS: &[&str] = &[
    "getty.target.wants/getty@tty1.service",
    "multi-user.target.wants/e2scrub_reap.service",
    "multi-user.target.wants/remote-fs.target",
    "sysinit.target.wants/systemd-pstore.service",
    "timers.target.wants/apt-daily-upgrade.timer",
    "timers.target.wants/apt-daily.timer",
    "timers.target.wants/dpkg-db-backup.timer",
    "timers.target.wants/e2scrub_all.timer",
    "timers.target.wants/fstrim.timer",
];
/// Masked: the serial getty the kernel's `console=ttyS0` would make
/// systemd's generator start.
const MASKED_UNITS: &[&str] = &["serial-getty@ttyS0.service"];
/// Kernel command line of the systemd boot.
pub const CMDLINE: &str = "rdinit=/sbin/init systemd.show_status=error";
/// The unit inside the VM that runs `/authz/cmd`.
const RUNNER_UNIT: &str = "authz-vm.service";

/// The Debian suite of this machine (its apt mirror serves it).
fn suite() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME: cannot tell which Debian suite to build the systemd VM from")
}

/// The cached base image (a cpio archive), built when missing or when its
/// recipe changed.
pub fn base_image() -> Result<PathBuf> {
    let suite = suite()?;
    let dir = target_dir().join("vm/systemd").join(&suite);
    let image = dir.join("base.cpio");
    let stamp = dir.join("stamp");
    let wanted = format!(
        "recipe {RECIPE}; suite {suite}; packages {}\n",
        PACKAGES.join(" ")
    );
    if image.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(image);
    }
    eprintln!("setup: systemd VM image: building a minimal Debian {suite} with systemd (mmdebstrap from the mirror; 1 to 4 minutes, once)");
    crate::setup::deb_tools()?;
    fs::create_dir_all(&dir)?;
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let mut cmd = Command::new("mmdebstrap");
    cmd.args([
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        "--quiet",
    ])
    .arg(format!("--include={}", PACKAGES.join(",")));
    for excluded in ["doc", "man", "locale", "info", "lintian"] {
        cmd.arg(format!("--dpkgopt=path-exclude=/usr/share/{excluded}/*"));
    }
    cmd.arg(&suite).arg(&root);
    util::run(
        &mut cmd,
        &format!(
            "building the systemd VM's root filesystem (mmdebstrap {suite}; needs root and Debian's mirror)"
        ),
    )?;
    trim(&root)?;
    let partial = dir.join("base.cpio.partial");
    util::run(
        Command::new("sh")
            .arg("-c")
            // Owners as they are: the tree is Debian's, not all root's.
            .arg("cd \"$1\" && find . -print0 | cpio --null -o -H newc --quiet > \"$2\"")
            .arg("sh")
            .arg(&root)
            .arg(&partial),
        "packing the systemd VM image with cpio",
    )?;
    fs::rename(&partial, &image)?;
    fs::remove_dir_all(&root)?;
    fs::write(&stamp, wanted)?;
    let size = fs::metadata(&image)?.len();
    eprintln!(
        "setup: systemd VM image: {} ({} MiB)",
        image.display(),
        size >> 20
    );
    Ok(image)
}

/// Makes the fresh tree boot straight to the tests.
fn trim(root: &Path) -> Result<()> {
    let etc = root.join("etc");
    // The path excludes were for building the image; a package installed
    // inside the VM gets all its files.
    let _ = fs::remove_file(etc.join("dpkg/dpkg.cfg.d/99mmdebstrap"));
    let units = etc.join("systemd/system");
    for link in REMOVED_UNIT_LINKS {
        let _ = fs::remove_file(units.join(link));
    }
    for unit in MASKED_UNITS {
        let path = units.join(unit);
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink("/dev/null", &path)
            .with_context(|| format!("masking {unit}"))?;
    }
    fs::write(etc.join("hostname"), "authz-systemd-vm\n")?;
    // A fixed machine id: no first-boot units, and the journal has a home.
    fs::write(etc.join("machine-id"), "a07e2a0c0ffee0000000000000000016\n")?;
    fs::write(etc.join("fstab"), "")?;
    if !root.join("sbin/init").exists() && !root.join("usr/sbin/init").exists() {
        bail!("the systemd VM image has no /sbin/init (systemd-sysv did not install)");
    }
    if !root.join("bin/busybox").exists() && !root.join("usr/bin/busybox").exists() {
        bail!("the systemd VM image has no busybox");
    }
    Ok(())
}

/// The oneshot unit that runs the tests on the serial console.
const RUNNER_UNIT_TEXT: &str = "\
[Unit]
Description=authz integration tests on the serial console
After=basic.target

[Service]
Type=oneshot
ExecStart=/bin/sh /authz/vm-main.sh
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
Environment=NO_COLOR=1 HOME=/root
TimeoutStartSec=infinity
";

/// What the unit runs: the markers the host waits for around /authz/cmd,
/// then an immediate power-off.
fn main_script() -> String {
    format!(
        r#"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "{READY} kernel=$(uname -r) init=$(cat /proc/1/comm) lsm=$(cat /sys/kernel/security/lsm)"
cd /root
sh /authz/cmd < /dev/null
echo "{EXIT_PREFIX}$?"
sync
systemctl poweroff --force --force
"#
    )
}

/// The per-run archive: everything a boot adds to the base image. The
/// caller adds /authz/cmd and what it runs.
pub fn overlay(name: &str) -> Result<Initramfs> {
    let mut o = Initramfs::empty(name)?;
    o.add_file("/authz/vm-main.sh", main_script().as_bytes(), 0o755)?;
    o.add_file(
        &format!("/etc/systemd/system/{RUNNER_UNIT}"),
        RUNNER_UNIT_TEXT.as_bytes(),
        0o644,
    )?;
    o.add_symlink(
        &format!("/etc/systemd/system/multi-user.target.wants/{RUNNER_UNIT}"),
        &format!("/etc/systemd/system/{RUNNER_UNIT}"),
    )?;
    Ok(o)
}

/// The initramfs QEMU boots: the base image, then the packed overlay.
pub fn initrd(base: &Path, overlay: &Path) -> Result<PathBuf> {
    let out = overlay.with_file_name("initrd.cpio");
    let mut file = fs::File::create(&out)?;
    for part in [base, overlay] {
        let mut src =
            fs::File::open(part).with_context(|| format!("reading {}", part.display()))?;
        std::io::copy(&mut src, &mut file)?;
    }
    Ok(out)
}
