//! With an IMA measurement policy (the VM boots these tests with
//! `ima_policy=tcb`), IMA caches each measured file's hash and
//! `bpf_ima_file_hash` may answer from that cache. IMA drops its cache when a
//! writer closes the file, but not on truncate(2) by path. These tests need
//! that policy: `cargo xtask test` runs them in a boot of their own and they
//! fail loudly anywhere else.
use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command};

use authz_agent::enforcer::{preflight::ImaPolicy, Decision, Reason};
use authz_tests::*;

fn require_ima_policy() {
    let ima = ImaPolicy::detect();
    assert!(
        ima.active,
        "these tests need a kernel booted with an IMA measurement policy (ima_policy=tcb); found {ima:?}"
    );
}

#[test]
fn the_agent_sees_the_ima_policy() {
    require_ima_policy();
    let (enforcer, _cg, _jail, _id) = jail("ima-detect");
    assert!(enforcer.kernel().ima.active, "{:?}", enforcer.kernel().ima);
    assert_eq!(
        enforcer.kernel().ima.boot_policy.as_deref(),
        Some("ima_policy=tcb")
    );
}

#[test]
fn truncate_by_path_after_ima_measured_the_binary_never_runs_the_new_bytes() {
    require_ima_policy();
    let (mut enforcer, _cg, jail, jail_id) = jail("ima-truncate");
    // ramfs: measured by the tcb policy (tmpfs is not), no i_version, and its
    // setattr does not move the change time.
    let mnt = PathBuf::from(format!("/tmp/authz-ima-ramfs-{}", std::process::id()));
    fs::create_dir_all(&mnt).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "ramfs", "ramfs"])
            .arg(&mnt),
    );
    let mut original = fs::read(busybox()).unwrap();
    original.extend_from_slice(b"ima truncate");
    let path = mnt.join("prog");
    let write_original = || {
        fs::write(&path, &original).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_original();
    let prog = Program::at(path.clone());
    let (k, p) = permit(prog.digest, jail_id, 0x41, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, k, p)
        .unwrap();

    for round in 0..10 {
        // Permitted content runs; IMA measures it (after authz's hook) and
        // caches the hash.
        assert_ran(&prog.run_in_cgroup(&jail, &["true"]));
        let _ = enforcer.drain_events();
        // Changed by path without a writer: IMA keeps its cached hash.
        let len = original.len() as i64;
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::truncate(c.as_ptr(), len - 4096) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::truncate(c.as_ptr(), len) }, 0);
        assert_ne!(fs::read(&path).unwrap(), original);
        let result = prog.run_in_cgroup(&jail, &["true"]);
        if let Ok(out) = &result {
            panic!("round {round}: the truncated binary ran ({})", out.status);
        }
        assert_eperm(&result);
        let ev = event_for(&mut enforcer, &path);
        assert_eq!(ev.decision, Decision::Deny);
        // IMA answers with its measurement of the content before the
        // truncate, which authz recognises and refuses.
        assert_eq!(ev.reason, Reason::DigestStale, "round {round}");
        // Rewritten through a writer: IMA drops its cache when it closes, a
        // fresh hash is taken, and the permitted content runs again.
        write_original();
        let _ = enforcer.drain_events();
    }
    assert_ran(&prog.run_in_cgroup(&jail, &["true"]));
    let _ = enforcer.drain_events();
    // Changed through a writer (IMA drops its cache itself): refused.
    let mut changed = original.clone();
    changed.push(b'!');
    fs::write(&path, &changed).unwrap();
    assert_eperm(&prog.run_in_cgroup(&jail, &["true"]));
    let ev = event_for(&mut enforcer, &path);
    assert_eq!((ev.decision, ev.reason), (Decision::Deny, Reason::NoPermit));
    let _ = Command::new("umount").arg(&mnt).output();
}
