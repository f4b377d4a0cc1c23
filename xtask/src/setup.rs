//! `cargo xtask setup`: everything a fresh machine needs, installed from the
//! project's own files. Each step checks first and does nothing when its result
//! is already in place, so running it on every build costs well under a second.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::util::{self, have, stdout, target_dir};

/// bpf-linker release known to build against LLVM 21-23 here.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the VM and initramfs need: (package, file it provides).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("cpio", "/usr/bin/cpio"),
    // mkfs for the filesystems whose digest cache the VM tests prove.
    ("e2fsprogs", "/usr/sbin/mke2fs"),
    ("xfsprogs", "/usr/sbin/mkfs.xfs"),
    ("btrfs-progs", "/usr/sbin/mkfs.btrfs"),
    // modinfo, to resolve the dependencies of the kernel modules the VM loads.
    ("kmod", "/usr/sbin/modinfo"),
];
/// Debian packages `cargo xtask deb` and the systemd VM image need.
const DEB_PACKAGES: &[(&str, &str)] = &[
    // dpkg-shlibdeps, for the package's library dependencies.
    ("dpkg-dev", "/usr/bin/dpkg-shlibdeps"),
    ("lintian", "/usr/bin/lintian"),
    // The systemd VM's root filesystem, from Debian's packages.
    ("mmdebstrap", "/usr/bin/mmdebstrap"),
];
/// Kernel modules the VM loads (with their dependencies): the filesystems
/// the digest cache is proven on, loop devices to mount them, FUSE (refused
/// by default: tests prove it), and the crc32c implementation their
/// checksums need.
pub const VM_MODULES: &[&str] = &["crc32c_generic", "loop", "ext4", "xfs", "btrfs", "fuse"];
/// Meta-package whose dependency names the current Debian kernel.
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";

/// What setup produced.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Debian's kernel image for the VM.
    pub kernel: PathBuf,
    /// The Debian package it came from (names the kernel in reports).
    pub kernel_package: String,
    /// The kernel modules the VM loads ([`VM_MODULES`] and their
    /// dependencies), with an `order` file listing them dependencies first.
    pub modules: PathBuf,
}

/// Runs every step.
pub fn run() -> Result<Setup> {
    toolchain()?;
    vm_assets()
}

/// The eBPF toolchain: nightly's rust-src and bpf-linker.
pub fn toolchain() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    Ok(())
}

/// QEMU and friends, plus the kernel.
pub fn vm_assets() -> Result<Setup> {
    debian_packages(DEBIAN_PACKAGES)?;
    deb_tools()?;
    kernel()
}

/// What `cargo xtask deb` and the systemd VM image need.
pub fn deb_tools() -> Result<()> {
    debian_packages(DEB_PACKAGES)
}

fn step(name: &str, state: &str) {
    eprintln!("setup: {name}: {state}");
}

fn rust_src() -> Result<()> {
    let toolchains = stdout(
        Command::new("rustup").args(["toolchain", "list"]),
        "listing rustup toolchains",
    )
    .context("rustup is required (the project builds its eBPF programs with nightly)")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("nightly toolchain", "installing");
        util::run(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
            "installing the nightly toolchain (`rustup toolchain install nightly`)",
        )?;
    }
    let installed = stdout(
        Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]),
        "listing nightly components",
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    step("rust-src (nightly)", "installing");
    util::run(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        "installing nightly's rust-src (`rustup component add rust-src --toolchain nightly`)",
    )
}

/// The directory bpf-linker is installed into (its bin/ holds the binary the
/// workspace's .cargo/config.toml names as the BPF linker).
pub fn bpf_toolchain_dir() -> PathBuf {
    target_dir().join("bpf-toolchain")
}

fn bpf_linker() -> Result<()> {
    let dir = bpf_toolchain_dir();
    let binary = dir.join("bin/bpf-linker");

    let version = stdout(
        Command::new("rustc").args(["+nightly", "-vV"]),
        "asking the nightly rustc for its LLVM version",
    )?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .ok_or_else(|| anyhow!("`rustc +nightly -vV` printed no LLVM version:\n{version}"))?
        .to_owned();
    let sysroot = PathBuf::from(stdout(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
        "asking the nightly rustc for its sysroot",
    )?);
    let libllvm = find_libllvm(&sysroot.join("lib"))?;
    let soname = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("odd LLVM library name {}", libllvm.display()))?
        .to_owned();

    let stamp = dir.join("stamp");
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION} llvm {soname}\n");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
        && Command::new(&binary)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }

    step(
        "bpf-linker",
        &format!("building {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major} ({soname}); about a minute"),
    );
    // llvm-sys looks for `<prefix>/lib/libLLVM.so`; the binary then needs the
    // library under its own soname, so both names point at nightly's copy.
    let llvm_lib = dir.join("llvm/lib");
    fs::create_dir_all(&llvm_lib)?;
    for name in ["libLLVM.so", soname.as_str()] {
        let link = llvm_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let llvm_prefix = dir.join("llvm");
    util::run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--force"])
            .args(["--version", &format!("={BPF_LINKER_VERSION}")])
            .args(["--no-default-features", "--features", &format!("llvm-{llvm_major}")])
            .arg("--root")
            .arg(&dir)
            .arg("--target-dir")
            .arg(dir.join("build"))
            .env("LLVM_PREFIX", &llvm_prefix)
            .env(format!("LLVM_SYS_{llvm_major}1_PREFIX"), &llvm_prefix)
            .env(format!("LLVM_SYS_{llvm_major}0_PREFIX"), &llvm_prefix),
        &format!(
            "building bpf-linker {BPF_LINKER_VERSION} with feature llvm-{llvm_major} (if that feature \
             does not exist, this bpf-linker release does not support nightly's LLVM {llvm_major})"
        ),
    )?;
    util::output(
        Command::new(&binary).arg("--version"),
        "running the freshly built bpf-linker",
    )?;
    fs::write(&stamp, wanted)?;
    step("bpf-linker", "installed");
    Ok(())
}

/// Nightly ships LLVM as a shared library in its sysroot's lib/.
fn find_libllvm(lib: &Path) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = fs::read_dir(lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .collect();
    candidates.sort();
    // Prefer the versioned soname (libLLVM.so.22.1-rust-...) when present.
    candidates
        .iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .or_else(|| candidates.first())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "no libLLVM shared library in {}: this nightly toolchain does not ship LLVM as a \
                 shared library, so bpf-linker cannot be built against it",
                lib.display()
            )
        })
}

fn debian_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(
        "Debian packages",
        &format!("installing {}", missing.join(" ")),
    );
    if !have("apt-get") {
        bail!(
            "missing {}; this machine has no apt-get: install them with your package manager",
            missing.join(", ")
        );
    }
    apt_update()?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!(
            "installing Debian packages {} (needs root and a reachable apt mirror)",
            missing.join(" ")
        ),
    )
}

fn apt_update() -> Result<()> {
    util::run(
        Command::new("apt-get").args(["update", "-q"]),
        "apt-get update (needs root and a reachable apt mirror)",
    )
}

/// Where the extracted kernels are kept.
fn kernel_dir() -> PathBuf {
    target_dir().join("vm/kernel")
}

/// Debian's current kernel image, downloaded and unpacked once.
fn kernel() -> Result<Setup> {
    let pkg = match resolve_kernel_package() {
        Ok(pkg) => pkg,
        Err(e) => {
            // Offline or apt lists gone: a kernel fetched earlier still serves.
            if let Ok(pkg) = fs::read_to_string(kernel_dir().join("current")) {
                let pkg = pkg.trim().to_owned();
                let image = kernel_dir().join(&pkg).join("vmlinuz");
                let modules = kernel_dir().join(&pkg).join("modules");
                if image.exists() && modules.join("order").exists() {
                    step(
                        "kernel",
                        &format!("cannot resolve through apt ({e:#}); using cached {pkg}"),
                    );
                    return Ok(Setup {
                        kernel: image,
                        kernel_package: pkg,
                        modules,
                    });
                }
            }
            return Err(e);
        }
    };
    let dir = kernel_dir().join(&pkg);
    let image = dir.join("vmlinuz");
    let modules = dir.join("modules");
    if image.exists() && modules.join("order").exists() {
        fs::write(kernel_dir().join("current"), &pkg)?;
        return Ok(Setup {
            kernel: image,
            kernel_package: pkg,
            modules,
        });
    }
    step("kernel", &format!("downloading {pkg}"));
    let downloads = target_dir().join("vm/downloads");
    fs::create_dir_all(&downloads)?;
    util::run(
        Command::new("apt-get")
            .args(["download", "-q", &pkg])
            .current_dir(&downloads),
        &format!("downloading the kernel package {pkg} (`apt-get download {pkg}`)"),
    )?;
    let deb = fs::read_dir(&downloads)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            anyhow!(
                "apt-get download {pkg} left no .deb in {}",
                downloads.display()
            )
        })?;
    let unpack = downloads.join("unpack");
    let _ = fs::remove_dir_all(&unpack);
    fs::create_dir_all(&unpack)?;
    // ./boot and the module directories VM_MODULES come from; not the rest
    // of the modules (hundreds of MB).
    util::run(
        Command::new("sh")
            .arg("-c")
            .arg(
                "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --wildcards './boot/*' \
                 './lib/modules/*/kernel/fs/*' './lib/modules/*/kernel/lib/*' \
                 './lib/modules/*/kernel/crypto/*' './lib/modules/*/kernel/drivers/block/*'",
            )
            .arg("sh")
            .arg(&deb)
            .arg(&unpack),
        &format!("unpacking /boot and modules from {}", deb.display()),
    )?;
    let boot = unpack.join("boot");
    let mut found_image = None;
    let mut found_config = None;
    for entry in fs::read_dir(&boot)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.starts_with("vmlinuz-") {
            found_image = Some(path);
        } else if name.starts_with("config-") {
            found_config = Some(path);
        }
    }
    let found_image =
        found_image.ok_or_else(|| anyhow!("{} holds no /boot/vmlinuz-*", deb.display()))?;
    fs::create_dir_all(&dir)?;
    if let Some(config) = found_config {
        check_kernel_config(&config)?;
        fs::copy(&config, dir.join("config"))?;
    }
    fs::copy(&found_image, &image)?;
    collect_modules(&unpack.join("lib/modules"), &modules)?;
    fs::write(kernel_dir().join("current"), &pkg)?;
    let _ = fs::remove_dir_all(&unpack);
    let _ = fs::remove_file(&deb);
    step("kernel", &format!("{pkg} ready at {}", image.display()));
    Ok(Setup {
        kernel: image,
        kernel_package: pkg,
        modules,
    })
}

/// Copies [`VM_MODULES`] and everything they depend on from the unpacked
/// module tree into `out`, with `out/order` listing them dependencies first.
fn collect_modules(tree: &Path, out: &Path) -> Result<()> {
    let mut files = std::collections::BTreeMap::new();
    for entry in walk(tree)? {
        if let Some(name) = entry.file_name().and_then(|n| n.to_str()) {
            if let Some(module) = name.strip_suffix(".ko") {
                files.insert(module.replace('-', "_"), entry.clone());
            }
        }
    }
    let mut order: Vec<String> = Vec::new();
    fn visit(
        module: &str,
        files: &std::collections::BTreeMap<String, PathBuf>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        let module = module.replace('-', "_");
        if order.contains(&module) {
            return Ok(());
        }
        if depth > 32 {
            bail!("kernel module dependencies loop at {module}");
        }
        let file = files
            .get(&module)
            .ok_or_else(|| anyhow!("the kernel package has no module {module}"))?;
        let deps = stdout(
            Command::new("modinfo").args(["-F", "depends"]).arg(file),
            &format!("reading the dependencies of {}", file.display()),
        )?;
        for dep in deps.trim().split(',').filter(|d| !d.is_empty()) {
            visit(dep, files, order, depth + 1)?;
        }
        order.push(module);
        Ok(())
    }
    for module in VM_MODULES {
        visit(module, &files, &mut order, 0)?;
    }
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out)?;
    for module in &order {
        fs::copy(&files[module], out.join(format!("{module}.ko")))?;
    }
    fs::write(out.join("order"), order.join("\n") + "\n")?;
    step(
        "kernel",
        &format!("modules for the VM: {}", order.join(" ")),
    );
    Ok(())
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// The package `linux-image-amd64` depends on, preferring its `-unsigned`
/// twin (same kernel, no Secure Boot signature).
fn resolve_kernel_package() -> Result<String> {
    let depends = match apt_depends(KERNEL_META_PACKAGE) {
        Ok(d) => d,
        Err(_) => {
            apt_update()?;
            apt_depends(KERNEL_META_PACKAGE)?
        }
    };
    let pkg = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-") && !d.starts_with('<'))
        .ok_or_else(|| {
            anyhow!("{KERNEL_META_PACKAGE} names no linux-image-* dependency:\n{depends}")
        })?
        .to_owned();
    let unsigned = format!("{pkg}-unsigned");
    let has_unsigned = Command::new("apt-cache")
        .args(["show", &unsigned])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    Ok(if has_unsigned { unsigned } else { pkg })
}

fn apt_depends(pkg: &str) -> Result<String> {
    let out = stdout(
        Command::new("apt-cache").args(["depends", pkg]),
        &format!("apt-cache depends {pkg}"),
    )?;
    if !out.contains("Depends:") {
        bail!("apt knows no package {pkg}");
    }
    Ok(out)
}

/// The options authz needs, read from the package's own config.
fn check_kernel_config(config: &Path) -> Result<()> {
    let text = fs::read_to_string(config)?;
    for option in [
        "CONFIG_BPF_LSM=y",
        "CONFIG_DEBUG_INFO_BTF=y",
        "CONFIG_IMA=y",
        "CONFIG_BPF_SYSCALL=y",
    ] {
        if !text.lines().any(|l| l == option) {
            bail!(
                "{} lacks {option}: this Debian kernel cannot run authz",
                config.display()
            );
        }
    }
    Ok(())
}
