//! A FUSE filesystem serving one file whose content the test changes at will:
//! what an attacker's FUSE server does to serve one content to the kernel's
//! hash and another to the loader. Speaks the kernel's FUSE protocol on
//! /dev/fuse directly (no libfuse), just the requests an exec makes.
use std::{
    ffi::CString,
    fs,
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_RELEASE: u32 = 18;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_BATCH_FORGET: u32 = 42;
const ROOT: u64 = 1;
const FILE: u64 = 2;
/// The one file's name.
pub const NAME: &str = "prog";
const IN_HEADER: usize = 40;

/// A mounted FUSE filesystem with one executable file, `NAME`.
pub struct FuseFile {
    pub mountpoint: PathBuf,
    content: Arc<Mutex<Vec<u8>>>,
}

impl FuseFile {
    /// Mounts at `mountpoint` (created) serving `content`.
    pub fn mount(mountpoint: &Path, content: Vec<u8>) -> Self {
        fs::create_dir_all(mountpoint).expect("mountpoint");
        let dev = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("/dev/fuse (is the fuse module loaded?)");
        let options = CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            dev.as_raw_fd()
        ))
        .unwrap();
        let target = CString::new(mountpoint.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings; `data` is the option string.
        let rc = unsafe {
            libc::mount(
                c"authz-test-fuse".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount fuse: {}", std::io::Error::last_os_error());
        let content = Arc::new(Mutex::new(content));
        let served = content.clone();
        std::thread::spawn(move || serve(dev, served));
        Self {
            mountpoint: mountpoint.to_owned(),
            content,
        }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.mountpoint.join(NAME)
    }

    /// Serves `content` from now on (no cache invalidation: the server lies).
    pub fn set(&self, content: Vec<u8>) {
        *self.content.lock().unwrap() = content;
    }
}

impl Drop for FuseFile {
    fn drop(&mut self) {
        let target = CString::new(self.mountpoint.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn serve(mut dev: fs::File, content: Arc<Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match dev.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => return, // unmounted
        };
        if n < IN_HEADER {
            continue;
        }
        let req = &buf[..n];
        let opcode = u32_at(req, 4);
        let unique = u64_at(req, 8);
        let nodeid = u64_at(req, 16);
        let body = &req[IN_HEADER..];
        let reply: Result<Vec<u8>, i32> = match opcode {
            FUSE_INIT => Ok(init_out(body)),
            FUSE_LOOKUP => {
                let name = body.split(|&b| b == 0).next().unwrap_or_default();
                if nodeid == ROOT && name == NAME.as_bytes() {
                    let size = content.lock().unwrap().len() as u64;
                    Ok(entry_out(FILE, size))
                } else {
                    Err(libc::ENOENT)
                }
            }
            FUSE_GETATTR => {
                let size = content.lock().unwrap().len() as u64;
                Ok(attr_out(nodeid, size))
            }
            FUSE_OPEN | FUSE_OPENDIR => Ok(open_out()),
            FUSE_READ => {
                let offset = u64_at(body, 8) as usize;
                let size = u32_at(body, 16) as usize;
                let c = content.lock().unwrap();
                let start = offset.min(c.len());
                let end = (offset + size).min(c.len());
                Ok(c[start..end].to_vec())
            }
            FUSE_RELEASE | FUSE_RELEASEDIR | FUSE_FLUSH => Ok(Vec::new()),
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => continue,
            _ => Err(libc::ENOSYS),
        };
        let (error, payload) = match reply {
            Ok(p) => (0i32, p),
            Err(e) => (-e, Vec::new()),
        };
        let mut out = Vec::with_capacity(16 + payload.len());
        out.extend_from_slice(&((16 + payload.len()) as u32).to_le_bytes());
        out.extend_from_slice(&error.to_le_bytes());
        out.extend_from_slice(&unique.to_le_bytes());
        out.extend_from_slice(&payload);
        if dev.write_all(&out).is_err() {
            return;
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// `struct fuse_init_out` for protocol 7.31.
fn init_out(init_in: &[u8]) -> Vec<u8> {
    let max_readahead = u32_at(init_in, 8);
    let mut o = Vec::new();
    o.extend_from_slice(&7u32.to_le_bytes()); // major
    o.extend_from_slice(&31u32.to_le_bytes()); // minor
    o.extend_from_slice(&max_readahead.to_le_bytes());
    o.extend_from_slice(&0u32.to_le_bytes()); // flags
    o.extend_from_slice(&16u16.to_le_bytes()); // max_background
    o.extend_from_slice(&12u16.to_le_bytes()); // congestion_threshold
    o.extend_from_slice(&(128u32 * 1024).to_le_bytes()); // max_write
    o.extend_from_slice(&1u32.to_le_bytes()); // time_gran
    o.extend_from_slice(&32u16.to_le_bytes()); // max_pages
    o.extend_from_slice(&0u16.to_le_bytes()); // map_alignment
    o.extend_from_slice(&0u32.to_le_bytes()); // flags2
    o.extend_from_slice(&[0u8; 28]); // unused[7]
    o
}

/// `struct fuse_attr`.
fn attr(nodeid: u64, size: u64) -> Vec<u8> {
    let (mode, nlink) = if nodeid == ROOT {
        (libc::S_IFDIR | 0o755, 2u32)
    } else {
        (libc::S_IFREG | 0o755, 1u32)
    };
    let mut a = Vec::new();
    for v in [nodeid, size, size.div_ceil(512), 0, 0, 0] {
        a.extend_from_slice(&v.to_le_bytes()); // ino size blocks atime mtime ctime
    }
    for v in [0u32, 0, 0, mode, nlink, 0, 0, 0, 4096, 0] {
        a.extend_from_slice(&v.to_le_bytes()); // nsecs, mode, nlink, uid, gid, rdev, blksize, flags
    }
    a
}

fn entry_out(nodeid: u64, size: u64) -> Vec<u8> {
    let mut o = Vec::new();
    for v in [nodeid, 0, 0, 0] {
        o.extend_from_slice(&v.to_le_bytes()); // nodeid generation entry_valid attr_valid
    }
    o.extend_from_slice(&[0u8; 8]); // entry_valid_nsec attr_valid_nsec
    o.extend_from_slice(&attr(nodeid, size));
    o
}

fn attr_out(nodeid: u64, size: u64) -> Vec<u8> {
    let mut o = vec![0u8; 16]; // attr_valid attr_valid_nsec dummy
    o.extend_from_slice(&attr(nodeid, size));
    o
}

fn open_out() -> Vec<u8> {
    vec![0u8; 16] // fh open_flags padding
}
