//! The hashed bytes must be the executed bytes (issue 12): content that can
//! still change after the check is refused, every way to change a cached
//! binary is seen on every filesystem whose digests are cached, and
//! filesystems that can serve the hash one content and the loader another
//! are refused unless trusted. Each test is named after the attack.
use std::{
    ffi::CString,
    fs,
    io::{Seek as _, SeekFrom, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::{fs::PermissionsExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use authz_agent::enforcer::{Decision, Reason};
use authz_common::{fs_flags, FILESYSTEMS};
use authz_tests::{fuse::FuseFile, *};

/// A memfd holding `content`, optionally sealed with `seals`.
fn memfd(content: &[u8], seals: Option<u32>) -> fs::File {
    let name = CString::new("payload").unwrap();
    let fd = nix::sys::memfd::memfd_create(
        name.as_c_str(),
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd");
    let mut file = fs::File::from(fd);
    file.write_all(content).unwrap();
    if let Some(seals) = seals {
        // SAFETY: fcntl on our own descriptor with an integer argument.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) };
        assert_eq!(rc, 0, "F_ADD_SEALS: {}", std::io::Error::last_os_error());
    }
    file
}

/// `fexecve` of `fd` from inside `cgroup_dir`.
fn fexecve_in(cgroup_dir: &Path, fd: i32) -> std::io::Result<std::process::Output> {
    let path = format!("/proc/self/fd/{fd}");
    let mut cmd = Command::new(path);
    // busybox picks its applet from argv[0], or argv[1] when argv[0] is "busybox".
    cmd.arg0("busybox").arg("true");
    in_cgroup_as(&mut cmd, cgroup_dir, None)
}

#[test]
fn memfd_rewritten_through_its_own_descriptor_after_exec_never_runs_new_bytes() {
    let (mut enforcer, _cg, jail, jail_id) = jail("memfd-rewrite");
    let content = fs::read(busybox()).unwrap();
    let (k, p) = permit(sha256_file(busybox()), jail_id, 0x31, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, k, p)
        .unwrap();

    // The attack: permitted bytes in an unsealed memfd, exec'd, then
    // rewritten through the descriptor the attacker still holds (which never
    // took write access, so exec's write denial does not stop it). Refused at
    // the exec: the content could change after the check.
    let mut file = memfd(&content, None);
    assert_eperm(&fexecve_in(&jail, file.as_raw_fd()));
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.cgroup_id == jail_id)
        .expect("event");
    assert_eq!(
        (ev.decision, ev.reason),
        (Decision::Deny, Reason::MutableContent)
    );
    assert_eq!(
        ev.digest, None,
        "no digest is claimed for content that can change"
    );
    file.seek(SeekFrom::Start(100)).unwrap();
    file.write_all(&[content[100] ^ 0xff]).unwrap();
    assert_eperm(&fexecve_in(&jail, file.as_raw_fd()));

    // Sealed only against future writes (existing mappings may still write):
    // not final either.
    let future = memfd(
        &content,
        Some(authz_common::seals::SHRINK | authz_common::seals::GROW | 0x10),
    );
    assert_eperm(&fexecve_in(&jail, future.as_raw_fd()));

    // Sealed against writes, shrinking and growth: final, permitted, runs;
    // and writing through the descriptor now fails.
    let mut sealed = memfd(&content, Some(authz_common::seals::IMMUTABLE));
    assert_ran(&fexecve_in(&jail, sealed.as_raw_fd()));
    sealed.seek(SeekFrom::Start(100)).unwrap();
    assert!(
        sealed.write_all(&[0]).is_err(),
        "a sealed memfd must refuse writes"
    );
    let _ = enforcer.drain_events();
}

#[test]
fn sealed_memfd_of_unpermitted_content_is_refused_for_having_no_permit() {
    let (mut enforcer, _cg, jail, jail_id) = jail("memfd-sealed");
    let mut content = fs::read(busybox()).unwrap();
    content.extend_from_slice(b"unpermitted");
    let sealed = memfd(&content, Some(authz_common::seals::IMMUTABLE));
    assert_eperm(&fexecve_in(&jail, sealed.as_raw_fd()));
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.cgroup_id == jail_id)
        .expect("event");
    assert_eq!((ev.decision, ev.reason), (Decision::Deny, Reason::NoPermit));
}

#[test]
fn o_tmpfile_and_deleted_files_are_refused_even_with_a_permit() {
    let (mut enforcer, _cg, jail, jail_id) = jail("tmpfile");
    let scratch = Scratch::new("tmpfile");
    let content = fs::read(busybox()).unwrap();
    let (k, p) = permit(sha256_file(busybox()), jail_id, 0x32, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, k, p)
        .unwrap();

    // O_TMPFILE: never linked; it can be reopened for writing through /proc.
    let dir = CString::new(scratch.dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path; the returned fd is owned below.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o755) };
    assert!(fd >= 0, "O_TMPFILE: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor we own.
    let mut tmp = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    tmp.write_all(&content).unwrap();
    // Reopen read-only and close the writer: nobody writes now, still refused.
    let ro = fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
    drop(tmp);
    assert_eperm(&fexecve_in(&jail, ro.as_raw_fd()));
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.cgroup_id == jail_id)
        .expect("event");
    assert_eq!(ev.reason, Reason::MutableContent);

    // A permitted file deleted while open.
    let path = scratch.dir.join("deleted");
    fs::write(&path, &content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let held = fs::File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    assert_eperm(&fexecve_in(&jail, held.as_raw_fd()));
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.cgroup_id == jail_id)
        .expect("event");
    assert_eq!(ev.reason, Reason::MutableContent);
}

/// A filesystem mounted for one test, unmounted (and its image removed) on drop.
struct Mounted {
    dir: PathBuf,
    image: Option<PathBuf>,
}

impl Mounted {
    /// A fresh instance of filesystem `name` at `/tmp/authz-fs-<name>-<pid>`.
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/authz-fs-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let image = match name {
            "tmpfs" | "ramfs" => {
                run_ok(Command::new("mount").args(["-t", name, name]).arg(&dir));
                None
            }
            "ext4" | "xfs" | "btrfs" => {
                let image = dir.with_extension("img");
                // Sparse: the smallest size each mkfs accepts.
                let size = match name {
                    "ext4" => "64M",
                    "xfs" => "320M",
                    _ => "128M",
                };
                run_ok(Command::new("truncate").args(["-s", size]).arg(&image));
                let mkfs = match name {
                    // Absolute paths: busybox's own mke2fs comes first in PATH.
                    "ext4" => Command::new("/usr/sbin/mke2fs")
                        .args(["-q", "-t", "ext4", "-F"])
                        .arg(&image)
                        .output(),
                    "xfs" => Command::new("/usr/sbin/mkfs.xfs")
                        .args(["-q", "-f"])
                        .arg(&image)
                        .output(),
                    _ => Command::new("/usr/sbin/mkfs.btrfs")
                        .args(["-q", "-f"])
                        .arg(&image)
                        .output(),
                }
                .expect("mkfs");
                assert!(
                    mkfs.status.success(),
                    "mkfs {name}: {}",
                    String::from_utf8_lossy(&mkfs.stderr)
                );
                run_ok(
                    Command::new("mount")
                        .args(["-t", name, "-o", "loop"])
                        .arg(&image)
                        .arg(&dir),
                );
                Some(image)
            }
            other => panic!(
                "filesystem {other} is flagged CACHE in authz_common::FILESYSTEMS but this test \
                 does not know how to mount it: teach it, or the cache is unproven there"
            ),
        };
        Self { dir, image }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = fs::remove_dir(&self.dir);
        if let Some(image) = &self.image {
            let _ = fs::remove_file(image);
        }
    }
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// One way to change a file's content, applied to `path` (whose content is
/// `original`); returns false when the filesystem does not support it.
type Change = fn(&Path, &[u8]) -> bool;

/// truncate(2) by path, shorter then back to the same size: no open for
/// writing at all, and on ramfs neither ctime, size nor i_version move.
fn truncate_and_regrow(path: &Path, original: &[u8]) -> bool {
    let len = original.len() as i64;
    let c = c_path(path);
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), len - 4096) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), len) }, 0);
    true
}

/// A hole punched into the middle (fallocate), size unchanged.
fn punch_hole(path: &Path, original: &[u8]) -> bool {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on our descriptor.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, 8192, 4096) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "fallocate: {e}");
        return false;
    }
    let _ = original;
    true
}

/// copy_file_range from another file over a block of it.
fn copy_range_into(path: &Path, original: &[u8]) -> bool {
    let src_path = path.with_extension("src");
    fs::write(&src_path, vec![0x5a; 4096]).unwrap();
    let src = fs::File::open(&src_path).unwrap();
    let dst = fs::OpenOptions::new().write(true).open(path).unwrap();
    let (mut off_in, mut off_out): (i64, i64) = (0, 4096);
    // SAFETY: valid descriptors and offsets.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            4096,
            0,
        )
    };
    assert_eq!(
        n,
        4096,
        "copy_file_range: {}",
        std::io::Error::last_os_error()
    );
    let _ = fs::remove_file(&src_path);
    let _ = original;
    true
}

/// A write through a shared writable mapping.
fn write_through_mapping(path: &Path, original: &[u8]) -> bool {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = original.len();
    // SAFETY: a fresh shared mapping of our file, unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let byte = p.cast::<u8>().add(5000);
        *byte ^= 0xff;
        libc::msync(p, len, libc::MS_SYNC);
        libc::munmap(p, len);
    }
    true
}

/// One byte rewritten in place through a new writable open.
fn rewrite_byte(path: &Path, original: &[u8]) -> bool {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(&[original[100] ^ 0xff]).unwrap();
    true
}

const CHANGES: [(&str, Change); 5] = [
    ("truncate-and-regrow", truncate_and_regrow),
    ("punch-hole", punch_hole),
    ("copy-file-range", copy_range_into),
    ("shared-mapping", write_through_mapping),
    ("rewrite-byte", rewrite_byte),
];

/// Primes the cache with the permitted content at `path`, changes it with
/// `change`, and requires the changed file to be refused. Returns whether
/// the change applied on this filesystem.
fn cached_then_changed(
    enforcer: &mut authz_agent::enforcer::Enforcer,
    jail: &Path,
    path: &Path,
    original: &[u8],
    change: Change,
    what: &str,
) -> bool {
    fs::write(path, original).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    let prog = Program::at(path.to_owned());
    // XFS bumps the change counter the cache keys on whenever it logs the
    // inode (the first exec's atime update, delayed allocation at
    // writeback), so a later exec may hash again before one is served from
    // the cache: exec until one is, a few times at most.
    let mut events = Vec::new();
    for _ in 0..5 {
        assert_ran(&prog.run_in_cgroup(jail, &["true"]));
        events.extend(
            enforcer
                .drain_events()
                .into_iter()
                .filter(|ev| ev.path == path.to_string_lossy()),
        );
        if events.len() >= 2 && events.last().is_some_and(|ev| ev.digest_cached) {
            break;
        }
    }
    assert!(
        events.iter().any(|ev| ev.digest_cached),
        "{what}: the second exec must come from the digest cache (else nothing is proven): {events:?}"
    );
    if !change(path, original) {
        return false;
    }
    assert_ne!(
        fs::read(path).unwrap(),
        original,
        "{what}: the content must differ"
    );
    let result = prog.run_in_cgroup(jail, &["true"]);
    if let Ok(out) = &result {
        panic!("{what}: changed content ran ({})", out.status);
    }
    assert_eperm(&result);
    let ev = event_for(enforcer, path);
    assert!(
        !ev.digest_cached,
        "{what}: the refusal used a cached digest"
    );
    // Under an IMA policy a size change without a writer can also make the
    // refusal `digest-stale` (IMA still holds the old measurement).
    assert!(
        matches!(ev.reason, Reason::NoPermit | Reason::DigestStale),
        "{what}: {:?}",
        ev.reason
    );
    true
}

#[test]
fn every_way_to_change_a_cached_binary_is_seen_on_every_cached_filesystem() {
    let (mut enforcer, _cg, jail, jail_id) = jail("cache-fs");
    let mut original = fs::read(busybox()).unwrap();
    original.extend_from_slice(b"authz cache proof");
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&original).into();
    let (k, p) = permit(digest, jail_id, 0x33, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, k, p)
        .unwrap();

    let cached: Vec<&str> = FILESYSTEMS
        .iter()
        .filter(|f| f.flags & fs_flags::CACHE != 0)
        .map(|f| f.name)
        .collect();
    assert!(
        cached.contains(&"ramfs") && cached.contains(&"tmpfs"),
        "{cached:?}"
    );
    for fs_name in &cached {
        let mounted = Mounted::new(fs_name);
        let path = mounted.dir.join("prog");
        let mut applied = 0;
        for (change_name, change) in CHANGES {
            let what = format!("{fs_name}/{change_name}");
            if cached_then_changed(&mut enforcer, &jail, &path, &original, change, &what) {
                applied += 1;
            }
        }
        assert!(applied >= 4, "{fs_name}: only {applied} changes applied");
        // The seen attack, repeated in and across clock ticks.
        for round in 0..20 {
            let what = format!("{fs_name}/truncate round {round}");
            cached_then_changed(
                &mut enforcer,
                &jail,
                &path,
                &original,
                truncate_and_regrow,
                &what,
            );
            if round % 5 == 4 {
                std::thread::sleep(Duration::from_millis(15));
            }
        }
    }
}

#[test]
fn truncate_in_an_unprivileged_user_namespace_mount_is_seen() {
    let (mut enforcer, _cg, jail, jail_id) = jail("userns");
    let scratch = Scratch::new("userns");
    fs::set_permissions(&scratch.dir, fs::Permissions::from_mode(0o755)).unwrap();
    let shell = scratch.program("busybox");
    let payload = scratch.file("payload", &{
        let mut b = fs::read(busybox()).unwrap();
        b.extend_from_slice(b"userns payload");
        b
    });
    for p in [&shell, &payload] {
        let (k, v) = permit(p.digest, jail_id, 0x34, EXACT);
        enforcer
            .grant(authz_agent::enforcer::PermitUse::Exec, k, v)
            .unwrap();
    }
    let mnt = PathBuf::from(format!("/tmp/authz-userns-mnt-{}", std::process::id()));
    fs::create_dir_all(&mnt).unwrap();
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o777)).unwrap();
    for fstype in ["ramfs", "tmpfs"] {
        // As nobody: a user namespace of one's own, a fresh mount in it, a
        // permitted binary copied there, run (and cached), truncated by path
        // and regrown, run again 20 times.
        let script = format!(
            r#"mount -t {fstype} none {mnt} || exit 90
p={mnt}/busybox
cp {payload} $p && chmod 755 $p || exit 91
sz=$(stat -c %s $p)
ran=0
i=0
while [ $i -lt 20 ]; do
    cp {payload} $p
    $p true || exit 92
    $p true || exit 93
    truncate -s $((sz - 4096)) $p
    truncate -s $sz $p
    if $p true 2>/dev/null; then ran=$((ran + 1)); fi
    i=$((i + 1))
done
echo "ran=$ran"
"#,
            mnt = mnt.display(),
            payload = payload.path.display(),
        );
        let mut cmd = Command::new(&shell.path);
        cmd.arg0("busybox").args([
            "unshare",
            "-Urm",
            "--",
            shell.path.to_str().unwrap(),
            "sh",
            "-c",
            &script,
        ]);
        let out = in_cgroup_as(&mut cmd, &jail, Some(NOBODY)).expect("run the attack");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let decisions: Vec<String> = enforcer
                .drain_events()
                .into_iter()
                .map(|ev| {
                    format!(
                        "{} {} {} cached={}",
                        ev.decision, ev.reason, ev.path, ev.digest_cached
                    )
                })
                .collect();
            panic!(
                "{fstype}: {} {stdout} {}\nkernel decisions:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                decisions.join("\n")
            );
        }
        assert!(
            stdout.contains("ran=0"),
            "{fstype}: modified content ran: {stdout}"
        );
    }
    let refused = enforcer
        .drain_events()
        .into_iter()
        .filter(|ev| ev.decision == Decision::Deny && ev.reason == Reason::NoPermit)
        .count();
    assert!(refused >= 40, "{refused} refusals");
}

#[test]
fn fuse_server_serving_the_hash_one_content_and_the_loader_another_is_refused() {
    let (mut enforcer, _cg, jail, jail_id) = jail("fuse");
    let permitted = fs::read(busybox()).unwrap();
    let (k, p) = permit(sha256_file(busybox()), jail_id, 0x35, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, k, p)
        .unwrap();
    let mnt = PathBuf::from(format!("/tmp/authz-fuse-{}", std::process::id()));
    let fuse = FuseFile::mount(&mnt, permitted.clone());
    let prog = Program {
        path: fuse.path(),
        digest: sha256_file(busybox()),
    };

    // The server can change what it serves at any time (after the hash, for
    // the loader): an exec from FUSE is refused although the bytes it served
    // are permitted.
    assert_eperm(&prog.run_in_cgroup(&jail, &["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!(
        (ev.decision, ev.reason),
        (Decision::Deny, Reason::UntrustedFilesystem)
    );

    // Trusted by configuration: hashed at every exec, never cached.
    let fuse_magic = authz_common::filesystem("fuse").unwrap().magic;
    enforcer.set_filesystems(&[fuse_magic]).unwrap();
    assert_ran(&prog.run_in_cgroup(&jail, &["true"]));
    assert_ran(&prog.run_in_cgroup(&jail, &["true"]));
    let evs: Vec<_> = enforcer
        .drain_events()
        .into_iter()
        .filter(|ev| ev.path == prog.path.to_string_lossy())
        .collect();
    assert!(evs.iter().all(|ev| !ev.digest_cached), "{evs:?}");
    let mut other = permitted.clone();
    other.extend_from_slice(b"served later");
    fuse.set(other);
    enforcer.set_filesystems(&[]).unwrap();
    assert_eperm(&prog.run_in_cgroup(&jail, &["true"]));
    drop(fuse);
}
