//! Issue 17 on a real kernel: the inbox directory (`[agent] inbox_dir`),
//! fed the way real fleet channels write: rename into place (Ansible, rsync),
//! the `..data` symlink swap of a Kubernetes ConfigMap volume, a slow writer,
//! garbage, and thousands of files at once.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sha2::Digest as _;

use authz_tests::{daemon::Daemon, *};

/// How long a dropped file may take to go live here (a loaded CI VM under
/// emulation; it takes well under a second on an idle one).
const LIVE_WITHIN: Duration = Duration::from_secs(60);

fn start(name: &str) -> (Daemon, PathBuf) {
    start_with(name, "")
}

/// As [`start`], with extra `[agent]` lines.
fn start_with(name: &str, extra: &str) -> (Daemon, PathBuf) {
    let inbox = PathBuf::from(format!("/tmp/authz-inbox-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&inbox);
    fs::create_dir_all(&inbox).unwrap();
    let d = Daemon::start_with(
        name,
        "enforce",
        &format!(
            "inbox_dir = \"{}\"\nhost_labels = [\"build\"]\nmax_permits = 20000\n{extra}",
            inbox.display()
        ),
    );
    (d, inbox)
}

/// Waits until `job` runs in the daemon's cgroup; panics with `what` when it
/// does not within [`LIVE_WITHIN`].
#[track_caller]
fn runs_soon(d: &Daemon, job: &Program, what: &str) {
    let start = Instant::now();
    loop {
        if matches!(job.run_in_cgroup(&d.cgroup_dir, &["true"]), Ok(o) if o.status.success()) {
            return;
        }
        assert!(
            start.elapsed() < LIVE_WITHIN,
            "{what}: not live after {LIVE_WITHIN:?}; inbox: {}",
            d.json(&["list"])["inbox"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The inbox's entry for `name` in `list --json`, once it has an outcome
/// other than `waiting`.
#[track_caller]
fn outcome(d: &Daemon, name: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let list = d.json(&["list"]);
        let files = list["inbox"]["files"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(f) = files.iter().find(|f| f["name"] == name) {
            if f["outcome"] != "waiting" {
                return f.clone();
            }
        }
        assert!(
            start.elapsed() < LIVE_WITHIN,
            "{name}: no outcome; inbox: {}",
            list["inbox"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `inbox` records in the decision log, for `name`.
fn records_for(d: &Daemon, name: &str) -> Vec<serde_json::Value> {
    d.audit_records()
        .into_iter()
        .filter(|r| {
            r.to_string().contains("\"inbox\"")
                && r.to_string().contains(&format!("\"name\":\"{name}\""))
        })
        .collect()
}

/// Delivers `src` as `inbox/name` the way config management does: a hidden
/// temporary file in the same directory, renamed into place.
fn rename_into_place(src: &Path, inbox: &Path, name: &str) {
    let temp = inbox.join(format!(".{name}.tmp"));
    fs::copy(src, &temp).unwrap();
    fs::rename(&temp, inbox.join(name)).unwrap();
}

#[test]
fn real_channels_deliveries_go_live_and_garbage_changes_nothing() {
    let (mut d, inbox) = start("inbox");
    let scratch = Scratch::new("inbox-jobs");
    let jobs: Vec<Program> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|n| job(&scratch, n))
        .collect();
    let [a, b, c, e, f, g] = [&jobs[0], &jobs[1], &jobs[2], &jobs[3], &jobs[4], &jobs[5]];
    for j in &jobs {
        assert_eperm(&j.run_in_cgroup(&d.cgroup_dir, &["true"]));
    }

    // Rename into place (Ansible's copy, rsync, install).
    let pa = d.issue(&a.path, &d.cgroup, "1h", &[]);
    rename_into_place(&pa, &inbox, "a.permit");
    runs_soon(&d, a, "renamed into place");
    assert_eq!(outcome(&d, "a.permit")["outcome"], "accepted");

    // A slow writer: half the file, a pause, the rest. Never read half.
    let pb = fs::read(d.issue(&b.path, &d.cgroup, "1h", &[])).unwrap();
    let mut w = fs::File::create(inbox.join("b.permit")).unwrap();
    w.write_all(&pb[..pb.len() / 2]).unwrap();
    w.flush().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eperm(&b.run_in_cgroup(&d.cgroup_dir, &["true"]));
    w.write_all(&pb[pb.len() / 2..]).unwrap();
    drop(w);
    runs_soon(&d, b, "slow writer");
    let rb = records_for(&d, "b.permit");
    assert_eq!(rb.len(), 1, "the half-written file was read: {rb:?}");
    assert!(rb[0].to_string().contains("\"accepted\""), "{rb:?}");

    // A Kubernetes ConfigMap volume: visible names are links through
    // `..data` into a timestamped directory; a new version swaps `..data`.
    let v1 = inbox.join("..2026_11_26_10_00_00.1");
    fs::create_dir(&v1).unwrap();
    fs::copy(d.issue(&c.path, &d.cgroup, "1h", &[]), v1.join("c.permit")).unwrap();
    symlink("..2026_11_26_10_00_00.1", inbox.join("..data")).unwrap();
    symlink("..data/c.permit", inbox.join("c.permit")).unwrap();
    runs_soon(&d, c, "ConfigMap, first version");
    let v2 = inbox.join("..2026_11_26_10_05_00.2");
    fs::create_dir(&v2).unwrap();
    fs::copy(v1.join("c.permit"), v2.join("c.permit")).unwrap();
    // The new version's permit for e sits in place before the swap, but no
    // visible name reaches it until the swap's new link appears.
    fs::copy(d.issue(&e.path, &d.cgroup, "1h", &[]), v2.join("e.permit")).unwrap();
    symlink("..2026_11_26_10_05_00.2", inbox.join("..data_tmp")).unwrap();
    fs::rename(inbox.join("..data_tmp"), inbox.join("..data")).unwrap();
    symlink("..data/e.permit", inbox.join("e.permit")).unwrap();
    fs::remove_dir_all(&v1).unwrap();
    runs_soon(&d, e, "ConfigMap, after the ..data swap");
    assert_ran(&c.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // Host binding: a permit for another label is refused with its own
    // reason; one for this host's label goes live.
    let elsewhere = d.issue(&f.path, &d.cgroup, "1h", &["--host-label", "eu-west"]);
    rename_into_place(&elsewhere, &inbox, "f-eu-west.permit");
    let o = outcome(&d, "f-eu-west.permit");
    assert_eq!(
        (o["outcome"].as_str(), o["error"].as_str()),
        (Some("refused"), Some("wrong-host")),
        "{o}"
    );
    assert_eperm(&f.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let here = d.issue(&f.path, &d.cgroup, "1h", &["--host-label", "build"]);
    rename_into_place(&here, &inbox, "f-build.permit");
    runs_soon(&d, f, "bound to this host's label");

    // Garbage of every kind: refused with its reason, once; nothing else
    // changes and the agent keeps answering.
    fs::write(
        inbox.join("junk.permit"),
        b"format = \"authz-artifact\"\nnot = [toml",
    )
    .unwrap();
    fs::write(inbox.join("binary.permit"), [0xffu8, 0xfe, 0, 1, 2]).unwrap();
    fs::write(inbox.join("huge.permit"), vec![b'#'; 2 * 1024 * 1024]).unwrap();
    symlink("/etc/passwd", inbox.join("passwd.permit")).unwrap();
    nix::unistd::mkfifo(
        &inbox.join("fifo.permit"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let forged = {
        let mut t = fs::read_to_string(&pa).unwrap();
        // Same permit, another cgroup: the signature no longer covers it.
        t = t.replace(&d.cgroup, "/");
        t
    };
    fs::write(inbox.join("forged.permit"), forged).unwrap();
    for (name, kind) in [
        ("junk.permit", "malformed"),
        ("binary.permit", "malformed"),
        ("huge.permit", "too-large"),
        ("passwd.permit", "unreadable"),
        ("fifo.permit", "unreadable"),
        ("forged.permit", "bad-signature"),
    ] {
        let o = outcome(&d, name);
        assert_eq!(
            (o["outcome"].as_str(), o["error"].as_str()),
            (Some("refused"), Some(kind)),
            "{name}: {o}"
        );
        assert_eq!(records_for(&d, name).len(), 1, "{name}");
    }
    assert!(
        !d.ok(&["list", "--json"]).contains("root:x:0:0"),
        "a link out of the inbox was read back"
    );
    // The same bytes under another name: already held, no second permit.
    rename_into_place(&pa, &inbox, "a-again.permit");
    assert_eq!(outcome(&d, "a-again.permit")["outcome"], "already-held");
    // A file leaving the inbox revokes nothing.
    fs::remove_file(inbox.join("a.permit")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_ran(&a.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // A signed revocation list dropped in revokes what it names; an older
    // serial is refused.
    let a_id = Daemon::artifact_id(&pa);
    let list = d.revocation_list(&d.root.key, 7, &[&a_id], &[]);
    rename_into_place(&list, &inbox, "revocations-7.toml");
    let o = outcome(&d, "revocations-7.toml");
    assert_eq!(o["outcome"], "applied", "{o}");
    assert_eperm(&a.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let b_id = Daemon::artifact_id(&inbox.join("b.permit"));
    let old = d.revocation_list(&d.root.key, 6, &[&b_id], &[]);
    rename_into_place(&old, &inbox, "revocations-6.toml");
    let o = outcome(&d, "revocations-6.toml");
    assert_eq!(o["error"], "stale-serial", "{o}");
    assert_ran(&b.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // A restart reads the inbox again: everything stays as it was, and no
    // outcome is recorded twice.
    let inbox_records = |d: &Daemon| -> Vec<String> {
        d.audit_records()
            .iter()
            .filter(|r| r["event"] == "inbox")
            .map(|r| r["detail"].to_string())
            .collect()
    };
    let before = inbox_records(&d);
    let files_before = d.json(&["list"])["inbox"]["files"]
        .as_array()
        .unwrap()
        .len();
    d.stop();
    d.spawn();
    for j in [b, c, e, f] {
        runs_soon(&d, j, "after a restart");
    }
    assert_eperm(&a.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_eperm(&g.run_in_cgroup(&d.cgroup_dir, &["true"]));
    // Give the restarted agent time to read the whole inbox.
    let start = Instant::now();
    while d.json(&["list"])["inbox"]["files"]
        .as_array()
        .map_or(0, Vec::len)
        < files_before
    {
        assert!(
            start.elapsed() < LIVE_WITHIN,
            "the inbox was not read again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = inbox_records(&d);
    assert_eq!(
        after.len(),
        before.len(),
        "a restart recorded inbox outcomes again: {:?}",
        &after[before.len().min(after.len())..]
    );

    // The directory replaced under the agent (an operator's `rm -rf; mkdir`):
    // it is watched again, what is gone leaves `list`, nothing is revoked.
    let old = inbox.with_extension("old");
    fs::rename(&inbox, &old).unwrap();
    fs::create_dir(&inbox).unwrap();
    fs::copy(old.join("b.permit"), inbox.join("b.permit")).unwrap();
    let start = Instant::now();
    loop {
        let files = d.json(&["list"])["inbox"]["files"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if files.len() == 1 && files[0]["name"] == "b.permit" {
            break;
        }
        assert!(
            start.elapsed() < LIVE_WITHIN,
            "the replaced inbox was not read again: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for j in [b, c, e, f] {
        assert_ran(&j.run_in_cgroup(&d.cgroup_dir, &["true"]));
    }
    let _ = fs::remove_dir_all(&old);
    let _ = fs::remove_dir_all(&inbox);
}

#[test]
fn ten_thousand_artifacts_dropped_at_once_all_become_live() {
    const N: usize = 10_000;
    // What this test measures is intake; the kernel-state comparison every
    // 2 s (a tamper check reading every row) is not its subject.
    let (d, inbox) = start_with("inbox-many", "tamper_check = \"60s\"");
    let scratch = Scratch::new("inbox-many-jobs");
    let j = job(&scratch, "many");
    // Written elsewhere on the same filesystem, then renamed in as fast as
    // possible: the inotify queue may overflow, and must not lose any.
    let staging = inbox.with_extension("staging");
    fs::create_dir_all(&staging).unwrap();
    let t0 = Instant::now();
    // Each for another binary (so each its own kernel row), the last for a
    // real one that must then run.
    let digests: Vec<[u8; 32]> = (0..N as u64 - 1)
        .map(|i| sha2::Sha256::digest(i.to_le_bytes()).into())
        .chain([j.digest])
        .collect();
    let texts = d.issue_for_digests(&digests, &d.cgroup, 3600);
    for (i, t) in texts.iter().enumerate() {
        fs::write(staging.join(format!("p{i:05}.permit")), t).unwrap();
    }
    eprintln!("{N} permits signed and written in {:?}", t0.elapsed());
    let started = Instant::now();
    for i in 0..N {
        let name = format!("p{i:05}.permit");
        fs::rename(staging.join(&name), inbox.join(&name)).unwrap();
    }
    let deadline = Duration::from_secs(480);
    loop {
        // The metrics: cheaper for an agent holding 10,000 permits than
        // `status` (which checks every kernel row first) or `list`.
        let metrics = d.ok(&["status", "--format", "prometheus"]);
        let live = metrics
            .lines()
            .find(|l| l.starts_with("authz_permits{state=\"live\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as usize;
        if live == N {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "{live} of {N} live after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    eprintln!("{N} artifacts live {:?} after the drop", started.elapsed());
    let list = d.json(&["list"]);
    let files = list["inbox"]["files"].as_array().unwrap();
    assert_eq!(files.len(), N);
    assert!(
        files.iter().all(|f| f["outcome"] == "accepted"),
        "not all accepted"
    );
    assert_ran(&j.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let _ = fs::remove_dir_all(&inbox);
    let _ = fs::remove_dir_all(&staging);
}
