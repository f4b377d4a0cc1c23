//! The daemon (issue 5) on a real kernel, driven through its real CLI:
//! submit/revoke/flush, crash and restart without a fail-open window, bad input,
//! peer authorization, concurrency, cgroups that come and go.
use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use authz_tests::{daemon::Daemon, *};

#[test]
fn submit_allows_and_revoke_refuses_within_the_second() {
    let d = Daemon::start("submit", "enforce");
    let scratch = Scratch::new("submit-jobs");
    let prog = job(&scratch, "job");

    assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let permit = d.issue(&prog.path, &d.cgroup, "1h", &[]);
    let out = d.ok(&["submit", permit.to_str().unwrap()]);
    assert!(out.contains("accepted") && out.contains("live"), "{out}");
    assert_ran(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));

    let list = d.json(&["list"]);
    let entry = &list["permits"][0];
    assert_eq!(entry["state"], "live");
    assert_eq!(entry["digest"], prog.digest_hex());
    assert_eq!(entry["requested_by"], "test");

    let id = Daemon::artifact_id(&permit);
    let started = Instant::now();
    d.ok(&["revoke", &id, "--reason", "test"]);
    assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "revocation took {:?}",
        started.elapsed()
    );

    // Replay after revoke: refused with a clear error, nothing changes.
    let out = d.cli(&["submit", permit.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("revoked") && err.contains("never"), "{err}");
    assert_eq!(d.json(&["list"])["permits"].as_array().unwrap().len(), 0);
    assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
}

#[test]
fn revoke_all_refuses_everything_in_scope_at_once() {
    let d = Daemon::start("flush", "enforce");
    let scratch = Scratch::new("flush-jobs");
    let jobs: Vec<Program> = (0..3).map(|i| job(&scratch, &format!("job{i}"))).collect();
    for j in &jobs {
        let p = d.issue(&j.path, &d.cgroup, "1h", &[]);
        d.ok(&["submit", p.to_str().unwrap()]);
        assert_ran(&j.run_in_cgroup(&d.cgroup_dir, &["true"]));
    }
    let out = d.ok(&["revoke", "--all", "--reason", "incident"]);
    assert!(out.contains("revoked 3"), "{out}");
    for j in &jobs {
        assert_eperm(&j.run_in_cgroup(&d.cgroup_dir, &["true"]));
    }
    let status = d.json(&["status"]);
    assert_eq!(status["kernel_permit_entries"], 0);
}

#[test]
fn kill_9_keeps_enforcing_and_restart_has_no_fail_open_window() {
    let mut d = Daemon::start("crash", "enforce");
    let scratch = Scratch::new("crash-jobs");
    let allowed = job(&scratch, "allowed");
    let intruder = job(&scratch, "intruder");
    let p = d.issue(&allowed.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);

    // A prober keeps trying the unauthorized binary (and the authorized one)
    // in the enforced cgroup for the whole crash/restart sequence.
    let stop = Arc::new(AtomicBool::new(false));
    let (intruder_ran, intruder_refused, allowed_refused) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let prober = {
        let (stop, ran, refused, allowed_refused) = (
            stop.clone(),
            intruder_ran.clone(),
            intruder_refused.clone(),
            allowed_refused.clone(),
        );
        let (intruder, allowed, cg) = (intruder.clone(), allowed.clone(), d.cgroup_dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match intruder.run_in_cgroup(&cg, &["true"]) {
                    Ok(_) => ran.fetch_add(1, Ordering::SeqCst),
                    Err(_) => refused.fetch_add(1, Ordering::SeqCst),
                };
                if allowed.run_in_cgroup(&cg, &["true"]).is_err() {
                    allowed_refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    d.kill9();
    // Daemon dead: the kernel still decides.
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&allowed.run_in_cgroup(&d.cgroup_dir, &["true"]));
    std::thread::sleep(Duration::from_millis(500));
    d.spawn();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();

    assert_eq!(
        intruder_ran.load(Ordering::SeqCst),
        0,
        "the unauthorized binary ran at some point"
    );
    assert!(
        intruder_refused.load(Ordering::SeqCst) > 3,
        "the prober barely ran"
    );
    assert_eq!(
        allowed_refused.load(Ordering::SeqCst),
        0,
        "the authorized binary was refused at some point"
    );
    // Same state after restart, and the pinned maps were re-adopted.
    let status = d.json(&["status"]);
    assert_eq!(status["mode"], "enforce");
    assert_eq!(status["pinned_state_adopted"], true);
    assert_eq!(status["permits"]["live"], 1);
    assert_ran(&allowed.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
}

/// While no daemon runs, the kernel keeps deciding and queues its events in
/// the pinned ring until the ring is full, then drops and counts them. A
/// restart must still pass its self-test (whose own event needs room on the
/// ring), log the queued decisions, and say how many were dropped.
#[test]
fn restart_after_the_ring_filled_while_down_logs_the_backlog_and_the_drops() {
    let mut d = Daemon::start("ringfull", "enforce");
    let scratch = Scratch::new("ringfull-jobs");
    let intruder = job(&scratch, "intruder");
    d.kill9();
    // A ring record is the event plus an 8-byte header, 8-byte aligned.
    let record = (std::mem::size_of::<authz_common::ExecEvent>() + 8).next_multiple_of(8);
    let capacity = authz_common::EVENT_RING_BYTES as usize / record;
    let attempts = capacity + 100;
    for _ in 0..attempts {
        assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    }
    d.spawn();

    let exe = intruder.path.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (logged, dropped) = loop {
        let records = d.audit_records();
        let logged = records
            .iter()
            .filter(|r| {
                r["kind"] == "exec" && r["decision"] == "deny" && r["actor"]["exe"] == exe.as_str()
            })
            .count();
        let dropped = records
            .iter()
            .find(|r| {
                r["event"] == "events-dropped" && r["detail"]["when"] == "before this agent started"
            })
            .and_then(|r| r["detail"]["dropped"].as_u64());
        if let (true, Some(dropped)) = (logged > 0, dropped) {
            break (logged, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "after {attempts} refusals while down: {logged} logged, drop record {dropped:?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        logged as u64 + dropped >= attempts as u64,
        "{attempts} refusals while down, but {logged} logged and {dropped} reported dropped"
    );
    assert!(dropped >= 100, "only {dropped} reported dropped");
    // Reported once: a second restart has nothing new to report.
    d.stop();
    d.spawn();
    d.ok(&["status"]);
    let reports = d
        .audit_records()
        .iter()
        .filter(|r| r["event"] == "events-dropped")
        .count();
    assert_eq!(
        reports, 1,
        "the drops were reported again after a clean restart"
    );
}

#[test]
fn expiry_holds_while_the_daemon_is_dead() {
    let mut d = Daemon::start("deadexpiry", "enforce");
    let scratch = Scratch::new("deadexpiry-jobs");
    let prog = job(&scratch, "job");
    let p = d.issue(&prog.path, &d.cgroup, "4s", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);
    assert_ran(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
    d.kill9();
    std::thread::sleep(Duration::from_secs(5));
    assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
    // Back up: the expired artifact is swept from the kernel map and the store.
    d.spawn();
    wait_until(|| d.json(&["status"])["kernel_permit_entries"] == 0);
    assert_eq!(d.json(&["list"])["permits"].as_array().unwrap().len(), 0);
    assert_eq!(
        fs::read_dir(d.dir.join("state/artifacts")).unwrap().count(),
        0
    );
}

#[test]
fn bad_artifacts_are_refused_clearly_and_change_nothing() {
    let d = Daemon::start("badinput", "enforce");
    let scratch = Scratch::new("badinput-jobs");
    let prog = job(&scratch, "job");
    let good = d.issue(&prog.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", good.to_str().unwrap()]);
    let before = d.json(&["list"]);

    // Malformed.
    let bad = scratch.dir.join("malformed.toml");
    fs::write(&bad, "this is = not [an artifact").unwrap();
    let out = d.cli(&["submit", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[malformed]"));

    // Signed by a key the agent does not trust.
    let stranger = authz_tests::daemon::generate_key(&scratch.dir, "stranger");
    let foreign = scratch.dir.join("foreign.toml");
    let st = Command::new(authz_tests::daemon::agent_bin())
        .args(["artifact", "issue", "--key"])
        .arg(&stranger.key)
        .arg("--binary")
        .arg(&prog.path)
        .args([
            "--cgroup",
            &d.cgroup,
            "--ttl",
            "1h",
            "--policy-version",
            "1",
            "--out",
        ])
        .arg(&foreign)
        .status()
        .unwrap();
    assert!(st.success());
    let out = d.cli(&["submit", foreign.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[unknown-issuer]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A signed artifact with one byte of a signed field changed.
    let text = fs::read_to_string(&good).unwrap();
    // The signed `cgroup = "..."` field, not a comment that mentions it.
    let field = format!("cgroup = \"{}\"", d.cgroup);
    assert!(text.contains(&field), "{text}");
    let tampered_text = text.replacen(&field, &format!("cgroup = \"{}x\"", d.cgroup), 1);
    assert_ne!(text, tampered_text);
    let tampered = scratch.dir.join("tampered.toml");
    fs::write(&tampered, tampered_text).unwrap();
    let out = d.cli(&["submit", tampered.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[bad-signature]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A huge file is refused before it is read.
    let huge = scratch.dir.join("huge.toml");
    fs::write(&huge, vec![b'#'; 10 * 1024 * 1024]).unwrap();
    let out = d.cli(&["submit", huge.to_str().unwrap()]);
    assert!(!out.status.success());

    assert_eq!(
        d.json(&["list"])["permits"],
        before["permits"],
        "no state change"
    );
}

#[test]
fn garbage_on_the_socket_gets_an_error_and_the_daemon_carries_on() {
    let d = Daemon::start("garbage", "audit");
    let attempts: Vec<Vec<u8>> = vec![
        b"\x00\xff\xfe garbage\n".to_vec(),
        b"{\"v\":1,\"op\":\"format-disk\"}\n".to_vec(),
        b"{\"v\":99,\"op\":\"list\"}\n".to_vec(),
        vec![b'a'; 300 * 1024],
        b"[]\n".to_vec(),
    ];
    for bytes in attempts {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let v: serde_json::Value =
            serde_json::from_str(answer.lines().next().unwrap_or("{}")).unwrap_or_default();
        assert_eq!(v["ok"], false, "garbage got {answer:?}");
        assert!(v["error"]["kind"].is_string());
    }
    // A client that connects and sends nothing must not block others.
    let _idle = UnixStream::connect(&d.socket).unwrap();
    d.ok(&["status"]);
}

#[test]
fn non_root_peer_without_the_group_is_refused() {
    let d = Daemon::start("peers", "audit");
    // The socket is 0660 root-owned; let nobody reach it so that the daemon's
    // own credential check is what refuses.
    fs::set_permissions(
        &d.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(authz_tests::daemon::agent_bin());
    cmd.args(["revoke", "--all", "--socket"]).arg(&d.socket);
    let out = in_cgroup_as(
        &mut cmd,
        &TestCgroups::new("peers-nobody").create("x").0,
        Some(NOBODY),
    )
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[unauthorized]") && err.contains("uid 65534"),
        "{err}"
    );
    // Root still can.
    d.ok(&["status"]);
}

#[test]
fn a_thousand_submissions_from_eight_clients_are_all_accounted_for() {
    let d = Daemon::start("concurrent", "audit");
    let scratch = Scratch::new("concurrent-jobs");
    let prog = job(&scratch, "job");
    // 1,000 distinct artifacts (same binary, distinct ids) issued up front.
    let t0 = Instant::now();
    let texts = d.issue_many(&prog.path, &d.cgroup, 3600, 1000);
    eprintln!("issued 1000 in {:?}", t0.elapsed());
    let t0 = Instant::now();
    let chunks: Vec<Vec<String>> = texts.chunks(125).map(|c| c.to_vec()).collect();
    let accepted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let socket = d.socket.clone();
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                for text in chunk {
                    let r = authz_agent::control::client::call(
                        &socket,
                        &authz_agent::control::protocol::Request::Submit { artifact: text },
                    );
                    if r.is_ok() {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("submitted 1000 in {:?}", t0.elapsed());
    assert_eq!(accepted.load(Ordering::SeqCst), 1000);
    let list = d.json(&["list"]);
    assert_eq!(list["permits"].as_array().unwrap().len(), 1000);
    let stored = fs::read_dir(d.dir.join("state/artifacts")).unwrap().count();
    assert_eq!(stored, 1000, "every accepted artifact is on disk");
    // One binary, one cgroup: one kernel entry behind 1,000 artifacts.
    assert_eq!(d.json(&["status"])["kernel_permit_entries"], 1);
}

#[test]
fn permits_follow_cgroups_that_appear_and_are_recreated() {
    let d = Daemon::start("cgroups", "enforce");
    let scratch = Scratch::new("cgroups-jobs");
    let prog = job(&scratch, "job");
    let later = format!("{}/later", d.cgroup);
    let later_dir = d.cgroup_dir.join("later");
    let p = d.issue(&prog.path, &later, "1h", &[]);
    let out = d.ok(&["submit", p.to_str().unwrap()]);
    assert!(out.contains("waiting-for-cgroup"), "{out}");

    fs::create_dir(&later_dir).unwrap();
    wait_until(|| d.json(&["list"])["permits"][0]["state"] == "live");
    assert_ran(&prog.run_in_cgroup(&later_dir, &["true"]));
    let first_id = d.json(&["list"])["permits"][0]["cgroup_id"].clone();

    // Removed and re-created: a new id, and the permit follows it.
    fs::remove_dir(&later_dir).unwrap();
    fs::create_dir(&later_dir).unwrap();
    wait_until(|| {
        let v = d.json(&["list"]);
        v["permits"][0]["state"] == "live" && v["permits"][0]["cgroup_id"] != first_id
    });
    assert_ran(&prog.run_in_cgroup(&later_dir, &["true"]));
    fs::remove_dir(&later_dir).unwrap();
}

#[test]
fn audit_then_report_then_enforce_rollout() {
    let d = Daemon::start("rollout", "audit");
    let scratch = Scratch::new("rollout-jobs");
    let prog = job(&scratch, "nightly-build");
    // Audit: runs, but is reported.
    assert_ran(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
    wait_until(|| {
        d.json(&["report"])["rows"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    let report = d.json(&["report"]);
    let row = &report["rows"][0];
    assert_eq!(row["digest"], prog.digest_hex());
    assert_eq!(row["decision"], "audit-deny");
    assert_eq!(row["cgroup"], d.cgroup);
    // Issue what the report shows, then enforce: the job still runs; others don't.
    let p = d.issue(&prog.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);
    d.ok(&["mode", "enforce"]);
    assert_ran(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let other = job(&scratch, "other");
    assert_eperm(&other.run_in_cgroup(&d.cgroup_dir, &["true"]));
}

#[test]
fn readiness_is_notified_to_systemd() {
    let dir = Scratch::new("notify");
    let sock_path = dir.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    std::env::set_var("NOTIFY_SOCKET", &sock_path);
    let d = Daemon::start("notify", "audit");
    std::env::remove_var("NOTIFY_SOCKET");
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 from the daemon");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    drop(d);
}

fn wait_until(f: impl FnMut() -> bool) {
    wait_until_within(Duration::from_secs(20), f);
}

fn wait_until_within(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn restart_reverifies_the_store_and_skips_what_no_longer_verifies() {
    let mut d = Daemon::start("restore", "enforce");
    let scratch = Scratch::new("restore-jobs");
    let good = job(&scratch, "good");
    let p = d.issue(&good.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);
    d.stop();
    // While it is down: a torn file and a tampered artifact appear in the store.
    let store = d.dir.join("state/artifacts");
    fs::write(
        store.join("0123456789abcdef0123456789abcdef.toml"),
        "format = \"authz-artifact\"\nversion = ",
    )
    .unwrap();
    let other = job(&scratch, "other");
    let q = d.issue(&other.path, &d.cgroup, "1h", &[]);
    let id = Daemon::artifact_id(&q);
    let field = format!("cgroup = \"{}\"", d.cgroup);
    let tampered = fs::read_to_string(&q)
        .unwrap()
        .replacen(&field, "cgroup = \"/\"", 1);
    fs::write(store.join(format!("{id}.toml")), tampered).unwrap();
    d.spawn();
    let list = d.json(&["list"]);
    let permits = list["permits"].as_array().unwrap();
    assert_eq!(permits.len(), 1, "{list}");
    assert_eq!(permits[0]["digest"], good.digest_hex());
    assert_ran(&good.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_eperm(&other.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let log = d.log_text();
    assert!(
        log.contains("no longer verifies"),
        "the skipped artifacts are reported:\n{log}"
    );
}

#[test]
fn the_sweeper_removes_expired_permits_from_the_kernel_map() {
    let d = Daemon::start("sweeper", "enforce");
    let scratch = Scratch::new("sweeper-jobs");
    let prog = job(&scratch, "job");
    let p = d.issue(&prog.path, &d.cgroup, "3s", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);
    assert_eq!(d.json(&["status"])["kernel_permit_entries"], 1);
    wait_until(|| d.json(&["status"])["kernel_permit_entries"] == 0);
    assert_eq!(d.json(&["list"])["permits"].as_array().unwrap().len(), 0);
    assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
}

/// Issue 11 item 2. Revoking a delegation must outlast the permits the agent
/// held under it when it was revoked: its key can mint new permits until the
/// delegation itself expires. Nor may a wall-clock step forward past that
/// expiry let the sweeper forget the revocation.
#[test]
fn revoked_delegation_stays_revoked_after_its_permits_expire_and_the_clock_steps() {
    let mut d = Daemon::start("revdeleg", "enforce");
    let scratch = Scratch::new("revdeleg-jobs");
    let prog = job(&scratch, "job");
    let team = d.delegate("team", &d.cgroup, "1h", "2h", &[]);
    let short = d.issue_as(&team, &prog.path, &d.cgroup, "3s", &[]);
    d.ok(&["submit", short.to_str().unwrap()]);
    assert_ran(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));

    let out = d.ok(&["revoke", &team.link_id, "--reason", "team key leaked"]);
    assert!(out.contains("1 artifact(s) removed"), "{out}");
    assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // The permit held under the delegation expires; several sweeps run.
    std::thread::sleep(Duration::from_secs(7));
    let refused_as_revoked = |d: &Daemon, why: &str| {
        let fresh = d.issue_as(&team, &prog.path, &d.cgroup, "1h", &[]);
        let out = d.cli(&["submit", fresh.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("[revoked]"),
            "{why}: a new permit under the revoked delegation was not refused as revoked: {}{err}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
        assert_eq!(d.json(&["list"])["permits"].as_array().unwrap().len(), 0);
    };
    refused_as_revoked(&d, "after the held permit expired");

    // The wall clock jumps a year ahead, past the delegation's expiry, the
    // sweeper runs, then the clock comes back.
    {
        let _step = WallClockStep::by(366 * 24 * 3600);
        std::thread::sleep(Duration::from_secs(4));
    }
    std::thread::sleep(Duration::from_secs(2));
    let revocations = fs::read_to_string(d.dir.join("state/revocations.toml")).unwrap();
    assert!(revocations.contains(&team.link_id), "{revocations}");
    refused_as_revoked(&d, "after a wall-clock step forward and back");

    d.stop();
    d.spawn();
    refused_as_revoked(&d, "after a restart");
}

/// Issue 11 item 3. A permit is valid only where its window and every
/// delegation link's window overlap: one issued "from now" under a delegation
/// that starts later must wait for the delegation, in `list` and in the kernel.
#[test]
fn permit_under_a_delegation_not_yet_valid_is_scheduled_not_live() {
    const DELEGATION_STARTS_IN: Duration = Duration::from_secs(20);
    let d = Daemon::start("latedeleg", "enforce");
    let scratch = Scratch::new("latedeleg-jobs");
    let prog = job(&scratch, "job");
    let starts = authz_agent::artifact::Timestamp::now()
        .checked_add(DELEGATION_STARTS_IN.as_secs())
        .unwrap();
    let starts_text = starts.to_string();
    let team = d.delegate(
        "team",
        &d.cgroup,
        "1h",
        "2h",
        &["--not-before", &starts_text],
    );
    let permit = d.issue_as(&team, &prog.path, &d.cgroup, "1h", &[]);
    let out = d.ok(&["submit", permit.to_str().unwrap()]);
    assert!(out.contains("scheduled"), "{out}");

    let entry = &d.json(&["list"])["permits"][0];
    assert_eq!(entry["state"], "scheduled", "{entry}");
    assert_eq!(entry["not_before"], starts_text.as_str(), "{entry}");
    assert_eq!(d.json(&["status"])["kernel_permit_entries"], 0);
    assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert!(
        authz_agent::artifact::Timestamp::now() < starts,
        "the test was too slow to check before the delegation started"
    );

    wait_until_within(DELEGATION_STARTS_IN + Duration::from_secs(20), || {
        d.json(&["list"])["permits"][0]["state"] == "live"
    });
    assert!(authz_agent::artifact::Timestamp::now() >= starts);
    assert_ran(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
}

/// Group `authz-<name>` with `gid`, added to the VM's /etc/group.
fn control_group(name: &str, gid: u32) -> String {
    let group = format!("authz-{name}");
    add_group(&group, gid);
    group
}

/// Lets non-root peers reach the socket file (0660, the configured group's).
fn open_to_members(d: &Daemon) {
    fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// `authz-agent ARGS --socket <d's>` as `creds`, from `cgroup_dir`.
fn cli_as(
    d: &Daemon,
    cgroup_dir: &std::path::Path,
    creds: &Creds,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(authz_tests::daemon::agent_bin());
    cmd.args(args)
        .arg("--socket")
        .arg(&d.socket)
        .env("AUTHZ_LOG", "warn");
    in_cgroup_with(&mut cmd, cgroup_dir, Some(creds)).expect("run authz-agent")
}

/// A member of socket_group may submit and read, but neither switch
/// enforcement off (which would persist across restarts) nor revoke or flush
/// permits: those need root or admin_group. Each attempt is refused, logged
/// with the peer, and changes nothing.
#[test]
fn group_member_cannot_switch_enforcement_off_or_flush() {
    let gid = 4200;
    let group = control_group("roles", gid);
    let d = Daemon::start_with("roles", "enforce", &format!("socket_group = \"{group}\""));
    open_to_members(&d);
    let scratch = Scratch::new("roles-jobs");
    let permitted = job(&scratch, "permitted");
    let intruder = job(&scratch, "intruder");
    let p = d.issue(&permitted.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);
    let id = Daemon::artifact_id(&p);
    let mut outside = TestCgroups::new("roles-member");
    let (cli_cgroup, _) = outside.create("cli");
    let member = Creds::member(4201, gid);

    for args in [
        &["mode", "off"][..],
        &["revoke", "--all", "--reason", "member"],
        &["revoke", &id],
    ] {
        let out = cli_as(&d, &cli_cgroup, &member, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a member ran {args:?}: {err}");
        assert!(
            err.contains("[forbidden]") && err.contains("needs root") && err.contains("uid 4201"),
            "{args:?}: {err}"
        );
    }

    // Nothing changed: still enforcing, the permit still in the kernel.
    let status = d.json(&["status"]);
    assert_eq!(status["mode"], "enforce", "{status}");
    assert_eq!(status["kernel_permit_entries"], 1, "{status}");
    assert_eq!(d.json(&["list"])["permits"][0]["state"], "live");
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&permitted.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // Each attempt is in the decision log (flushed twice a second), refused,
    // with who asked.
    for event in ["mode", "revoke-all", "revoke"] {
        let refused = |r: &serde_json::Value| {
            r["event"] == event
                && r["detail"]["outcome"]["error"] == "forbidden"
                && r["detail"]["peer"]["uid"] == 4201
                && r["detail"]["role"] == "submitter"
        };
        wait_until(|| d.audit_records().iter().any(refused));
    }

    // What a member may do still works.
    let out = cli_as(&d, &cli_cgroup, &member, &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = job(&scratch, "member-job");
    let q = d.issue(&other.path, &d.cgroup, "1h", &[]);
    let out = cli_as(&d, &cli_cgroup, &member, &["submit", q.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ran(&other.run_in_cgroup(&d.cgroup_dir, &["true"]));
}

/// admin_group grants what socket_group does not: changing the mode.
#[test]
fn admin_group_member_may_change_enforcement() {
    let (submit_gid, admin_gid) = (4210, 4211);
    let submitters = control_group("admins-submit", submit_gid);
    let admins = control_group("admins", admin_gid);
    let d = Daemon::start_with(
        "admins",
        "enforce",
        &format!("socket_group = \"{submitters}\"\nadmin_group = \"{admins}\""),
    );
    open_to_members(&d);
    let scratch = Scratch::new("admins-jobs");
    let intruder = job(&scratch, "intruder");
    let mut outside = TestCgroups::new("admins-cli");
    let (cli_cgroup, _) = outside.create("cli");
    // The socket file belongs to socket_group: an admin is in both.
    let admin = Creds {
        uid: 4212,
        gid: 4212,
        groups: vec![submit_gid, admin_gid],
    };
    let out = cli_as(&d, &cli_cgroup, &admin, &["mode", "audit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ran(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let out = cli_as(&d, &cli_cgroup, &admin, &["mode", "enforce"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let by_admin = |r: &&serde_json::Value| {
        r["event"] == "mode"
            && r["detail"]["outcome"]["ok"] == true
            && r["detail"]["peer"]["uid"] == 4212
            && r["detail"]["role"] == "admin"
    };
    wait_until(|| d.audit_records().iter().filter(by_admin).count() == 2);
}

/// The first line the agent sent on `s`, if any arrives within 100 ms.
fn line_waiting(s: &UnixStream) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = (&*s).read(&mut byte) {
        if byte[0] == b'\n' {
            break;
        }
        buf.push(byte[0]);
    }
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// `n` connections to `socket` made as `creds`.
fn connect_as(creds: &Creds, socket: &std::path::Path, n: usize) -> Vec<UnixStream> {
    let socket = socket.to_owned();
    on_thread_as(creds, move || {
        (0..n)
            .map(|_| UnixStream::connect(&socket).expect("connect to the control socket"))
            .collect()
    })
}

/// How long `status` took as `creds`, which must be answered.
#[track_caller]
fn status_as(creds: Option<&Creds>, socket: &std::path::Path) -> Duration {
    use authz_agent::control::{client::call, protocol::Request};
    let socket = socket.to_owned();
    let ask = move || {
        let t = Instant::now();
        (call(&socket, &Request::Status {}), t.elapsed())
    };
    let (answer, took) = match creds {
        Some(c) => on_thread_as(c, ask),
        None => ask(),
    };
    if let Err(e) = answer {
        panic!("status as {creds:?} was refused: {e} [{:?}]", e.kind());
    }
    took
}

/// A member holding every connection it can get, idle or dripping a request
/// one byte at a time, must lock out neither root nor another member; even all
/// non-root users together leave root its reserved places.
#[test]
fn idle_and_slow_connections_from_a_member_cannot_lock_out_root() {
    use authz_agent::control::admission::{DEADLINES, MAX_CONNECTIONS, PER_UID, ROOT_RESERVED};
    const PROMPT: Duration = Duration::from_secs(3);
    let gid = 4300;
    let group = control_group("flood", gid);
    let d = Daemon::start_with("flood", "enforce", &format!("socket_group = \"{group}\""));
    open_to_members(&d);
    let member = Creds::member(4301, gid);

    // More connections than the agent ever served at once, alternately left
    // idle and fed one byte every 200 ms, never a whole line.
    let flood = MAX_CONNECTIONS + 6;
    let conns = connect_as(&member, &d.socket, flood);
    let drips: Vec<UnixStream> = conns
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.try_clone().unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let dripper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for mut s in &drips {
                    let _ = s.write_all(b"{");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    let took = status_as(None, &d.socket);
    assert!(took < PROMPT, "root waited {took:?}");
    let took = status_as(Some(&Creds::member(4302, gid)), &d.socket);
    assert!(took < PROMPT, "another member waited {took:?}");

    // The flood got PER_UID places; every other connection was told why at once.
    let refused: Vec<String> = conns.iter().filter_map(line_waiting).collect();
    assert_eq!(refused.len(), flood - PER_UID, "{refused:#?}");
    for r in &refused {
        assert!(r.contains("\"busy\"") && r.contains("uid 4301"), "{r}");
    }

    // A request never finished is cut off at the deadline, with a reason.
    let slow = &conns[1];
    slow.set_read_timeout(Some(DEADLINES.request + Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(slow), &mut answer);
    assert!(answer.contains("too-slow"), "{answer:?}");
    stop.store(true, Ordering::SeqCst);
    dripper.join().unwrap();
    drop(conns);
    std::thread::sleep(Duration::from_secs(2));

    // Every place non-root users share, taken by idle members...
    let shared = MAX_CONNECTIONS - ROOT_RESERVED;
    let mut held = Vec::new();
    for i in 0..(shared / PER_UID) as u32 {
        held.extend(connect_as(
            &Creds::member(4310 + i, gid),
            &d.socket,
            PER_UID,
        ));
    }
    let refused: Vec<String> = held.iter().filter_map(line_waiting).collect();
    assert!(refused.is_empty(), "{refused:#?}");
    // ...and root is still answered; one more member is told why not.
    let took = status_as(None, &d.socket);
    assert!(took < PROMPT, "root waited {took:?}");
    let late = connect_as(&Creds::member(4399, gid), &d.socket, 1);
    let told = line_waiting(&late[0]).unwrap_or_default();
    assert!(
        told.contains("\"busy\"") && told.contains("non-root"),
        "{told}"
    );
}

/// A non-root user who can write cgroup.procs above an enforced subtree can
/// move processes out of it; one who can write a permitted cgroup's can move
/// processes into its permits. `check` and the daemon's start-up name both.
#[test]
fn check_and_start_up_name_cgroups_delegated_to_a_non_root_user() {
    let mut d = Daemon::start("delegated", "enforce");
    let scratch = Scratch::new("delegated-jobs");
    let prog = job(&scratch, "job");
    let permitted = format!("{}/ok", d.cgroup);
    fs::create_dir(d.cgroup_dir.join("ok")).unwrap();
    let p = d.issue(&prog.path, &permitted, "1h", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);
    let base = d.cgroup.strip_suffix("/jail").unwrap().to_owned();
    let base_dir = d.cgroup_dir.parent().unwrap().to_owned();
    let chown = |dir: &std::path::Path, uid: u32| {
        std::os::unix::fs::chown(dir.join("cgroup.procs"), Some(uid), Some(uid)).unwrap()
    };
    chown(&base_dir, 4401);
    chown(&d.cgroup_dir.join("ok"), 4402);
    let escape = format!(
        "uid 4401 owns {base}/cgroup.procs: it can move processes out of the enforced subtree {}",
        d.cgroup
    );
    let into = format!(
        "uid 4402 owns {permitted}/cgroup.procs: it can move processes into the permitted cgroup {permitted}"
    );

    d.stop();
    let out = Command::new(authz_tests::daemon::agent_bin())
        .args(["check", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&escape) && text.contains(&into), "{text}");

    // A restart says it too: a warning and a decision-log record each, and
    // enforcement goes on.
    d.spawn();
    let log = d.log_text();
    assert!(log.contains(&escape) && log.contains(&into), "{log}");
    wait_until(|| {
        let records = d.audit_records();
        [&escape, &into].iter().all(|s| {
            records.iter().any(|r| {
                r["event"] == "delegated-cgroup"
                    && r["detail"]["sentence"]
                        .as_str()
                        .is_some_and(|t| t.starts_with(s.as_str()))
            })
        })
    });
    assert_ran(&prog.run_in_cgroup(&d.cgroup_dir.join("ok"), &["true"]));
    assert_eperm(&prog.run_in_cgroup(&d.cgroup_dir, &["true"]));
}
