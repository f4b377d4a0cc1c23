//! Operations (issue 16) against a real daemon and kernel: `why` agrees with
//! what the kernel does, metrics move and the textfile is replaced whole,
//! exit statuses tell outcomes apart, `submit -` and `artifact issue
//! --submit`, and `report --since` across a restart.
use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use authz_tests::{daemon::Daemon, *};

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `why ... --json`: (exit status, answer).
fn why(d: &Daemon, path: &Path, cgroup: &str) -> (i32, serde_json::Value) {
    let out = d.cli(&["why", path.to_str().unwrap(), "--cgroup", cgroup, "--json"]);
    let v = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("why --json: {e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn why_tells_what_the_kernel_does_and_why() {
    let d = Daemon::start("why", "enforce");
    let scratch = Scratch::new("why-jobs");
    let allowed = job(&scratch, "allowed");
    let stranger = job(&scratch, "stranger");
    let sub_dir = d.cgroup_dir.join("sub");
    fs::create_dir(&sub_dir).unwrap();
    let sub = format!("{}/sub", d.cgroup);
    let mut free = TestCgroups::new("why-free");
    let (free_dir, _) = free.create("x");
    let free_path = free.path("x");

    let permit = d.issue(&allowed.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", permit.to_str().unwrap()]);
    let id = Daemon::artifact_id(&permit);

    // Allowed: the digest, the permit and until when; the kernel agrees.
    let (code, v) = why(&d, &allowed.path, &d.cgroup);
    assert_eq!(
        (code, v["decision"].as_str(), v["reason"].as_str()),
        (0, Some("allow"), Some("permit")),
        "{v}"
    );
    assert_eq!(v["digest"], allowed.digest_hex());
    assert_eq!(v["permit"]["id"], id.as_str());
    assert!(
        v["permit"]["expires"]
            .as_str()
            .is_some_and(|e| e.ends_with('Z')),
        "{v}"
    );
    assert_ran(&allowed.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // A permit for this cgroup only: refused below it, as the kernel does.
    let (code, v) = why(&d, &allowed.path, &sub);
    assert_eq!(
        (code, v["reason"].as_str()),
        (3, Some("wrong-cgroup")),
        "{v}"
    );
    assert_eq!(v["elsewhere"][0]["cgroup"], d.cgroup.as_str());
    assert_eperm(&allowed.run_in_cgroup(&sub_dir, &["true"]));

    // No permit at all.
    let (code, v) = why(&d, &stranger.path, &d.cgroup);
    assert_eq!((code, v["reason"].as_str()), (3, Some("no-permit")), "{v}");
    assert_eperm(&stranger.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // Outside the enforced subtree.
    let (code, v) = why(&d, &stranger.path, &free_path);
    assert_eq!(
        (code, v["reason"].as_str()),
        (0, Some("out-of-scope")),
        "{v}"
    );
    assert_ran(&stranger.run_in_cgroup(&free_dir, &["true"]));

    // Open for writing: mutable content (the kernel refuses the exec).
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(&allowed.path)
        .unwrap();
    let (code, v) = why(&d, &allowed.path, &d.cgroup);
    assert_eq!(
        (code, v["reason"].as_str()),
        (3, Some("mutable-content")),
        "{v}"
    );
    assert!(
        allowed.run_in_cgroup(&d.cgroup_dir, &["true"]).is_err() || {
            let out = allowed.run_in_cgroup(&d.cgroup_dir, &["true"]).unwrap();
            !out.status.success()
        }
    );
    drop(writer);

    // --pid: the cgroup of that process.
    let mut sleeper = Command::new(authz_tests::busybox());
    sleeper.args(["sleep", "30"]);
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(free_dir.join("cgroup.procs"))
        .unwrap();
    let child = {
        use std::os::unix::process::CommandExt as _;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
        // SAFETY: only write(2) on a descriptor opened before fork.
        unsafe {
            sleeper.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        sleeper.stdin(Stdio::null()).spawn().unwrap()
    };
    let pid = child.id().to_string();
    let out = d.cli(&[
        "why",
        allowed.path.to_str().unwrap(),
        "--pid",
        &pid,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["cgroup"], free_path.as_str(), "{v}");
    assert_eq!(v["reason"], "out-of-scope");
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();

    // Revoked: told as such, not as a bare no-permit.
    d.ok(&["revoke", &id, "--reason", "test"]);
    let (code, v) = why(&d, &allowed.path, &d.cgroup);
    assert_eq!((code, v["reason"].as_str()), (3, Some("revoked")), "{v}");
    assert_eq!(v["permit"]["id"], id.as_str());
    assert_eperm(&allowed.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // The human form names the verdict and the reason (and exits 3 too).
    let out = d.cli(&[
        "why",
        stranger.path.to_str().unwrap(),
        "--cgroup",
        &d.cgroup,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("REFUSED:") && text.contains("no-permit"),
        "{text}"
    );
    let _ = fs::remove_dir(&sub_dir);
}

/// Samples of the Prometheus/OpenMetrics text: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (name.to_owned(), value)
        })
        .collect()
}

const NO_PERMIT: &str = r#"authz_exec_decisions_total{outcome="deny",reason="no-permit"}"#;

#[test]
fn metrics_move_with_decisions_and_the_textfile_is_replaced_whole() {
    let scratch = Scratch::new("metrics-out");
    let textfile = scratch.dir.join("authz.prom");
    let d = Daemon::start_with(
        "metrics",
        "enforce",
        &format!(
            "[metrics]\ntextfile = \"{}\"\ninterval = \"1s\"",
            textfile.display()
        ),
    );
    let jobs = Scratch::new("metrics-jobs");
    let intruder = job(&jobs, "intruder");

    let text = d.ok(&["status", "--format", "openmetrics"]);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE authz_submit_duration_seconds histogram"),
        "{text}"
    );
    let before = samples(&text)[NO_PERMIT];

    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let after = samples(&d.ok(&["status", "--format", "openmetrics"]))[NO_PERMIT];
    assert_eq!(after, before + 1.0, "the kernel counts the refusal at once");
    wait_until(Duration::from_secs(10), || {
        samples(&d.ok(&["status", "--format", "openmetrics"]))
            .iter()
            .any(|(k, v)| {
                k.starts_with("authz_decision_events_total")
                    && k.contains(r#"reason="no-permit""#)
                    && *v >= 1.0
            })
    });

    // A submit is timed.
    let good = job(&jobs, "good");
    let permit = d.issue(&good.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", permit.to_str().unwrap()]);
    let m = samples(&d.ok(&["status", "--format", "prometheus"]));
    assert_eq!(m["authz_submit_duration_seconds_count"], 1.0, "{m:?}");
    assert_eq!(m[r#"authz_permits{state="live"}"#], 1.0, "{m:?}");

    // The textfile: rewritten every second, by rename (a new inode each
    // time), and every read of it is a whole exposition.
    wait_until(Duration::from_secs(10), || textfile.exists());
    let first = fs::metadata(&textfile).unwrap().ino();
    let mut inodes = std::collections::BTreeSet::from([first]);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut reads = 0;
    while Instant::now() < deadline {
        let text = fs::read_to_string(&textfile).unwrap();
        assert!(
            text.trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("authz_build_info")),
            "a partial textfile was read: {text}"
        );
        assert!(samples(&text).contains_key(NO_PERMIT));
        inodes.insert(fs::metadata(&textfile).unwrap().ino());
        reads += 1;
    }
    assert!(
        inodes.len() >= 3,
        "rewritten {} times in 4 s ({reads} reads)",
        inodes.len()
    );
    assert!(samples(&fs::read_to_string(&textfile).unwrap())[NO_PERMIT] >= after);
    let others: Vec<_> = fs::read_dir(&scratch.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "authz.prom" && !n.starts_with('.'))
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[test]
fn exit_statuses_tell_refused_unreachable_and_denied_apart() {
    let d = Daemon::start("exits", "enforce");
    let scratch = Scratch::new("exits-jobs");
    let prog = job(&scratch, "prog");

    // Refused: a permit signed by a key the agent does not trust.
    let stranger = authz_tests::daemon::generate_key(&scratch.dir, "stranger");
    let forged = scratch.dir.join("forged.permit");
    let out = Command::new(authz_tests::daemon::agent_bin())
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
        .arg(&forged)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.cli(&["submit", forged.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["ok"], false);
    assert_eq!(v[0]["error"]["error"]["kind"], "unknown-issuer", "{v}");
    // The same, checked offline.
    let out = Command::new(authz_tests::daemon::agent_bin())
        .args(["artifact", "verify"])
        .arg(&forged)
        .arg("--config")
        .arg(&d.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // Unreachable: nothing listens there.
    let out = Command::new(authz_tests::daemon::agent_bin())
        .args(["status", "--json", "--socket"])
        .arg(scratch.dir.join("nobody-listens.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["exit"], "unreachable");

    // Permission denied: a non-root client, first stopped by the socket's
    // mode (0660 root), then, with the socket opened up, by the agent.
    fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut nobody_cgroup = TestCgroups::new("exits-nobody");
    let (nobody_dir, _) = nobody_cgroup.create("x");
    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new(authz_tests::daemon::agent_bin());
        cmd.args(args)
            .arg("--socket")
            .arg(&d.socket)
            .env("AUTHZ_LOG", "off");
        in_cgroup_as(&mut cmd, &nobody_dir, Some(NOBODY)).unwrap()
    };
    let out = as_nobody(&["status"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    fs::set_permissions(
        &d.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = as_nobody(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["error"]["kind"], "unauthorized", "{v}");

    // Success is 0, a usage error 2.
    assert_eq!(d.cli(&["status"]).status.code(), Some(0));
    assert_eq!(d.cli(&["status", "--no-such-flag"]).status.code(), Some(2));
}

#[test]
fn submit_reads_stdin_and_issue_submits_at_once() {
    let d = Daemon::start("stdin", "enforce");
    let scratch = Scratch::new("stdin-jobs");
    let piped = job(&scratch, "piped");
    let issued = job(&scratch, "issued");

    let permit = d.issue(&piped.path, &d.cgroup, "1h", &[]);
    let mut child = Command::new(authz_tests::daemon::agent_bin())
        .args(["submit", "-", "--json", "--socket"])
        .arg(&d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&fs::read(&permit).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["file"], "-");
    assert_eq!(v[0]["result"]["state"], "live", "{v}");
    assert_ran(&piped.run_in_cgroup(&d.cgroup_dir, &["true"]));

    assert_eperm(&issued.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let out = Command::new(authz_tests::daemon::agent_bin())
        .args(["artifact", "issue", "--key"])
        .arg(&d.root.key)
        .arg("--binary")
        .arg(&issued.path)
        .args(["--cgroup", &d.cgroup, "--ttl", "1h", "--config"])
        .arg(&d.config)
        .args(["--submit", "--json", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["submitted"]["state"], "live", "{v}");
    assert_eq!(v["permit"]["digest"], issued.digest_hex());
    assert!(v["out"].is_null(), "no file was asked for: {v}");
    assert_ran(&issued.run_in_cgroup(&d.cgroup_dir, &["true"]));
}

#[test]
fn report_since_reads_the_log_across_a_restart() {
    let mut d = Daemon::start("since", "enforce");
    let scratch = Scratch::new("since-jobs");
    let intruder = job(&scratch, "intruder");
    let since =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(2))
            .to_string();
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    wait_until(Duration::from_secs(10), || {
        d.json(&["report"])["rows"]
            .as_array()
            .is_some_and(|r| r.iter().any(|row| row["digest"] == intruder.digest_hex()))
    });
    d.stop();
    d.spawn();

    // This run saw nothing; the log did.
    let live = d.json(&["report"]);
    assert!(
        !live["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["digest"] == intruder.digest_hex()),
        "{live}"
    );
    let v = d.json(&["report", "--since", &since]);
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["digest"] == intruder.digest_hex())
        .unwrap_or_else(|| panic!("no row for the refused binary: {v}"));
    assert_eq!(row["count"], 2, "{v}");
    assert_eq!(row["reason"], "no-permit");
    assert_eq!(row["cgroup"], d.cgroup.as_str());
    assert!(v["records_read"].as_u64().unwrap() > 2, "{v}");
    // A later start leaves it out; a duration works too.
    let later =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(60))
            .to_string();
    let v = d.json(&["report", "--since", &later]);
    assert!(v["rows"].as_array().unwrap().is_empty(), "{v}");
    let v = d.json(&["report", "--since", "1h"]);
    assert!(!v["rows"].as_array().unwrap().is_empty(), "{v}");
}

/// The requirements `check` reports, in order.
const REQUIREMENTS: [&str; 9] = [
    "root",
    "kernel version",
    "BPF LSM active",
    "BTF",
    "IMA",
    "cgroup v2",
    "bpffs",
    "program load",
    "self-test",
];

fn check_json(extra: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(authz_tests::daemon::agent_bin())
        .args(["check", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let v = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("check --json: {e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap_or(-1), v)
}

fn statuses(v: &serde_json::Value) -> Vec<(String, String)> {
    v["requirements"]
        .as_array()
        .unwrap_or_else(|| panic!("no requirements: {v}"))
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn check_lists_every_requirement_and_does_not_stop_at_the_first() {
    authz_tests::require_environment();
    // This VM has everything: each requirement ok, the probe refused.
    let (code, v) = check_json(&[]);
    assert_eq!(code, 0, "{v}");
    let got = statuses(&v);
    let want: Vec<(String, String)> = REQUIREMENTS
        .iter()
        .map(|n| ((*n).to_owned(), "ok".to_owned()))
        .collect();
    assert_eq!(got, want, "{v}");
    assert_eq!(v["ok"], true);

    // No cgroup v2 where it is told to look: that one is missing with its
    // fix, the others are still checked, and what needs it is not tried.
    let scratch = Scratch::new("check-root");
    let (code, v) = check_json(&["--cgroup-root", scratch.dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    let got: BTreeMap<String, String> = statuses(&v).into_iter().collect();
    assert_eq!(got.len(), REQUIREMENTS.len(), "{v}");
    assert_eq!(got["cgroup v2"], "missing", "{v}");
    for ok in [
        "root",
        "kernel version",
        "BPF LSM active",
        "BTF",
        "IMA",
        "bpffs",
    ] {
        assert_eq!(got[ok], "ok", "{ok}: {v}");
    }
    assert_eq!(
        (got["program load"].as_str(), got["self-test"].as_str()),
        ("skipped", "skipped"),
        "{v}"
    );
    let cgroup = v["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "cgroup v2")
        .unwrap();
    assert!(
        cgroup["fix"]
            .as_str()
            .is_some_and(|f| f.contains("mount -t cgroup2")),
        "{cgroup}"
    );

    // The text form: one line a requirement.
    let out = Command::new(authz_tests::daemon::agent_bin())
        .args(["check", "--cgroup-root"])
        .arg(&scratch.dir)
        .output()
        .unwrap();
    let text = stdout(&out);
    for name in REQUIREMENTS {
        assert!(text.contains(name), "{name} not in {text}");
    }
    assert!(text.contains("mount -t cgroup2"), "{text}");
}

#[test]
fn config_check_says_what_the_agent_would_do_or_why_it_cannot_start() {
    let mut d = Daemon::start("cfgcheck", "enforce");
    d.stop();
    let config_check = |config: &Path| {
        let out = Command::new(authz_tests::daemon::agent_bin())
            .args(["config", "check", "--json", "--config"])
            .arg(config)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
            panic!("config check --json: {e}: {}{}", stdout(&out), stderr(&out))
        });
        (out.status.code().unwrap_or(-1), v)
    };

    let (code, v) = config_check(&d.config);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["mode"], "enforce");
    assert_eq!(v["enforce_cgroups"][0], d.cgroup.as_str());
    assert_eq!(v["roots"][0]["name"], "test-root");

    let text = fs::read_to_string(&d.config).unwrap();
    let scratch = Scratch::new("cfgcheck-bad");
    // A key no version knows: refused with its line, exit 3.
    let unknown = scratch.dir.join("unknown.toml");
    fs::write(
        &unknown,
        text.replacen("[agent]\n", "[agent]\nenforce_everything = true\n", 1),
    )
    .unwrap();
    let (code, v) = config_check(&unknown);
    assert_eq!(code, 3, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["exit"].as_str()),
        (Some(false), Some("refused")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("enforce_everything"),
        "{v}"
    );
    // It parses but cannot start an agent: a group that does not exist.
    let group = scratch.dir.join("group.toml");
    fs::write(
        &group,
        text.replacen(
            "[agent]\n",
            "[agent]\nadmin_group = \"no-such-group-authz\"\n",
            1,
        ),
    )
    .unwrap();
    let (code, v) = config_check(&group);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["valid"], false, "{v}");
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("no-such-group-authz")),
        "{v}"
    );
}
