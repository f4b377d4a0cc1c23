//! fork + execve + waitpid, timed; the tiny static program it runs; moving
//! the benchmark process between cgroups.
use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
    time::Instant,
};

use crate::Samples;

/// One program and its argv, ready to be forked and exec'd many times.
pub struct Exec {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: [*const libc::c_char; 1],
    what: String,
}

impl Exec {
    pub fn new(path: &Path, argv: &[&str]) -> Self {
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(*a).expect("no NUL"))
            .collect();
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        Self {
            path: CString::new(path.as_os_str().as_bytes()).expect("no NUL"),
            _argv: argv,
            argv_ptrs,
            envp: [std::ptr::null()],
            what: path.display().to_string(),
        }
    }

    /// One fork+exec+wait: microseconds, and whether the program ran and
    /// exited 0 (false when the exec was refused).
    pub fn once(&self) -> (f64, bool) {
        let start = Instant::now();
        // SAFETY: the child only calls execve and _exit (async-signal-safe) on
        // pointers prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child: execve with the NUL-terminated path and
            // NULL-terminated argv/envp arrays built before the fork, then
            // _exit; both are async-signal-safe.
            unsafe {
                libc::execve(
                    self.path.as_ptr(),
                    self.argv_ptrs.as_ptr(),
                    self.envp.as_ptr(),
                );
                libc::_exit(127);
            }
        }
        assert!(pid > 0, "fork failed: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waits for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        let micros = start.elapsed().as_secs_f64() * 1e6;
        assert_eq!(
            waited,
            pid,
            "waitpid failed: {}",
            std::io::Error::last_os_error()
        );
        (
            micros,
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        )
    }

    /// `n` timed runs; every one must succeed.
    pub fn samples(&self, n: usize) -> Samples {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (us, ok) = self.once();
            assert!(ok, "exec of {} failed or was refused", self.what);
            out.push(us);
        }
        Samples(out)
    }
}

/// The smallest static x86-64 Linux program: one ELF header, one program
/// header and `exit(0)` (129 bytes). Execing it costs the kernel's exec path
/// and little else, so authz's share of an exec is as large as it gets.
pub fn tiny_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    // mov eax, 60 (exit); xor edi, edi; syscall
    const CODE: [u8; 9] = [0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];
    let size = (64 + 56 + CODE.len()) as u64;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(BASE + 120).to_le_bytes()); // entry: the code
    b.extend_from_slice(&64u64.to_le_bytes()); // program headers
    b.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    b.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 0, 0, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0, BASE, BASE, size, size, 0x1000] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&CODE);
    b
}

/// Writes `contents` as an executable at `path`.
pub fn write_program(path: &Path, contents: &[u8]) -> PathBuf {
    fs::write(path, contents).expect("write program");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_owned()
}

/// While alive, the benchmark process (and so every child it forks) is in
/// the cgroup at `dir`; on drop it goes back to the root cgroup.
pub struct InCgroup;

impl InCgroup {
    pub fn enter(dir: &Path) -> Self {
        join(dir);
        Self
    }
}

impl Drop for InCgroup {
    fn drop(&mut self) {
        join(Path::new(authz_agent::defaults::CGROUP_ROOT));
    }
}

fn join(dir: &Path) {
    fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .unwrap_or_else(|e| panic!("cannot move the benchmark into {}: {e}", dir.display()));
}
