//! The per-inode digest cache: a binary is hashed once, and a cached digest
//! never authorizes content that changed since.
use std::{
    fs,
    io::{Seek as _, SeekFrom, Write as _},
    os::fd::AsRawFd as _,
};

use authz_agent::enforcer::{Decision, Mode, Reason};
use authz_tests::*;

#[test]
fn second_exec_uses_the_cached_digest() {
    let mut enforcer = enforcer(Mode::Enforce);
    let scratch = Scratch::new("cachehit");
    let prog = scratch.program("job");
    let (key, permit) = permit(prog.digest, own_cgroup_id(), 0xca, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");
    let before = enforcer.counters().unwrap();

    assert_ran(&prog.run(&["true"]));
    let first = event_for(&mut enforcer, &prog.path);
    assert!(!first.digest_cached, "first exec must hash");
    assert_ran(&prog.run(&["true"]));
    let second = event_for(&mut enforcer, &prog.path);
    assert!(second.digest_cached, "second exec must hit the cache");
    assert_eq!(first.digest, second.digest);
    let after = enforcer.counters().unwrap();
    assert!(after["cache_hits"] > before["cache_hits"]);
    assert!(after["cache_misses"] > before["cache_misses"]);
}

/// Rewrites the file in place, same size, through a new writable open: the
/// change time may not move (same clock tick) but the open drops the cache.
fn overwrite_same_size(path: &std::path::Path, byte: u8) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open rw");
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(&[byte]).unwrap();
}

#[test]
fn same_size_rewrites_in_the_same_clock_tick_are_never_authorized() {
    let mut enforcer = enforcer(Mode::Enforce);
    let scratch = Scratch::new("sametick");
    let prog = scratch.program("job");
    let original = fs::read(&prog.path).unwrap();
    let (key, permit) = permit(prog.digest, own_cgroup_id(), 0x57, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");

    for round in 0..20u8 {
        // Permitted content, cached by this exec...
        fs::write(&prog.path, &original).unwrap();
        assert_ran(&prog.run(&["true"]));
        // ...then one byte changed right away, same size, likely the same tick.
        overwrite_same_size(&prog.path, round ^ original[100] ^ 0xff);
        let result = prog.run(&["true"]);
        assert_eperm(&result);
    }
    let denials = enforcer
        .drain_events()
        .into_iter()
        .filter(|ev| ev.path == prog.path.to_string_lossy() && ev.decision == Decision::Deny)
        .count();
    assert_eq!(denials, 20);
}

#[test]
fn truncate_and_regrow_is_rehashed() {
    let mut enforcer = enforcer(Mode::Enforce);
    let scratch = Scratch::new("truncate");
    let prog = scratch.program("job");
    let (key, permit) = permit(prog.digest, own_cgroup_id(), 0x7c, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");
    assert_ran(&prog.run(&["true"]));
    assert_eq!(
        event_for(&mut enforcer, &prog.path).decision,
        Decision::Allow
    );
    // truncate(2) by path: no open for writing at all; size and ctime change.
    let len = fs::metadata(&prog.path).unwrap().len();
    let c = std::ffi::CString::new(prog.path.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), (len - 1) as i64) }, 0);
    assert_eperm(&prog.run(&["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!((ev.decision, ev.reason), (Decision::Deny, Reason::NoPermit));
    assert!(!ev.digest_cached);
}

#[test]
fn memfd_exec_of_unpermitted_content_is_refused() {
    let mut enforcer = enforcer(Mode::Enforce);
    let content = fs::read(busybox()).unwrap();
    let name = std::ffi::CString::new("payload").unwrap();
    let fd = nix::sys::memfd::memfd_create(
        name.as_c_str(),
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd");
    let mut file = fs::File::from(fd);
    file.write_all(&content).unwrap();
    seal(&file);

    let result = fexecve(file.as_raw_fd(), &["busybox", "true"]);
    assert_eperm(&result);
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| {
            ev.decision == Decision::Deny && ev.comm != "authz-selftest"
        })
        .expect("deny event for the memfd exec");
    assert_eq!(ev.reason, Reason::NoPermit);
}

/// Seals a memfd against writes, shrinking and growth: its content is final.
fn seal(file: &fs::File) {
    let seals = authz_common::seals::IMMUTABLE as libc::c_int;
    // SAFETY: fcntl on our own descriptor with an integer argument.
    let sealed = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(sealed, 0);
}

#[test]
fn memfd_rewritten_after_a_permitted_exec_is_refused() {
    let mut enforcer = enforcer(Mode::Enforce);
    let content = fs::read(busybox()).unwrap();
    let digest = sha256_file(busybox());
    let (key, permit) = permit(digest, own_cgroup_id(), 0x3f, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");
    let name = std::ffi::CString::new("payload").unwrap();
    let fd = nix::sys::memfd::memfd_create(name.as_c_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .expect("memfd");
    let mut file = fs::File::from(fd);
    file.write_all(&content).unwrap();

    // Permitted content in an unsealed memfd does not run: its own descriptor
    // could rewrite it after the check (issue 12)...
    assert_eperm(&fexecve(file.as_raw_fd(), &["busybox", "true"]));
    // ...and neither does it after the same descriptor rewrote one byte.
    file.seek(SeekFrom::Start(100)).unwrap();
    file.write_all(&[content[100] ^ 0xff]).unwrap();
    assert_eperm(&fexecve(file.as_raw_fd(), &["busybox", "true"]));
    let refusals: Vec<Reason> = enforcer
        .drain_events()
        .into_iter()
        .filter(|ev| ev.decision == Decision::Deny && ev.comm != "authz-selftest")
        .map(|ev| ev.reason)
        .collect();
    assert_eq!(refusals, vec![Reason::MutableContent; 2]);
}
