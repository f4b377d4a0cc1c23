//! The foundation's promise, proven on a real kernel: an unauthorized exec is
//! refused with EPERM, an authorized digest runs, the kernel's digest is the
//! file's SHA-256, and with enforcement off everything runs.
use std::process::Command;

use authz_agent::enforcer::{boot_time_ns, Decision, Mode, Reason};
use authz_tests::*;

#[test]
fn unauthorized_exec_is_refused_with_eperm() {
    let mut enforcer = enforcer(Mode::Enforce);
    let scratch = Scratch::new("unauthorized");
    let prog = scratch.program("unauthorized");

    assert_eperm(&prog.run(&["true"]));

    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!(ev.decision, Decision::Deny);
    assert_eq!(ev.reason, Reason::NoPermit);
    assert_eq!(ev.digest.as_deref(), Some(prog.digest_hex().as_str()));
    assert_eq!(ev.permit_id, None);
    assert_eq!(ev.uid, 0);
    let counters = enforcer.counters().expect("counters");
    assert!(counters["denied_no_permit"] >= 1, "{counters:?}");
}

#[test]
fn authorized_digest_runs_and_others_stay_refused() {
    let mut enforcer = enforcer(Mode::Enforce);
    let scratch = Scratch::new("authorized");
    let prog = scratch.program("authorized");
    let (key, permit) = permit(prog.digest, own_cgroup_id(), 0xa1, EXACT);

    assert_eperm(&prog.run(&["true"]));
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");
    assert_ran(&prog.run(&["true"]));

    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| {
            ev.path == prog.path.to_string_lossy() && ev.decision == Decision::Allow
        })
        .expect("allow event");
    assert_eq!(ev.reason, Reason::Permit);
    assert_eq!(ev.permit_id.as_deref(), Some("a1".repeat(16).as_str()));

    // The permit is for this content only: different content stays refused.
    let other = scratch.file("other", b"#!/bin/busybox sh\nexit 0\n");
    assert_eperm(&other.run(&[]));

    // Revoking makes it refused again at once.
    assert!(enforcer
        .revoke(authz_agent::enforcer::PermitUse::Exec, &key)
        .expect("revoke"));
    assert_eperm(&prog.run(&["true"]));
}

#[test]
fn kernel_digest_equals_sha256sum_of_the_file() {
    let mut enforcer = enforcer(Mode::Audit);
    let scratch = Scratch::new("digest");
    let prog = scratch.program("digest");

    // Audit mode: the exec runs, the kernel still hashes and reports.
    assert_ran(&prog.run(&["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!(ev.decision, Decision::AuditDeny);

    let out = Command::new("sha256sum")
        .arg(&prog.path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let sha256sum = text.split_whitespace().next().expect("sha256sum output");
    assert_eq!(ev.digest.as_deref(), Some(sha256sum));
    assert_eq!(sha256sum, prog.digest_hex());
}

#[test]
fn enforcement_off_runs_everything_and_reports_nothing() {
    let mut enforcer = enforcer(Mode::Off);
    let scratch = Scratch::new("off");
    let prog = scratch.program("off");

    assert_ran(&prog.run(&["true"]));
    assert!(
        enforcer
            .wait_event(std::time::Duration::from_millis(500), |ev| ev.path
                == prog.path.to_string_lossy())
            .is_none(),
        "mode off must not decide or report"
    );

    // Switching to enforce at runtime takes effect for the next exec.
    enforcer.set_mode(Mode::Enforce).expect("set mode");
    assert_eperm(&prog.run(&["true"]));
    enforcer.set_mode(Mode::Off).expect("set mode");
    assert_ran(&prog.run(&["true"]));
}

#[test]
fn expired_permit_is_refused_by_the_kernel() {
    let mut enforcer = enforcer(Mode::Enforce);
    let scratch = Scratch::new("expired");
    let prog = scratch.program("expired");
    let (key, mut permit) = permit(prog.digest, own_cgroup_id(), 0xe1, EXACT);
    permit = authz_common::Permit::single(permit.artifact_id, boot_time_ns() - 1, false);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");

    assert_eperm(&prog.run(&["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!(ev.reason, Reason::Expired);
}

#[test]
fn modified_content_at_a_permitted_path_is_refused() {
    let mut enforcer = enforcer(Mode::Enforce);
    let scratch = Scratch::new("modified");
    let prog = scratch.program("modified");
    let (key, permit) = permit(prog.digest, own_cgroup_id(), 0x3d, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");
    assert_ran(&prog.run(&["true"]));

    // Append one byte: same path, same inode, different content.
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&prog.path)
        .expect("open for append");
    f.write_all(b"\0").expect("append");
    drop(f);
    assert_eperm(&prog.run(&["true"]));
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| {
            ev.path == prog.path.to_string_lossy() && ev.decision == Decision::Deny
        })
        .expect("deny event");
    assert_ne!(ev.digest.as_deref(), Some(prog.digest_hex().as_str()));
}
