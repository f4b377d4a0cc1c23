//! Shared fixtures for the integration tests. These tests need root and a
//! kernel with BPF LSM; `cargo xtask test` runs them inside the project's VM.
//! Run anywhere else they fail loudly instead of skipping.
use std::{
    fs,
    io,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use authz_agent::enforcer::{DecisionEvent, Enforcer, LoadOptions, Mode};
use sha2::{Digest as _, Sha256};

/// How long to wait for a kernel event (TCG VMs are slow).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the enforcer in `mode`, or panics saying why this environment cannot
/// run the integration tests.
pub fn enforcer(mode: Mode) -> Enforcer {
    require_environment();
    Enforcer::load(&LoadOptions {
        mode,
        ..LoadOptions::default()
    })
    .unwrap_or_else(|e| panic!("cannot load the enforcer: {}", error_chain(&e)))
}

/// Panics unless running as root on a kernel with BPF LSM.
pub fn require_environment() {
    if !nix::unistd::geteuid().is_root() {
        panic!("integration tests need root and a BPF LSM kernel: run them with `cargo xtask test`");
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A scratch directory removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/authz-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Self { dir }
    }

    /// A copy of busybox at `name`: a real static binary whose digest no
    /// permit names yet (unless a test grants one). Runs applets by argv[1].
    pub fn program(&self, name: &str) -> Program {
        let path = self.dir.join(name);
        fs::copy(busybox(), &path).expect("copy busybox");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        Program::at(path)
    }

    /// A file with `contents`, mode 0755.
    pub fn file(&self, name: &str, contents: &[u8]) -> Program {
        let path = self.dir.join(name);
        fs::write(&path, contents).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        Program::at(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An executable file and its SHA-256.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    pub digest: [u8; 32],
}

impl Program {
    pub fn at(path: PathBuf) -> Self {
        let digest = sha256_file(&path);
        Self { path, digest }
    }

    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }

    /// Runs the program with `args`; `Err` when exec itself failed.
    ///
    /// argv[0] is `busybox` so that busybox copies take the applet from argv[1]
    /// whatever their file name.
    pub fn run(&self, args: &[&str]) -> io::Result<Output> {
        Command::new(&self.path)
            .arg0("busybox")
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs the program inside `cgroup_dir` (moved there before exec).
    pub fn run_in_cgroup(&self, cgroup_dir: &Path, args: &[&str]) -> io::Result<Output> {
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(cgroup_dir.join("cgroup.procs"))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
        let mut cmd = Command::new(&self.path);
        cmd.arg0("busybox").args(args).stdin(Stdio::null());
        // SAFETY: only write(2) on an fd opened before fork: async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let zero = b"0";
                if libc::write(fd, zero.as_ptr().cast(), 1) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output();
        drop(procs);
        out
    }
}

/// Asserts `result` is an exec refused with EPERM.
#[track_caller]
pub fn assert_eperm(result: &io::Result<Output>) {
    match result {
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EPERM),
            "exec failed, but with {e} instead of EPERM"
        ),
        Ok(out) => panic!("exec was allowed (status {}); expected EPERM", out.status),
    }
}

/// Asserts `result` is an exec that ran and exited 0.
#[track_caller]
pub fn assert_ran(result: &io::Result<Output>) {
    match result {
        Err(e) => panic!("exec was refused: {e}"),
        Ok(out) => assert!(
            out.status.success(),
            "program ran but failed: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

pub fn sha256_file(path: &Path) -> [u8; 32] {
    let data = fs::read(path).expect("read for hashing");
    Sha256::digest(&data).into()
}

pub fn busybox() -> &'static Path {
    Path::new("/bin/busybox")
}

/// The cgroup id of the calling process.
pub fn own_cgroup_id() -> u64 {
    let path = authz_agent::cgroup::current().expect("own cgroup");
    authz_agent::cgroup::Hierarchy::open(authz_agent::cgroup::CGROUP_ROOT)
        .expect("cgroup2")
        .id(&path)
        .expect("own cgroup id")
}

/// Waits for the event about `path`.
#[track_caller]
pub fn event_for(enforcer: &mut Enforcer, path: &Path) -> DecisionEvent {
    let name = path.to_string_lossy().into_owned();
    enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.filename == name)
        .unwrap_or_else(|| panic!("no kernel event for {name} within {EVENT_TIMEOUT:?}"))
}
