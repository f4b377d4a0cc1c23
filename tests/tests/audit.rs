//! Audit-grade decision records (issue 6) from the real daemon on a real
//! kernel: complete records, lineage, tamper evidence, explain.
use std::{
    fs,
    io::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use authz_tests::{daemon::Daemon, *};
use serde_json::Value;

/// A distinct busybox copy named `busybox` (so applets resolve) in `dir/name`.
fn job(scratch: &Scratch, name: &str) -> Program {
    let dir = scratch.dir.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(
        &scratch.dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = dir.join("busybox");
    let mut bytes = fs::read(busybox()).unwrap();
    bytes.extend_from_slice(name.as_bytes());
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Program::at(path)
}

fn exec_record(d: &Daemon, exe: &std::path::Path) -> Value {
    let exe = exe.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(r) = d
            .audit_records()
            .into_iter()
            .rev()
            .find(|r| r["kind"] == "exec" && r["actor"]["exe"] == exe.as_str())
        {
            return r;
        }
        assert!(Instant::now() < deadline, "no decision record for {exe}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(authz_tests::daemon::agent_bin())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn allowed_and_denied_execs_each_have_a_complete_record() {
    let d = Daemon::start("auditrec", "enforce");
    let scratch = Scratch::new("auditrec-jobs");
    let allowed = job(&scratch, "allowed");
    let denied = job(&scratch, "denied");
    let permit = d.issue(
        &allowed.path,
        &d.cgroup,
        "1h",
        &["--reason", "nightly build", "--on-behalf-of", "team-a"],
    );
    d.ok(&["submit", permit.to_str().unwrap()]);
    assert_ran(&allowed.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_eperm(&denied.run_in_cgroup(&d.cgroup_dir, &["true"]));

    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let a = exec_record(&d, &allowed.path);
    assert_eq!(a["decision"], "allow");
    assert_eq!(a["reason"], "permit");
    assert_eq!(a["host"], host.trim());
    assert!(a["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(a["digest"], allowed.digest_hex());
    assert_eq!(a["actor"]["cgroup"], d.cgroup.as_str());
    assert_eq!(a["actor"]["uid"], 0);
    assert!(a["actor"]["pid"].as_u64().unwrap() > 0 && a["actor"]["ppid"].as_u64().unwrap() > 0);
    assert!(a["actor"]["comm"].is_string());
    let p = &a["permit"];
    assert_eq!(p["id"], Daemon::artifact_id(&permit));
    assert_eq!(p["requested_by"], "test");
    assert_eq!(p["on_behalf_of"], "team-a");
    assert_eq!(p["reason"], "nightly build");
    assert_eq!(
        p["chain"].as_array().unwrap().len(),
        1,
        "root-signed: chain of one key"
    );
    assert_eq!(p["issuer"], p["chain"][0]);
    assert_eq!(a["policy_version"], 1);
    assert_eq!(a["policy_digest"].as_str().unwrap().len(), 64);

    let r = exec_record(&d, &denied.path);
    assert_eq!(
        (r["decision"].as_str(), r["reason"].as_str()),
        (Some("deny"), Some("no-permit"))
    );
    assert_eq!(r["permit"], Value::Null);
    assert_eq!(r["digest"], denied.digest_hex());

    // Administrative events are in the same chain.
    let records = d.audit_records();
    assert!(records
        .iter()
        .any(|r| r["kind"] == "admin" && r["event"] == "start"));
    assert!(records.iter().any(|r| r["event"] == "submit"
        && r["detail"]["outcome"]["ok"] == true
        && r["detail"]["peer"]["uid"] == 0));
}

#[test]
fn lineage_of_a_three_process_chain_is_recorded_and_explained() {
    let d = Daemon::start("auditlineage", "enforce");
    let scratch = Scratch::new("auditlineage-jobs");
    let progs: Vec<Program> = ["a", "b", "c"].iter().map(|n| job(&scratch, n)).collect();
    let ids: Vec<String> = progs
        .iter()
        .map(|p| {
            let f = d.issue(&p.path, &d.cgroup, "1h", &["--reason", "lineage"]);
            d.ok(&["submit", f.to_str().unwrap()]);
            Daemon::artifact_id(&f)
        })
        .collect();
    let script = format!(
        "exec {} sh -c 'exec {} true'",
        progs[1].path.display(),
        progs[2].path.display()
    );
    assert_ran(&progs[0].run_in_cgroup(&d.cgroup_dir, &["sh", "-c", &script]));
    let (a, b, c) = (
        exec_record(&d, &progs[0].path),
        exec_record(&d, &progs[1].path),
        exec_record(&d, &progs[2].path),
    );
    assert_eq!(a["permit"]["id"], ids[0].as_str());
    assert_eq!(a["parent_permit"], Value::Null);
    assert_eq!(b["parent_permit"]["id"], ids[0].as_str());
    assert_eq!(c["parent_permit"]["id"], ids[1].as_str());
    assert_eq!(c["permit"]["id"], ids[2].as_str());

    let log = d.audit_log();
    let seq = c["seq"].as_u64().unwrap().to_string();
    let out = agent(&[
        "audit",
        "explain",
        &seq,
        "--log-file",
        log.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("<- record {}", b["seq"])), "{text}");
    assert!(text.contains(&format!("<- record {}", a["seq"])), "{text}");
    assert!(text.contains("chain's origin"), "{text}");
    assert!(
        text.contains(&ids[2]) && text.contains("issuer key") && text.contains("lineage"),
        "{text}"
    );
    assert!(text.contains("trust policy version 1"), "{text}");
    assert!(text.contains("requested by test"), "{text}");
}

#[test]
fn audit_verify_detects_edits_deletions_and_swaps_of_the_real_log() {
    let mut d = Daemon::start("auditverify", "enforce");
    let scratch = Scratch::new("auditverify-jobs");
    let prog = job(&scratch, "job");
    for _ in 0..3 {
        assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
    }
    let _ = exec_record(&d, &prog.path);
    d.stop();
    let log = d.audit_log();
    let key = d.dir.join("state/audit.pub");
    let verify = |path: &std::path::Path| {
        agent(&[
            "audit",
            "verify",
            path.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
    };
    let out = verify(&log);
    assert!(
        out.status.success(),
        "intact log refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));

    let original = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 6, "{original}");
    let tampered = scratch.dir.join("tampered.jsonl");
    let write = |ls: &[String]| {
        let mut f = fs::File::create(&tampered).unwrap();
        for l in ls {
            writeln!(f, "{l}").unwrap();
        }
    };
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    // Edit: a denial rewritten as an allow.
    let deny = owned
        .iter()
        .position(|l| l.contains("\"decision\":\"deny\""))
        .expect("a deny record");
    let mut edited = owned.clone();
    edited[deny] = edited[deny].replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    write(&edited);
    let out = verify(&tampered);
    assert!(!out.status.success(), "edit went unnoticed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN"));
    // Delete one record.
    let mut deleted = owned.clone();
    deleted.remove(deny);
    write(&deleted);
    assert!(
        !verify(&tampered).status.success(),
        "deletion went unnoticed"
    );
    // Swap two records.
    let mut swapped = owned.clone();
    swapped.swap(deny, deny + 1);
    write(&swapped);
    assert!(!verify(&tampered).status.success(), "swap went unnoticed");
}
