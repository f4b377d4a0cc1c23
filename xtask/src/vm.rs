//! The test VM: Debian's kernel (BPF LSM active) booted by QEMU under software
//! emulation, with an initramfs holding busybox, the agent and whatever the
//! caller adds. Results come back on the serial console between marker lines.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{
    build, setup,
    util::{self, shell_quote, target_dir, workspace_root},
};

/// Printed by /init once the VM is up and its filesystems are mounted.
pub const READY: &str = "AUTHZ-VM-READY";
/// Printed by /init after the command, with its exit status.
pub const EXIT_PREFIX: &str = "AUTHZ-VM-EXIT=";
/// Where the agent lives inside the VM.
pub const AGENT_IN_VM: &str = "/usr/local/bin/authz-agent";

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
    /// Kill the VM after this many seconds (default: 900 with a command, no
    /// limit for an interactive shell).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Memory for the VM, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// The command to run inside the VM (after `--`); none for a shell.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// QEMU settings for one boot.
#[derive(Clone, Debug)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory: u32,
    pub cpus: u32,
    pub timeout: Option<Duration>,
    /// Extra kernel command line parameters (e.g. `ima_policy=tcb`).
    pub cmdline: String,
}

/// Host programs copied into every VM (with their libraries): mkfs for the
/// filesystems the digest cache tests mount on loop devices.
const VM_TOOLS: &[&str] = &[
    "/usr/sbin/mke2fs",
    "/usr/sbin/mkfs.xfs",
    "/usr/sbin/mkfs.btrfs",
];

/// What a non-interactive boot reported.
#[derive(Debug, Default)]
pub struct Outcome {
    /// /init printed [`READY`]: the kernel booted and userspace ran.
    pub ready: bool,
    /// The exit status /init reported for the command.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Every console line (carriage returns removed).
    pub lines: Vec<String>,
}

impl Outcome {
    /// Fails unless the VM booted, ran the command and reported its status.
    pub fn require_completed(&self) -> Result<i32> {
        if self.timed_out {
            bail!("the VM timed out{}", tail(&self.lines));
        }
        if !self.ready {
            bail!(
                "the VM did not boot (no `{READY}` on the console){}",
                tail(&self.lines)
            );
        }
        self.exit_code.ok_or_else(|| {
            anyhow!(
                "the VM stopped without reporting the command's exit status{}",
                tail(&self.lines)
            )
        })
    }
}

fn tail(lines: &[String]) -> String {
    let start = lines.len().saturating_sub(30);
    if lines.is_empty() {
        return String::new();
    }
    format!("; last console lines:\n{}", lines[start..].join("\n"))
}

/// An initramfs being assembled in a staging directory.
pub struct Initramfs {
    root: PathBuf,
    libs: BTreeSet<PathBuf>,
}

impl Initramfs {
    /// A fresh staging tree with busybox, /init, the agent, the kernel
    /// modules setup collected (loaded by /init) and [`VM_TOOLS`].
    pub fn new(name: &str, agent: &Path, setup: &setup::Setup) -> Result<Self> {
        let root = target_dir().join("vm").join(name).join("root");
        if root.exists() {
            fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
        }
        for dir in [
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "usr/local/bin",
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "etc",
            "root",
            "authz",
        ] {
            fs::create_dir_all(root.join(dir))?;
        }
        let mut initramfs = Self {
            root,
            libs: BTreeSet::new(),
        };
        initramfs.copy_file(Path::new("/bin/busybox"), "/bin/busybox", 0o755)?;
        initramfs.add_file("/init", INIT.as_bytes(), 0o755)?;
        initramfs.add_file(
            "/etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            0o644,
        )?;
        initramfs.add_file("/etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)?;
        initramfs.add_binary(agent, AGENT_IN_VM)?;
        let order = fs::read_to_string(setup.modules.join("order"))
            .with_context(|| format!("reading {}/order", setup.modules.display()))?;
        for module in order.lines().filter(|l| !l.is_empty()) {
            let file = format!("{module}.ko");
            initramfs.copy_file(
                &setup.modules.join(&file),
                &format!("/lib/modules/authz/{file}"),
                0o644,
            )?;
        }
        initramfs.add_file("/lib/modules/authz/order", order.as_bytes(), 0o644)?;
        for tool in VM_TOOLS {
            initramfs.add_binary(Path::new(tool), tool)?;
        }
        Ok(initramfs)
    }

    /// An empty staging tree (for an archive added on top of another image:
    /// it creates no directory the image already has with other modes).
    pub fn empty(name: &str) -> Result<Self> {
        let root = target_dir().join("vm").join(name).join("root");
        if root.exists() {
            fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
        }
        fs::create_dir_all(&root)?;
        Ok(Self {
            root,
            libs: BTreeSet::new(),
        })
    }

    /// A symbolic link at `dest` pointing to `target`.
    pub fn add_symlink(&mut self, dest: &str, target: &str) -> Result<()> {
        let path = self.path(dest);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path)
            .with_context(|| format!("linking {dest} in the initramfs"))
    }

    fn path(&self, dest: &str) -> PathBuf {
        self.root.join(dest.trim_start_matches('/'))
    }

    /// Writes `contents` at `dest` inside the VM.
    pub fn add_file(&mut self, dest: &str, contents: &[u8], mode: u32) -> Result<()> {
        let path = self.path(dest);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, contents)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    fn copy_file(&mut self, src: &Path, dest: &str, mode: u32) -> Result<()> {
        let path = self.path(dest);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(src, &path)
            .with_context(|| format!("copying {} into the initramfs", src.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Copies an executable (debug info stripped, to keep the VM's RAM free)
    /// and the shared libraries it needs.
    pub fn add_binary(&mut self, src: &Path, dest: &str) -> Result<()> {
        self.add_executable(src, dest)?;
        for lib in shared_libraries(src)? {
            if self.libs.insert(lib.clone()) {
                let dest = lib.to_string_lossy().into_owned();
                self.copy_file(&lib, &dest, 0o755)?;
            }
        }
        Ok(())
    }

    /// Copies an executable (debug info stripped) without its libraries:
    /// for an image whose own libraries it uses.
    pub fn add_executable(&mut self, src: &Path, dest: &str) -> Result<()> {
        let path = self.path(dest);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        util::output(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&path)
                .arg(src),
            &format!("stripping {} into the initramfs", src.display()),
        )?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// Packs the tree as an uncompressed newc cpio archive (decompressing under
    /// software emulation would cost more than reading a bigger file).
    pub fn pack(&self) -> Result<PathBuf> {
        let out = self.root.with_file_name("initramfs.cpio");
        util::run(
            Command::new("sh")
                .arg("-c")
                .arg("cd \"$1\" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0 > \"$2\"")
                .arg("sh")
                .arg(&self.root)
                .arg(&out),
            "packing the initramfs with cpio",
        )?;
        Ok(out)
    }
}

/// Absolute paths of the shared libraries `binary` loads (none when static).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            bail!(
                "{} needs a library that is not installed: {line}",
                binary.display()
            );
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// /init: mounts what authz needs, then runs /authz/cmd or a shell.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for m in $(cat /lib/modules/authz/order); do
    insmod /lib/modules/authz/$m.ko || echo "authz VM: cannot load module $m"
done
hostname authz-vm
echo "AUTHZ-VM-READY kernel=$(uname -r) lsm=$(cat /sys/kernel/security/lsm)"
if [ -f /authz/cmd ]; then
    export NO_COLOR=1
    cd /root
    sh /authz/cmd < /dev/null
    echo "AUTHZ-VM-EXIT=$?"
else
    echo "authz VM: authz-agent is in PATH; try 'authz-agent check'. Leave with 'exit'."
    setsid cttyhack sh -l
fi
sync
poweroff -f
"#;

/// Boots the VM and streams console lines to `on_line` until it powers off.
pub fn boot(boot: &Boot, mut on_line: impl FnMut(&str)) -> Result<Outcome> {
    let mut cmd = qemu(boot, false);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (run `cargo xtask setup`)")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let mut stderr = child.stderr.take().context("qemu stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = boot.timeout.map(|t| Instant::now() + t);
    let mut outcome = Outcome::default();
    loop {
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left,
                None => {
                    outcome.timed_out = true;
                    let _ = child.kill();
                    break;
                }
            },
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                if line.starts_with(READY) {
                    outcome.ready = true;
                } else if let Some(code) = line.strip_prefix(EXIT_PREFIX) {
                    outcome.exit_code = code.trim().parse().ok();
                }
                on_line(&line);
                outcome.lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    let qemu_err = err_reader.join().unwrap_or_default();
    if !outcome.ready && !status.success() && !outcome.timed_out {
        bail!("qemu failed ({status}): {}", qemu_err.trim());
    }
    Ok(outcome)
}

fn qemu(boot: &Boot, interactive: bool) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    // KVM is not usable on these machines (see README); TCG is slower but works.
    cmd.args(["-accel", "tcg", "-cpu", "max", "-no-reboot"])
        .args([
            "-m",
            &boot.memory.to_string(),
            "-smp",
            &boot.cpus.to_string(),
        ])
        .arg("-kernel")
        .arg(&boot.kernel)
        .arg("-initrd")
        .arg(&boot.initrd)
        .args([
            "-append",
            format!("console=ttyS0 quiet loglevel=1 panic=-1 {}", boot.cmdline).trim_end(),
        ]);
    if interactive {
        cmd.arg("-nographic");
    } else {
        cmd.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
    }
    cmd
}

/// `cargo xtask vm`.
pub fn run(args: &VmArgs) -> Result<std::process::ExitCode> {
    let setup = setup::run()?;
    let built = build::build(args.release)?;
    let mut initramfs = Initramfs::new("shell", &built.agent, &setup)?;
    if !args.cmd.is_empty() {
        initramfs.add_file("/authz/cmd", command_script(&args.cmd).as_bytes(), 0o644)?;
    }
    let initrd = initramfs.pack()?;
    let boot_cfg = Boot {
        kernel: setup.kernel.clone(),
        initrd,
        memory: args.memory,
        cpus: args.cpus,
        timeout: match (args.timeout, args.cmd.is_empty()) {
            (Some(0), _) => None,
            (Some(secs), _) => Some(Duration::from_secs(secs)),
            (None, true) => None,
            (None, false) => Some(Duration::from_secs(900)),
        },
        cmdline: String::new(),
    };
    if args.cmd.is_empty() {
        eprintln!(
            "vm: booting {} (interactive; Ctrl-A X kills QEMU)",
            setup.kernel_package
        );
        let status = qemu(&boot_cfg, true)
            .status()
            .context("starting qemu-system-x86_64")?;
        return Ok(if status.success() {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        });
    }
    eprintln!(
        "vm: booting {} to run: {}",
        setup.kernel_package,
        args.cmd.join(" ")
    );
    let code = run_command(&boot_cfg)?;
    Ok(std::process::ExitCode::from(code.clamp(0, 255) as u8))
}

/// Runs the VM's /authz/cmd, passing its console output through to stdout.
pub fn run_command(boot_cfg: &Boot) -> Result<i32> {
    let mut inside = false;
    let outcome = boot(boot_cfg, |line| {
        if line.starts_with(READY) {
            inside = true;
        } else if line.starts_with(EXIT_PREFIX) {
            inside = false;
        } else if inside {
            println!("{line}");
        }
    })?;
    outcome.require_completed()
}

/// A shell script running `cmd`: a single argument is a shell command line
/// (`vm -- 'a | b'`), several are an argv.
pub fn command_script(cmd: &[String]) -> String {
    if cmd.len() == 1 {
        format!("{}\n", cmd[0])
    } else {
        let words: Vec<String> = cmd.iter().map(|w| shell_quote(w)).collect();
        format!("{}\n", words.join(" "))
    }
}

/// `cargo xtask demo`.
pub fn demo(args: &DemoArgs) -> Result<std::process::ExitCode> {
    let setup = setup::run()?;
    let built = build::build(args.release)?;
    let mut initramfs = Initramfs::new("demo", &built.agent, &setup)?;
    let script =
        fs::read(workspace_root().join("xtask/demo.sh")).context("reading xtask/demo.sh")?;
    initramfs.add_file("/authz/demo.sh", &script, 0o755)?;
    initramfs.add_file("/authz/cmd", b"sh /authz/demo.sh\n", 0o644)?;
    let boot_cfg = Boot {
        kernel: setup.kernel.clone(),
        initrd: initramfs.pack()?,
        memory: 2048,
        cpus: 2,
        timeout: Some(Duration::from_secs(600)),
        cmdline: String::new(),
    };
    eprintln!(
        "demo: booting {} (software emulation: expect about a minute)",
        setup.kernel_package
    );
    let code = run_command(&boot_cfg)?;
    if code != 0 {
        bail!("the demo failed inside the VM (exit status {code})");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_scripts_keep_argv_boundaries() {
        assert_eq!(
            command_script(&["echo hi | wc -c".into()]),
            "echo hi | wc -c\n"
        );
        assert_eq!(
            command_script(&["sh".into(), "-c".into(), "exit 3".into()]),
            "sh -c 'exit 3'\n"
        );
    }

    #[test]
    fn incomplete_runs_are_failures() {
        let mut o = Outcome::default();
        assert!(o.require_completed().is_err(), "no boot");
        o.ready = true;
        assert!(o.require_completed().is_err(), "no exit status");
        o.exit_code = Some(0);
        assert_eq!(o.require_completed().unwrap(), 0);
        o.timed_out = true;
        assert!(o.require_completed().is_err(), "timeout");
    }
}
