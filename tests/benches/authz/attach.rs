//! Detaching and re-attaching a running daemon's programs, so that "no
//! agent" and "agent" can alternate every few dozen execs instead of once per
//! daemon restart (seconds under emulation, during which the host's load can
//! change). The programs, their maps (permits, digest cache) and the daemon
//! stay as they are; only the links that attach the programs to their hooks
//! come and go, through the kernel's own link API.
use std::{
    ffi::CString,
    fs, io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

// bpf(2) commands (include/uapi/linux/bpf.h).
const BPF_OBJ_PIN: u64 = 6;
const BPF_OBJ_GET: u64 = 7;
const BPF_PROG_GET_FD_BY_ID: u64 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u64 = 15;
const BPF_RAW_TRACEPOINT_OPEN: u64 = 17;

/// `union bpf_attr`, zeroed beyond the fields a command uses.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn u32(mut self, offset: usize, v: u32) -> Self {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(mut self, offset: usize, v: u64) -> Self {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: u64, attr: &mut Attr, what: &str) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, fully initialized bpf_attr of the size given;
    // pointers inside it refer to buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("bpf({what}): {e}")));
    }
    Ok(r)
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a file descriptor the kernel just returned to us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL")
}

struct Program {
    pin: PathBuf,
    prog: OwnedFd,
    link: Option<OwnedFd>,
}

/// Whether process `pid` holds a BPF link descriptor (its fdinfo names a
/// `link_type`): then closing the bench's descriptors detaches nothing.
pub fn holds_bpf_links(pid: u32) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|e| fs::read_to_string(e.path()).is_ok_and(|info| info.contains("link_type:")))
}

/// The daemon's programs, attached or not at the bench's command.
pub struct Switch {
    programs: Vec<Program>,
}

impl Switch {
    /// Takes over every link pinned in `pin_dir` (`link-*`): keeps its
    /// program and link open and removes the pin, so that closing the link
    /// detaches the program.
    pub fn take(pin_dir: &Path) -> Self {
        let mut pins: Vec<PathBuf> = fs::read_dir(pin_dir)
            .expect("read the pin directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("link-"))
            })
            .collect();
        pins.sort();
        assert!(!pins.is_empty(), "no pinned links in {}", pin_dir.display());
        let programs = pins
            .into_iter()
            .map(|pin| {
                let path = c_path(&pin);
                let link = owned(
                    bpf(
                        BPF_OBJ_GET,
                        &mut Attr::new().u64(0, path.as_ptr() as u64),
                        "OBJ_GET",
                    )
                    .expect("open pinned link"),
                );
                // struct bpf_link_info: type, id, prog_id, ...
                let mut info = [0u32; 16];
                let mut attr = Attr::new()
                    .u32(0, link.as_raw_fd() as u32)
                    .u32(4, std::mem::size_of_val(&info) as u32)
                    .u64(8, info.as_mut_ptr() as u64);
                bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, "OBJ_GET_INFO_BY_FD").expect("link info");
                let prog = owned(
                    bpf(
                        BPF_PROG_GET_FD_BY_ID,
                        &mut Attr::new().u32(0, info[2]),
                        "PROG_GET_FD_BY_ID",
                    )
                    .expect("open the linked program"),
                );
                fs::remove_file(&pin).expect("unpin the link");
                Program {
                    pin,
                    prog,
                    link: Some(link),
                }
            })
            .collect();
        Self { programs }
    }

    /// No program on any hook: execs cost what they cost without authz.
    pub fn detach(&mut self) {
        for p in &mut self.programs {
            p.link = None;
        }
    }

    /// Every program on its hook again (LSM programs may be re-attached).
    pub fn attach(&mut self) {
        for p in &mut self.programs {
            if p.link.is_none() {
                let mut attr = Attr::new().u64(0, 0).u32(8, p.prog.as_raw_fd() as u32);
                p.link = Some(owned(
                    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr, "RAW_TRACEPOINT_OPEN")
                        .expect("re-attach"),
                ));
            }
        }
    }

    /// Attaches and pins the links where they were: the daemon's state as
    /// it was before [`Switch::take`].
    pub fn restore(mut self) {
        self.attach();
        for p in &self.programs {
            let path = c_path(&p.pin);
            let fd = p.link.as_ref().expect("attached").as_raw_fd() as u32;
            bpf(
                BPF_OBJ_PIN,
                &mut Attr::new().u64(0, path.as_ptr() as u64).u32(8, fd),
                "OBJ_PIN",
            )
            .expect("pin the link again");
        }
    }
}
