//! Shared fixtures for the integration tests. These tests need root and a
//! kernel with BPF LSM; `cargo xtask test` runs them inside the project's VM.
//! Run anywhere else they fail loudly instead of skipping.
use std::{
    fs, io,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

pub mod daemon;
pub mod fuse;

use authz_agent::{
    cgroup::Hierarchy,
    defaults::CGROUP_ROOT,
    enforcer::{boot_time_ns, DecisionEvent, Enforcer, LoadOptions, Mode},
};
use authz_common::{Permit, PermitKey};
use sha2::{Digest as _, Sha256};

/// How long to wait for a kernel event (TCG VMs are slow).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the enforcer in `mode`, or panics saying why this environment cannot
/// run the integration tests.
pub fn enforcer(mode: Mode) -> Enforcer {
    enforcer_with(LoadOptions {
        mode,
        ..LoadOptions::default()
    })
}

/// Loads the enforcer with `opts`, or panics saying why.
pub fn enforcer_with(opts: LoadOptions) -> Enforcer {
    require_environment();
    Enforcer::load(&opts)
        .unwrap_or_else(|e| panic!("cannot load the enforcer: {}", error_chain(&e)))
}

/// An enforcer that enforces only the cgroup `<test>/jail` (by path), so the
/// test's own helper execs run unchecked: (enforcer, cgroups, jail directory,
/// jail id).
pub fn jail(name: &str) -> (Enforcer, TestCgroups, PathBuf, u64) {
    let mut cgroups = TestCgroups::new(name);
    let (dir, id) = cgroups.create("jail");
    let enforcer = enforcer_with(LoadOptions {
        mode: Mode::Enforce,
        enforced_paths: vec![cgroups.path("jail")],
        ..LoadOptions::default()
    });
    (enforcer, cgroups, dir, id)
}

/// Runs `cmd` (a helper: mkfs, mount...) and panics with its output unless
/// it succeeds.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether a test permit covers descendant cgroups.
pub const DESCENDANTS: bool = true;
/// A test permit for its own cgroup only.
pub const EXACT: bool = false;

/// A permit for `digest` in `cgroup_id`, valid for an hour.
pub fn permit(digest: [u8; 32], cgroup_id: u64, id: u8, descendants: bool) -> (PermitKey, Permit) {
    (
        PermitKey { digest, cgroup_id },
        Permit::single([id; 16], boot_time_ns() + 3600 * 1_000_000_000, descendants),
    )
}

/// A cgroup subtree for one test, removed (children first) on drop.
pub struct TestCgroups {
    pub hierarchy: Hierarchy,
    pub base: String,
    created: Vec<String>,
}

impl TestCgroups {
    pub fn new(name: &str) -> Self {
        let hierarchy = Hierarchy::open(CGROUP_ROOT).expect("cgroup2 at /sys/fs/cgroup");
        let base = format!("/authz-test-{name}-{}", std::process::id());
        hierarchy.create(&base).expect("create test cgroup");
        Self {
            hierarchy,
            base: base.clone(),
            created: vec![base],
        }
    }

    /// The cgroup path of `base/rel` (as `enforce_cgroups` names it).
    pub fn path(&self, rel: &str) -> String {
        format!("{}/{}", self.base, rel)
    }

    /// Creates `base/rel`; returns (its directory, its id).
    pub fn create(&mut self, rel: &str) -> (PathBuf, u64) {
        let path = format!("{}/{}", self.base, rel);
        let id = self.hierarchy.create(&path).expect("create cgroup");
        self.created.push(path.clone());
        (self.hierarchy.dir(&path).expect("dir"), id)
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        for path in self.created.iter().rev() {
            let _ = self.hierarchy.remove(path);
        }
    }
}

/// Panics unless running as root on a kernel with BPF LSM.
pub fn require_environment() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "integration tests need root and a BPF LSM kernel: run them with `cargo xtask test`"
        );
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

/// A fresh busybox copy to authorize, in a world-readable directory.
pub fn job(scratch: &Scratch, name: &str) -> Program {
    fs::set_permissions(
        &scratch.dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let p = scratch.program(name);
    // Unique content per job: a permit for one never covers another.
    let mut f = fs::OpenOptions::new().append(true).open(&p.path).unwrap();
    std::io::Write::write_all(&mut f, name.as_bytes()).unwrap();
    drop(f);
    Program::at(p.path.clone())
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
        self.run_as(cgroup_dir, None, args)
    }

    /// Runs the program inside `cgroup_dir`, as `uid` (uid and gid) when given:
    /// the child joins the cgroup while still root, then drops privileges.
    pub fn run_as(&self, cgroup_dir: &Path, uid: Option<u32>, args: &[&str]) -> io::Result<Output> {
        let mut cmd = Command::new(&self.path);
        cmd.arg0("busybox").args(args);
        in_cgroup_as(&mut cmd, cgroup_dir, uid)
    }
}

/// Runs `cmd` after moving the child into `cgroup_dir` and, when `uid` is
/// given, dropping to that uid/gid (with no supplementary groups).
pub fn in_cgroup_as(cmd: &mut Command, cgroup_dir: &Path, uid: Option<u32>) -> io::Result<Output> {
    in_cgroup_with(cmd, cgroup_dir, uid.map(Creds::user).as_ref())
}

/// Credentials to act with: uid, primary gid and supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Creds {
    /// `uid` with the same gid and no supplementary groups.
    pub fn user(uid: u32) -> Self {
        Self {
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }

    /// `uid` (gid the same) with `group` as its one supplementary group.
    pub fn member(uid: u32, group: u32) -> Self {
        Self {
            groups: vec![group],
            ..Self::user(uid)
        }
    }
}

/// Runs `cmd` after moving the child into `cgroup_dir` and, when `creds` are
/// given, taking them (groups first, uid last).
pub fn in_cgroup_with(
    cmd: &mut Command,
    cgroup_dir: &Path,
    creds: Option<&Creds>,
) -> io::Result<Output> {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(cgroup_dir.join("cgroup.procs"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
    let creds = creds.cloned();
    cmd.stdin(Stdio::null());
    // SAFETY: the closure only makes async-signal-safe syscalls (write,
    // setgroups, setgid, setuid) on values prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let zero = b"0";
            if libc::write(fd, zero.as_ptr().cast(), 1) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(c) = &creds {
                if libc::setgroups(c.groups.len(), c.groups.as_ptr()) != 0
                    || libc::setgid(c.gid) != 0
                    || libc::setuid(c.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output();
    drop(procs);
    out
}

/// Runs `f` on a new thread that holds `creds`, and only that thread: raw
/// syscalls, not libc's wrappers, which would change every thread of the test.
/// A Unix socket it connects carries them as its peer credentials, whichever
/// thread uses the socket afterwards.
pub fn on_thread_as<T: Send + 'static>(creds: &Creds, f: impl FnOnce() -> T + Send + 'static) -> T {
    let c = creds.clone();
    std::thread::spawn(move || {
        let (uid, gid) = (libc::c_long::from(c.uid), libc::c_long::from(c.gid));
        // SAFETY: setgroups/setresgid/setresuid on the calling thread only,
        // with a pointer and length from a live Vec.
        let rc = unsafe {
            [
                libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()),
                libc::syscall(libc::SYS_setresgid, gid, gid, gid),
                libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            ]
        };
        assert!(
            rc.iter().all(|&r| r == 0),
            "cannot take {c:?}: {}",
            io::Error::last_os_error()
        );
        f()
    })
    .join()
    .expect("the thread with other credentials panicked")
}

/// Adds group `name` with `gid` to /etc/group (once; the VM's is writable).
pub fn add_group(name: &str, gid: u32) {
    let text = fs::read_to_string("/etc/group").unwrap_or_default();
    if text.lines().any(|l| l.starts_with(&format!("{name}:"))) {
        return;
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open("/etc/group")
        .expect("open /etc/group");
    io::Write::write_all(&mut f, format!("{name}:x:{gid}:\n").as_bytes())
        .expect("append to /etc/group");
}

/// The unprivileged user the attacker tests run as.
pub const NOBODY: u32 = 65534;

/// `fexecve(fd, argv)` in a child; `Err` when the exec itself failed.
pub fn fexecve(fd: std::os::fd::RawFd, argv: &[&str]) -> io::Result<Output> {
    use std::ffi::CString;
    struct Args {
        _strings: Vec<CString>,
        ptrs: Vec<*const libc::c_char>,
        env: [*const libc::c_char; 1],
    }
    // SAFETY: the pointers refer to `_strings`, owned by the same struct and
    // never mutated; the child only reads them.
    unsafe impl Send for Args {}
    // SAFETY: as above.
    unsafe impl Sync for Args {}
    impl Args {
        fn exec(&self, fd: std::os::fd::RawFd) -> io::Error {
            // SAFETY: NULL-terminated arrays of valid C strings.
            unsafe { libc::fexecve(fd, self.ptrs.as_ptr(), self.env.as_ptr()) };
            io::Error::last_os_error()
        }
    }
    let strings: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a).expect("no NUL"))
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let args = Args {
        _strings: strings,
        ptrs,
        env: [std::ptr::null()],
    };
    let mut cmd = Command::new("/authz-unreachable");
    cmd.stdin(Stdio::null());
    // SAFETY: fexecve is async-signal-safe; its arguments were built before fork.
    unsafe {
        cmd.pre_exec(move || Err(args.exec(fd)));
    }
    cmd.output()
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
    authz_agent::cgroup::Hierarchy::open(authz_agent::defaults::CGROUP_ROOT)
        .expect("cgroup2")
        .id(&path)
        .expect("own cgroup id")
}

/// Waits for the event about `path` (the file checked).
#[track_caller]
pub fn event_for(enforcer: &mut Enforcer, path: &Path) -> DecisionEvent {
    let name = path.to_string_lossy().into_owned();
    enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.path == name)
        .unwrap_or_else(|| panic!("no kernel event for {name} within {EVENT_TIMEOUT:?}"))
}

/// The wall clock (`CLOCK_REALTIME`) stepped by a fixed amount, stepped back by
/// the same amount on drop, so the time that really passed meanwhile is kept
/// and a failing test still leaves the VM's clock right. Monotonic and boot
/// clocks are not affected.
pub struct WallClockStep {
    seconds: i64,
}

impl WallClockStep {
    /// Steps the wall clock by `seconds` (negative: back).
    pub fn by(seconds: i64) -> Self {
        step_wall_clock(seconds).expect("step the wall clock (root in the VM)");
        Self { seconds }
    }
}

impl Drop for WallClockStep {
    fn drop(&mut self) {
        if let Err(e) = step_wall_clock(-self.seconds) {
            eprintln!("cannot step the wall clock back by {}s: {e}", self.seconds);
        }
    }
}

fn step_wall_clock(seconds: i64) -> io::Result<()> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    ts.tv_sec += seconds;
    // SAFETY: clock_settime only reads the timespec we pass.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
