//! Issue 4 on a real kernel: permits by digest and cgroup, descendants, expiry
//! decided in the kernel, modes, limited scope, events and counters.
use std::{collections::BTreeMap, time::Duration};

use authz_agent::enforcer::{boot_time_ns, Decision, LoadOptions, Mode, Reason};
use authz_tests::*;

#[test]
fn permit_allows_in_its_cgroup_and_refuses_in_a_sibling() {
    let mut enforcer = enforcer(Mode::Enforce);
    let mut cgroups = TestCgroups::new("sibling");
    let (a, a_id) = cgroups.create("a");
    let (b, _) = cgroups.create("b");
    let scratch = Scratch::new("sibling");
    let prog = scratch.program("job");
    let (key, permit) = permit(prog.digest, a_id, 0x51, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");

    assert_ran(&prog.run_in_cgroup(&a, &["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!((ev.decision, ev.reason), (Decision::Allow, Reason::Permit));
    assert_eq!(ev.cgroup_id, a_id);
    assert_eq!(ev.permit_cgroup_id, Some(a_id));

    assert_eperm(&prog.run_in_cgroup(&b, &["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!(
        (ev.decision, ev.reason),
        (Decision::Deny, Reason::WrongCgroup)
    );
}

#[test]
fn descendants_are_allowed_only_when_the_permit_says_so() {
    let mut enforcer = enforcer(Mode::Enforce);
    let mut cgroups = TestCgroups::new("descendants");
    let (parent, parent_id) = cgroups.create("parent");
    let (child, child_id) = cgroups.create("parent/child");
    let (grandchild, _) = cgroups.create("parent/child/grandchild");
    let scratch = Scratch::new("descendants");
    let prog = scratch.program("job");

    // Without the flag: the parent only.
    let (key, exact) = permit(prog.digest, parent_id, 0xd0, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, exact)
        .expect("grant");
    assert_ran(&prog.run_in_cgroup(&parent, &["true"]));
    let _ = event_for(&mut enforcer, &prog.path);
    assert_eperm(&prog.run_in_cgroup(&child, &["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!(ev.reason, Reason::WrongCgroup);

    // With the flag: every descendant, and the event names the granting cgroup.
    let (key, inherited) = permit(prog.digest, parent_id, 0xd1, DESCENDANTS);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, inherited)
        .expect("grant");
    for (dir, label) in [(&child, "child"), (&grandchild, "grandchild")] {
        assert_ran(&prog.run_in_cgroup(dir, &["true"]));
        let ev = event_for(&mut enforcer, &prog.path);
        assert_eq!(
            (ev.decision, ev.reason),
            (Decision::Allow, Reason::PermitInherited),
            "{label}"
        );
        assert_eq!(ev.permit_cgroup_id, Some(parent_id), "{label}");
        assert_ne!(ev.cgroup_id, parent_id);
    }
    let _ = child_id;
}

#[test]
fn expiry_is_decided_by_the_kernel_without_userspace_help() {
    let mut enforcer = enforcer(Mode::Enforce);
    let mut cgroups = TestCgroups::new("expiry");
    let (job, job_id) = cgroups.create("job");
    let scratch = Scratch::new("expiry");
    let prog = scratch.program("job");
    let (key, mut permit) = permit(prog.digest, job_id, 0xee, EXACT);
    permit =
        authz_common::Permit::single(permit.artifact_id, boot_time_ns() + 3_000_000_000, false);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");

    assert_ran(&prog.run_in_cgroup(&job, &["true"]));
    let _ = event_for(&mut enforcer, &prog.path);
    // Nothing in userspace touches the permit: the entry is still in the map.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        enforcer.permits().len(),
        1,
        "the permit is still in the map"
    );
    assert_eperm(&prog.run_in_cgroup(&job, &["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!((ev.decision, ev.reason), (Decision::Deny, Reason::Expired));
}

#[test]
fn audit_mode_allows_and_reports_what_enforce_would_refuse() {
    let mut enforcer = enforcer(Mode::Audit);
    let scratch = Scratch::new("audit");
    let prog = scratch.program("job");
    let before = enforcer.counters().expect("counters");

    assert_ran(&prog.run(&["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!(
        (ev.decision, ev.reason),
        (Decision::AuditDeny, Reason::NoPermit)
    );
    assert_eq!(ev.mode, "audit");
    let after = enforcer.counters().expect("counters");
    assert!(after["audit_would_deny"] > before["audit_would_deny"]);
    assert_eq!(after["denied_no_permit"], before["denied_no_permit"]);
}

#[test]
fn limited_scope_enforces_only_the_listed_subtrees() {
    let mut cgroups = TestCgroups::new("scope");
    let (enforced, enforced_id) = cgroups.create("jobs");
    let (nested, _) = cgroups.create("jobs/nested");
    let (free, _) = cgroups.create("free");
    let mut enforcer = enforcer_with(LoadOptions {
        mode: Mode::Enforce,
        enforced_paths: vec![cgroups.path("jobs")],
        ..LoadOptions::default()
    });
    let scratch = Scratch::new("scope");
    let prog = scratch.program("job");
    let before = enforcer.counters().expect("counters");

    assert_ran(&prog.run_in_cgroup(&free, &["true"]));
    assert_ran(&prog.run(&["true"]));
    assert_eperm(&prog.run_in_cgroup(&enforced, &["true"]));
    let ev = event_for(&mut enforcer, &prog.path);
    assert_eq!(ev.cgroup_id, enforced_id);
    assert_eperm(&prog.run_in_cgroup(&nested, &["true"]));
    let after = enforcer.counters().expect("counters");
    assert!(
        after["out_of_scope"] >= before["out_of_scope"] + 2,
        "{after:?}"
    );

    // Scope changes at runtime, without reloading: back to the whole host.
    enforcer.set_scope(&[]).expect("scope");
    assert_eperm(&prog.run_in_cgroup(&free, &["true"]));
}

#[test]
fn a_copy_of_a_permitted_binary_at_another_path_is_allowed() {
    let mut enforcer = enforcer(Mode::Enforce);
    let scratch = Scratch::new("copy");
    let original = scratch.program("original");
    let (key, permit) = permit(original.digest, own_cgroup_id(), 0xc0, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, key, permit)
        .expect("grant");
    std::fs::create_dir_all(scratch.dir.join("elsewhere")).expect("mkdir");
    let copy = Program::at({
        let p = scratch.dir.join("elsewhere/renamed-copy");
        std::fs::copy(&original.path, &p).expect("copy");
        p
    });
    assert_eq!(copy.digest, original.digest);
    assert_ran(&copy.run(&["true"]));
    let ev = event_for(&mut enforcer, &copy.path);
    assert_eq!(ev.reason, Reason::Permit);
}

#[test]
fn every_decision_has_an_event_and_the_counters_match() {
    let mut enforcer = enforcer(Mode::Enforce);
    let mut cgroups = TestCgroups::new("counters");
    let (job, job_id) = cgroups.create("job");
    let (other, _) = cgroups.create("other");
    let scratch = Scratch::new("counters");
    let allowed = scratch.program("allowed");
    let unknown = scratch.program("unknown");
    std::fs::write(&unknown.path, b"\x7fELF but not really").expect("write");
    let unknown = Program::at(unknown.path.clone());
    let expired = scratch.program("expired");
    // Make `expired` different content from `allowed`.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&expired.path)
            .unwrap();
        f.write_all(b"x").unwrap();
    }
    let expired = Program::at(expired.path.clone());

    let (k, p) = permit(allowed.digest, job_id, 1, EXACT);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, k, p)
        .unwrap();
    let (k, mut p) = permit(expired.digest, job_id, 2, EXACT);
    p = authz_common::Permit::single(p.artifact_id, 1, false);
    enforcer
        .grant(authz_agent::enforcer::PermitUse::Exec, k, p)
        .unwrap();
    let _ = enforcer.drain_events();
    let before = enforcer.counters().unwrap();

    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for _ in 0..3 {
        assert_ran(&allowed.run_in_cgroup(&job, &["true"]));
        *expected.entry("allowed").or_default() += 1;
        assert_eperm(&allowed.run_in_cgroup(&other, &["true"]));
        *expected.entry("denied_wrong_cgroup").or_default() += 1;
        assert_eperm(&unknown.run_in_cgroup(&job, &[]));
        *expected.entry("denied_no_permit").or_default() += 1;
        assert_eperm(&expired.run_in_cgroup(&job, &["true"]));
        *expected.entry("denied_expired").or_default() += 1;
    }

    let after = enforcer.counters().unwrap();
    for (name, n) in &expected {
        assert_eq!(after[name] - before[name], *n, "counter {name}: {after:?}");
    }
    assert_eq!(after["events_dropped"], before["events_dropped"]);

    // Exactly one event per decision, each with the right reason.
    std::thread::sleep(Duration::from_millis(200));
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for ev in enforcer.drain_events() {
        if ev
            .path
            .starts_with(&scratch.dir.to_string_lossy().into_owned())
        {
            *by_reason.entry(ev.reason.to_string()).or_default() += 1;
        }
    }
    let want: BTreeMap<String, u64> = [
        ("permit".to_string(), 3),
        ("wrong-cgroup".to_string(), 3),
        ("no-permit".to_string(), 3),
        ("expired".to_string(), 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_reason, want);
}

#[test]
fn a_full_event_ring_drops_and_counts_but_never_blocks_enforcement() {
    // One page: room for only a handful of events.
    let mut enforcer = enforcer_with(LoadOptions {
        mode: Mode::Enforce,
        event_ring_bytes: Some(4096),
        ..LoadOptions::default()
    });
    let scratch = Scratch::new("ringfull");
    let prog = scratch.program("job");
    let _ = enforcer.drain_events();
    let before = enforcer.counters().unwrap();
    const EXECS: u64 = 20;
    for _ in 0..EXECS {
        // Nobody reads the ring meanwhile; every exec is still refused.
        assert_eperm(&prog.run(&["true"]));
    }
    let after = enforcer.counters().unwrap();
    let dropped = after["events_dropped"] - before["events_dropped"];
    let received = enforcer
        .drain_events()
        .iter()
        .filter(|ev| ev.path == prog.path.to_string_lossy())
        .count() as u64;
    assert!(dropped > 0, "a 4 KiB ring cannot hold {EXECS} events");
    assert_eq!(
        received + dropped,
        EXECS,
        "received {received}, dropped {dropped}"
    );
    assert_eq!(
        after["denied_no_permit"] - before["denied_no_permit"],
        EXECS
    );
}

#[test]
fn lineage_names_the_permit_of_the_process_that_execs() {
    let mut enforcer = enforcer(Mode::Enforce);
    let mut cgroups = TestCgroups::new("lineage");
    let (job, job_id) = cgroups.create("job");
    let scratch = Scratch::new("lineage");
    // Three distinct binaries, each called `busybox` so that applets resolve.
    let progs: Vec<Program> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            std::fs::create_dir_all(scratch.dir.join(d)).unwrap();
            let path = scratch.dir.join(d).join("busybox");
            let mut bytes = std::fs::read(busybox()).unwrap();
            bytes.extend_from_slice(d.as_bytes());
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let p = Program::at(path);
            let (k, v) = permit(p.digest, job_id, 0xa0 + i as u8, EXACT);
            enforcer
                .grant(authz_agent::enforcer::PermitUse::Exec, k, v)
                .unwrap();
            p
        })
        .collect();
    // a execs b, which execs c: a three-process chain started from the test.
    let script = format!(
        "exec {} sh -c 'exec {} true'",
        progs[1].path.display(),
        progs[2].path.display()
    );
    assert_ran(&progs[0].run_in_cgroup(&job, &["sh", "-c", &script]));
    let ids: Vec<String> = (0..3).map(|i| hex::encode([0xa0 + i as u8; 16])).collect();
    let a = event_for(&mut enforcer, &progs[0].path);
    let b = event_for(&mut enforcer, &progs[1].path);
    let c = event_for(&mut enforcer, &progs[2].path);
    assert_eq!(a.permit_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(
        a.parent_permit_id, None,
        "the test process runs under no permit"
    );
    assert_eq!(b.permit_id.as_deref(), Some(ids[1].as_str()));
    assert_eq!(b.parent_permit_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(c.permit_id.as_deref(), Some(ids[2].as_str()));
    assert_eq!(c.parent_permit_id.as_deref(), Some(ids[1].as_str()));
    // Forked children inherit: a shell under permit a runs c in a subshell.
    let forked = format!("({} true); true", progs[2].path.display());
    assert_ran(&progs[0].run_in_cgroup(&job, &["sh", "-c", &forked]));
    let _ = event_for(&mut enforcer, &progs[0].path);
    let c2 = event_for(&mut enforcer, &progs[2].path);
    assert_eq!(c2.parent_permit_id.as_deref(), Some(ids[0].as_str()));
}
