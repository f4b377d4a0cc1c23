//! Fail-open paths in the daemon (issue 11) and a restart that must prove its
//! programs before they take over (issue 12), each test named after the
//! attack, driven through the real binary.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use authz_tests::{
    daemon::{self, Daemon},
    *,
};

/// A sibling of the daemon's enforced cgroup, outside its scope.
fn free_sibling(d: &Daemon) -> PathBuf {
    let dir = d.cgroup_dir.with_file_name("free");
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn enforced_cgroup_removed_and_created_again_is_enforced_at_once() {
    let d = Daemon::start("recreate", "enforce");
    let scratch = Scratch::new("recreate-jobs");
    let intruder = job(&scratch, "intruder");
    let free = free_sibling(&d);
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let id_before = fs::metadata(&d.cgroup_dir).unwrap().ino();
    for round in 0..10 {
        // What systemd does to an empty slice and a runtime to a pod cgroup:
        // the path comes back with a new id. Exec at once, before any agent
        // could have noticed.
        fs::remove_dir(&d.cgroup_dir).unwrap();
        fs::create_dir(&d.cgroup_dir).unwrap();
        let result = intruder.run_in_cgroup(&d.cgroup_dir, &["true"]);
        if let Ok(out) = &result {
            panic!(
                "round {round}: the unpermitted binary ran in the re-created cgroup ({})",
                out.status
            );
        }
        assert_eperm(&result);
    }
    assert_ne!(fs::metadata(&d.cgroup_dir).unwrap().ino(), id_before);
    // The scope did not widen: a sibling is still out of scope.
    assert_ran(&intruder.run_in_cgroup(&free, &["true"]));
    let _ = fs::remove_dir(&free);
}

#[test]
fn enforced_cgroup_missing_at_start_neither_blocks_the_agent_nor_runs_unchecked() {
    let mut d = Daemon::start("missing", "enforce");
    let scratch = Scratch::new("missing-jobs");
    let intruder = job(&scratch, "intruder");
    let free = free_sibling(&d);
    // A fresh start (nothing pinned) while the listed cgroup does not exist.
    d.kill9();
    authz_agent::enforcer::pin::unload(&d.pin_dir).unwrap();
    fs::remove_dir(&d.cgroup_dir).unwrap();
    d.spawn();
    assert_eq!(d.json(&["status"])["mode"], "enforce");
    // It appears: enforced from its first exec.
    fs::create_dir(&d.cgroup_dir).unwrap();
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let nested = d.cgroup_dir.join("nested");
    fs::create_dir(&nested).unwrap();
    assert_eperm(&intruder.run_in_cgroup(&nested, &["true"]));
    fs::remove_dir(&nested).unwrap();
    assert_ran(&intruder.run_in_cgroup(&free, &["true"]));
    let _ = fs::remove_dir(&free);
}

/// Counts, in the decision log: refusal records for `exe`, decisions reported
/// missing, and decisions reported dropped.
fn accounted(d: &Daemon, exe: &str) -> (u64, u64, u64, Vec<serde_json::Value>) {
    let records = d.audit_records();
    let logged = records
        .iter()
        .filter(|r| r["kind"] == "exec" && r["decision"] == "deny" && r["actor"]["exe"] == exe)
        .count() as u64;
    let gaps: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r["event"] == "events-missing")
        .map(|r| r["detail"].clone())
        .collect();
    let missing = gaps.iter().filter_map(|g| g["missing"].as_u64()).sum();
    let dropped = records
        .iter()
        .filter(|r| r["event"] == "events-dropped")
        .filter_map(|r| r["detail"]["dropped"].as_u64())
        .sum();
    (logged, missing, dropped, gaps)
}

#[test]
fn kill_9_right_after_a_burst_of_refusals_loses_no_decision_silently() {
    let mut d = Daemon::start("burst", "enforce");
    let scratch = Scratch::new("burst-jobs");
    let intruder = job(&scratch, "intruder");
    let exe = intruder.path.to_string_lossy().into_owned();
    const BURST: u64 = 120;
    const ROUNDS: u64 = 3;
    for round in 0..ROUNDS {
        // Refusals race the agent's log writer; the agent dies right after.
        let done = Arc::new(AtomicU64::new(0));
        let burst = {
            let (intruder, cg, done) = (intruder.clone(), d.cgroup_dir.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..BURST {
                    assert_eperm(&intruder.run_in_cgroup(&cg, &["true"]));
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        burst.join().unwrap();
        d.kill9();
        assert_eq!(done.load(Ordering::SeqCst), BURST, "round {round}");
        d.spawn();
    }
    let expected = BURST * ROUNDS;
    // Give the restarted agent time to read the ring and let holes age.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (logged, missing, dropped, gaps) = loop {
        std::thread::sleep(Duration::from_secs(2));
        let counts = accounted(&d, &exe);
        if counts.0 + counts.1 + counts.2 >= expected || Instant::now() > deadline {
            break counts;
        }
    };
    assert!(
        logged <= expected,
        "{logged} refusal records for {expected} refusals: a decision was logged twice"
    );
    assert!(
        logged + missing + dropped >= expected,
        "{expected} refusals, but the log holds {logged}, reports {missing} missing and {dropped} dropped: \
         some were lost without a record\n{}",
        d.log_text()
    );
    for gap in &gaps {
        assert!(
            gap["before"].is_string() && gap["from_seq"].is_u64() && gap["to_seq"].is_u64(),
            "a missing-events record says which and when: {gap}"
        );
    }
    // The log is intact and every refusal is a complete record.
    d.stop();
    let verify = Command::new(daemon::agent_bin())
        .args(["audit", "verify"])
        .arg(d.audit_log())
        .arg("--key")
        .arg(d.dir.join("state/audit.pub"))
        .output()
        .expect("audit verify");
    assert!(
        verify.status.success(),
        "the log does not verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn new_programs_that_fail_their_self_test_leave_the_old_ones_enforcing() {
    let mut d = Daemon::start("swap", "enforce");
    let scratch = Scratch::new("swap-jobs");
    let allowed = job(&scratch, "allowed");
    let intruder = job(&scratch, "intruder");
    let p = d.issue(&allowed.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);
    d.stop();
    let link = d.pin_dir.join("link-bprm_check_security");
    let pinned_before = fs::metadata(&link).unwrap().ino();

    // Break the self-test of the next start: its cgroup tree is a read-only
    // mount, so the probe's cgroup cannot be made. The new programs attach,
    // cannot prove themselves, and must not take over.
    let ro = PathBuf::from(format!("/tmp/authz-cgroup-ro-{}", std::process::id()));
    fs::create_dir_all(&ro).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "cgroup2", "-o", "ro", "none"])
            .arg(&ro),
    );
    let config = fs::read_to_string(&d.config).unwrap();
    assert!(
        !config.contains("cgroup_root"),
        "the test config sets no cgroup_root"
    );
    let broken = config.replacen(
        "[agent]\n",
        &format!("[agent]\ncgroup_root = \"{}\"\n", ro.display()),
        1,
    );
    let broken_path = d.dir.join("broken.toml");
    fs::write(&broken_path, broken).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let intruder_ran = Arc::new(AtomicU64::new(0));
    let prober = {
        let (stop, ran, intruder, cg) = (
            stop.clone(),
            intruder_ran.clone(),
            intruder.clone(),
            d.cgroup_dir.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if intruder.run_in_cgroup(&cg, &["true"]).is_ok() {
                    ran.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let out = Command::new(daemon::agent_bin())
        .args(["run", "--config"])
        .arg(&broken_path)
        .env("AUTHZ_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the agent");
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();
    let _ = Command::new("umount").arg(&ro).output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the agent started without a self-test: {stderr}"
    );
    assert!(
        stderr.contains("self-test") && stderr.contains("keep enforcing"),
        "the agent must say its new programs failed and the old ones enforce: {stderr}"
    );
    assert_eq!(
        intruder_ran.load(Ordering::SeqCst),
        0,
        "a failed restart opened a window"
    );
    assert_eq!(
        fs::metadata(&link).unwrap().ino(),
        pinned_before,
        "the unproven programs replaced the pinned ones"
    );
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&allowed.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // A start that passes its self-test takes over.
    d.spawn();
    assert_ne!(fs::metadata(&link).unwrap().ino(), pinned_before);
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&allowed.run_in_cgroup(&d.cgroup_dir, &["true"]));
}
