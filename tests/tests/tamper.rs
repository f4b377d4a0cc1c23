//! Tamper resistance (issue 15), each test named after the attack, run as
//! root in the VM against the real binary: root changing the kernel's state
//! behind the agent's back, and, under lockdown, root trying to reach authz's
//! objects, to trace or preload the agent, to start another agent or config,
//! and to end lockdown without a signed statement.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use authz_agent::enforcer::maps;
use authz_common::Config;
use authz_tests::{
    daemon::{self, maps_dir, Daemon},
    *,
};
use aya::maps::{Array, Map, MapData};

fn open_config(pin_dir: &Path) -> Result<Array<MapData, Config>, String> {
    let data =
        MapData::from_pin(maps_dir(pin_dir).join(maps::CONFIG)).map_err(|e| error_chain(&e))?;
    let map = Map::from_map_data(data).map_err(|e| error_chain(&e))?;
    Array::try_from(map).map_err(|e| error_chain(&e))
}

/// Copies `from` to `to` with `byte` appended: other content, same code.
fn copy_with_one_byte_more(from: &Path, to: &Path, byte: &[u8; 1]) {
    fs::copy(from, to).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(to)
        .unwrap()
        .write_all(byte)
        .unwrap();
}

/// The `tamper` records of the decision log.
fn tamper_records(d: &Daemon) -> Vec<serde_json::Value> {
    d.audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "admin" && r["event"] == "tamper")
        .collect()
}

/// Waits up to `limit` for `f` to hold.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

fn link_pins(pin_dir: &Path) -> Vec<PathBuf> {
    daemon::pins(pin_dir, "link-")
}

#[test]
fn root_writing_mode_off_into_the_pinned_config_is_undone_and_logged() {
    let d = Daemon::start_with("tamper-mode", "enforce", "tamper_check = \"1s\"");
    let scratch = Scratch::new("tamper-mode-jobs");
    let intruder = job(&scratch, "intruder");
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));

    let mut config = open_config(&d.pin_dir).expect("root opens the pinned config map");
    let mut c = config.get(&0, 0).unwrap();
    c.mode = authz_common::mode::OFF;
    config.set(0, c, 0).expect("root writes the map");

    assert!(
        eventually(Duration::from_secs(10), || config
            .get(&0, 0)
            .is_ok_and(|c| c.mode == authz_common::mode::ENFORCE)),
        "the agent did not put the mode back"
    );
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert!(
        eventually(Duration::from_secs(5), || !tamper_records(&d).is_empty()),
        "no tamper record in the decision log"
    );
    // Status reads the kernel: it says enforce, as the kernel does.
    let status = d.json(&["status"]);
    assert_eq!(status["mode"], "enforce", "{status}");
}

#[test]
fn root_inserting_a_permit_into_the_pinned_map_is_undone_and_logged() {
    use aya::maps::HashMap;
    let d = Daemon::start_with("tamper-permit", "enforce", "tamper_check = \"1s\"");
    let scratch = Scratch::new("tamper-permit-jobs");
    let intruder = job(&scratch, "intruder");
    let cgroup_id = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&d.cgroup_dir).unwrap());
    let data = MapData::from_pin(maps_dir(&d.pin_dir).join(maps::PERMITS)).expect("open permits");
    let mut permits: HashMap<MapData, authz_common::PermitKey, authz_common::Permit> =
        HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap();
    let (key, value) = permit(intruder.digest, cgroup_id, 0x77, false);
    permits
        .insert(key, value, 0)
        .expect("root inserts a permit");
    assert!(
        eventually(Duration::from_secs(10), || permits.get(&key, 0).is_err()),
        "the agent did not remove the forged permit"
    );
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert!(eventually(Duration::from_secs(5), || !tamper_records(&d).is_empty()));
}

#[test]
fn root_removing_the_link_pins_neither_stops_enforcement_nor_keeps_them_away() {
    let d = Daemon::start_with("tamper-pins", "enforce", "tamper_check = \"1s\"");
    let scratch = Scratch::new("tamper-pins-jobs");
    let intruder = job(&scratch, "intruder");
    let pins = link_pins(&d.pin_dir);
    assert!(!pins.is_empty());
    for p in &pins {
        fs::remove_file(p).expect("root removes a link pin");
    }
    // The agent holds its link descriptors: nothing detached.
    assert_eperm(&intruder.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert!(
        eventually(Duration::from_secs(10), || pins.iter().all(|p| p.exists())),
        "the agent did not pin its links again"
    );
    assert!(eventually(Duration::from_secs(5), || !tamper_records(&d).is_empty()));
}

// ---- lockdown ----------------------------------------------------------

/// This host's machine id; the VM may have none: then one is written.
fn machine_id() -> String {
    let path = Path::new("/etc/machine-id");
    if let Ok(s) = fs::read_to_string(path) {
        if s.trim().len() == 32 {
            return s.trim().to_owned();
        }
    }
    let id = "5eed0fa11ed0c0de5eed0fa11ed0c0de".to_owned();
    fs::write(path, format!("{id}\n")).expect("write /etc/machine-id");
    id
}

/// A daemon with `lockdown = true`. On drop it is killed and unloaded with a
/// signed unlock statement (the only way left).
struct Locked {
    d: Daemon,
    host: String,
}

impl Locked {
    fn start(name: &str) -> Self {
        let host = machine_id();
        let d = Daemon::start_with(name, "enforce", "lockdown = true\ntamper_check = \"1s\"");
        let status = d.json(&["status"]);
        assert_eq!(status["lockdown"], true, "{status}");
        Self { d, host }
    }

    /// Signs a statement with `key` (`extra`: more options).
    fn statement(&self, key: &Path, action: &str, extra: &[&str]) -> PathBuf {
        let out = self.d.dir.join(format!(
            "{action}-{}.toml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(daemon::agent_bin());
        cmd.args(["lockdown", "statement", "--key"])
            .arg(key)
            .args(["--action", action])
            .args(extra)
            .arg("-o")
            .arg(&out);
        if !extra.contains(&"--host") {
            cmd.args(["--host", &self.host]);
        }
        let o = cmd.output().expect("run lockdown statement");
        assert!(
            o.status.success(),
            "lockdown statement: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    fn unload(&self, statement: Option<&Path>) -> std::process::Output {
        let mut cmd = Command::new(daemon::agent_bin());
        cmd.args(["unload", "--pin-dir"])
            .arg(&self.d.pin_dir)
            .arg("--socket")
            .arg(&self.d.socket);
        if let Some(s) = statement {
            cmd.arg("--statement").arg(s);
        }
        cmd.output().expect("run unload")
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        self.d.kill9();
        let s = self.statement(&self.d.root.key.clone(), "unlock", &[]);
        let out = self.unload(Some(&s));
        if !out.status.success() && !std::thread::panicking() {
            panic!(
                "cleanup: signed unload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The words of a start refused because its binary is not recorded agent
/// code: the agent's own message, or the kernel's refusal of the program
/// load where the agent could not tell the cause.
fn refused_as_non_agent(msg: &str) -> bool {
    msg.contains("not an authorized agent") || msg.contains("BPF_PROG_LOAD returned EPERM")
}

fn refused(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a refusal, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn under_lockdown_root_cannot_open_write_or_remove_the_pinned_objects_by_any_path() {
    let l = Locked::start("lock-pins");
    let scratch = Scratch::new("lock-pins-jobs");
    let intruder = job(&scratch, "intruder");
    assert_eperm(&intruder.run_in_cgroup(&l.d.cgroup_dir, &["true"]));

    // BPF_OBJ_GET on the pin, as root.
    let e = open_config(&l.d.pin_dir)
        .err()
        .expect("root opened the config map");
    assert!(
        e.contains("Operation not permitted") || e.contains("os error 1"),
        "{e}"
    );
    // The same pins through a bind mount of bpffs.
    let bind = scratch.dir.join("bpf-bind");
    fs::create_dir_all(&bind).unwrap();
    run_ok(
        Command::new("mount")
            .args(["--bind", "/sys/fs/bpf"])
            .arg(&bind),
    );
    let rel = l.d.pin_dir.strip_prefix("/sys/fs/bpf").unwrap();
    let e = open_config(&bind.join(rel)).err();
    let _ = Command::new("umount").arg(&bind).status();
    assert!(
        e.is_some(),
        "root opened the config map through a bind mount"
    );
    // Removing or renaming a pin.
    for p in link_pins(&l.d.pin_dir) {
        let err = fs::remove_file(&p).expect_err("root removed a link pin");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EPERM),
            "{}: {err}",
            p.display()
        );
        assert!(fs::rename(&p, p.with_extension("x")).is_err());
    }
    // Every map on the host by id (BPF_MAP_GET_FD_BY_ID): the locked
    // agent's (a dozen and more) are not handed out.
    let refused_ids = aya::maps::loaded_maps().filter(Result::is_err).count();
    assert!(refused_ids >= 10, "only {refused_ids} maps refused by id");

    // The agent's own refusals: lowering the mode, unloading.
    let out = l.d.cli(&["mode", "off"]);
    let msg = refused(&out);
    assert!(msg.contains("locked"), "{msg}");
    let out = l.unload(None);
    // An agent is running: refused for that reason first; stop it and try.
    refused(&out);
    assert_eperm(&intruder.run_in_cgroup(&l.d.cgroup_dir, &["true"]));
}

#[test]
fn under_lockdown_a_dead_agent_still_cannot_be_unloaded_without_a_signed_unlock() {
    let mut l = Locked::start("lock-unload");
    let scratch = Scratch::new("lock-unload-jobs");
    let intruder = job(&scratch, "intruder");
    l.d.kill9();
    let msg = refused(&l.unload(None));
    assert!(msg.contains("locked"), "{msg}");
    assert!(!link_pins(&l.d.pin_dir).is_empty(), "pins were removed");
    assert_eperm(&intruder.run_in_cgroup(&l.d.cgroup_dir, &["true"]));
    // A genuine restart adopts the locked state.
    l.d.spawn();
    assert_eq!(l.d.json(&["status"])["lockdown"], true);
    assert_eperm(&intruder.run_in_cgroup(&l.d.cgroup_dir, &["true"]));
}

#[test]
fn under_lockdown_the_agent_cannot_be_traced_or_have_its_memory_written() {
    let l = Locked::start("lock-ptrace");
    let pid = l.d.child.as_ref().unwrap().id() as libc::pid_t;
    // SAFETY: PTRACE_ATTACH on a pid; no memory is passed.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
    let err = std::io::Error::last_os_error();
    assert_eq!(rc, -1, "root attached to the agent with ptrace");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let mem = fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"));
    assert!(mem.is_err(), "root opened the agent's memory for writing");
    // pidfd_getfd: steal a descriptor (a map's) from the agent.
    // SAFETY: plain syscalls on integers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(pidfd >= 0);
    let mut stolen = 0;
    for fd in 3..64 {
        // SAFETY: as above.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
        if got >= 0 {
            stolen += 1;
            // SAFETY: closing a descriptor we own.
            unsafe { libc::close(got as i32) };
        }
    }
    // SAFETY: closing a descriptor we own.
    unsafe { libc::close(pidfd) };
    assert_eq!(stolen, 0, "root took descriptors from the agent");
}

#[test]
fn under_lockdown_preloaded_or_changed_agent_code_gets_no_standing() {
    let mut l = Locked::start("lock-code");
    let scratch = Scratch::new("lock-code-files");
    // A library the agent did not map: libc with one byte more.
    let libc_path = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libc");
    let evil = scratch.dir.join("evil.so");
    copy_with_one_byte_more(Path::new(libc_path), &evil, b"x");
    let out = Command::new(daemon::agent_bin())
        .args(["status", "--socket"])
        .arg(&l.d.socket)
        .env("LD_PRELOAD", &evil)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be preloaded") || !out.status.success(),
        "the agent binary ran with a preloaded library: {err}"
    );

    // An agent binary one byte different is not an agent.
    l.d.kill9();
    let other = scratch.dir.join("authz-agent");
    copy_with_one_byte_more(&daemon::agent_bin(), &other, b"\0");
    let out = Command::new(&other)
        .args(["run", "--config"])
        .arg(&l.d.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let msg = refused(&out);
    assert!(refused_as_non_agent(&msg), "{msg}");
    // Nor may the genuine one start with another configuration.
    let original = fs::read_to_string(&l.d.config).unwrap();
    fs::write(&l.d.config, format!("{original}\n# changed\n")).unwrap();
    let out = Command::new(daemon::agent_bin())
        .args(["run", "--config"])
        .arg(&l.d.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let msg = refused(&out);
    assert!(msg.contains("another configuration"), "{msg}");
    fs::write(&l.d.config, original).unwrap();
    l.d.spawn();
    assert_eq!(l.d.json(&["status"])["lockdown"], true);
}

#[test]
fn only_a_signed_unlock_for_this_host_from_a_root_ends_lockdown() {
    let mut l = Locked::start("lock-unlock");
    let stranger = daemon::generate_key(&l.d.dir, "stranger");
    let attempts = [
        (
            "another host",
            l.statement(
                &l.d.root.key,
                "unlock",
                &["--host", "0123456789abcdef0123456789abcdef"],
            ),
        ),
        (
            "a key that is not a root",
            l.statement(&stranger.key, "unlock", &[]),
        ),
        (
            "an expired statement",
            l.statement(
                &l.d.root.key,
                "unlock",
                &["--not-before", "2020-01-01T00:00:00Z", "--ttl", "30m"],
            ),
        ),
        (
            "the wrong action",
            l.statement(
                &l.d.root.key,
                "adopt-agent",
                &["--binary", daemon::agent_bin().to_str().unwrap()],
            ),
        ),
    ];
    for (what, s) in &attempts {
        let out =
            l.d.cli(&["lockdown", "unlock", "--statement", s.to_str().unwrap()]);
        let msg = refused(&out);
        assert!(!msg.is_empty(), "{what}");
        assert_eq!(l.d.json(&["status"])["lockdown"], true, "{what}");
    }
    let good = l.statement(&l.d.root.key, "unlock", &["--reason", "maintenance"]);
    l.d.ok(&["lockdown", "unlock", "--statement", good.to_str().unwrap()]);
    assert_eq!(l.d.json(&["status"])["lockdown"], false);
    l.d.ok(&["mode", "off"]);
    assert!(l.d.audit_records().iter().any(|r| r["kind"] == "admin"
        && r["detail"].to_string().contains("maintenance")
        || r["event"].as_str().is_some_and(|e| e.contains("unlock"))));
    l.d.stop();
    let out = l.unload(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn under_lockdown_a_changed_config_does_not_apply_on_reload() {
    let l = Locked::start("lock-reload");
    let scratch = Scratch::new("lock-reload-jobs");
    let intruder = job(&scratch, "intruder");
    // Root rewrites the config to enforce nothing, and asks for a reload.
    let original = fs::read_to_string(&l.d.config).unwrap();
    let widened = original.replace(
        &format!("enforce_cgroups = [\"{}\"]", l.d.cgroup),
        "enforce_cgroups = [\"/nowhere-at-all\"]",
    );
    assert_ne!(original, widened);
    fs::write(&l.d.config, &widened).unwrap();
    let pid = l.d.child.as_ref().unwrap().id() as libc::pid_t;
    // SAFETY: kill(2) on the agent's pid, our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        eventually(Duration::from_secs(20), || l
            .d
            .audit_records()
            .iter()
            .any(|r| r["event"] == "reload" && r["detail"]["ok"] == false)),
        "no refused reload in the decision log"
    );
    assert_eperm(&intruder.run_in_cgroup(&l.d.cgroup_dir, &["true"]));
    fs::write(&l.d.config, original).unwrap();
}

#[test]
fn under_lockdown_an_upgraded_agent_binary_adopts_only_after_a_signed_adopt_statement() {
    let mut l = Locked::start("lock-adopt");
    let scratch = Scratch::new("lock-adopt-files");
    let intruder = job(&scratch, "intruder");
    // The "new version": the agent binary with one byte more.
    let upgraded = scratch.dir.join("authz-agent-new");
    copy_with_one_byte_more(&daemon::agent_bin(), &upgraded, b"\0");
    let start_upgraded = |d: &Daemon| {
        Command::new(&upgraded)
            .args(["run", "--config"])
            .arg(&d.config)
            .env("AUTHZ_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the upgraded agent")
    };
    // A statement for another binary authorizes nothing for this one.
    let other = l.statement(
        &l.d.root.key,
        "adopt-agent",
        &["--binary", daemon::agent_bin().to_str().unwrap()],
    );
    l.d.ok(&["lockdown", "adopt", "--statement", other.to_str().unwrap()]);
    l.d.kill9();
    let out = start_upgraded(&l.d).wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "an unauthorized agent binary started"
    );
    assert!(
        refused_as_non_agent(&String::from_utf8_lossy(&out.stderr)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eperm(&intruder.run_in_cgroup(&l.d.cgroup_dir, &["true"]));
    // With a signed adopt-agent statement naming it (sent to the running
    // genuine agent), the upgrade takes over.
    l.d.spawn();
    let adopt = l.statement(
        &l.d.root.key,
        "adopt-agent",
        &["--binary", upgraded.to_str().unwrap()],
    );
    let v =
        l.d.json(&["lockdown", "adopt", "--statement", adopt.to_str().unwrap()]);
    assert_eq!(v["files"], 1, "{v}");
    l.d.kill9();
    let mut child = start_upgraded(&l.d);
    let ready = eventually(Duration::from_secs(240), || {
        authz_agent::control::client::call(
            &l.d.socket,
            &authz_agent::control::protocol::Request::Status {},
        )
        .is_ok()
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        ready,
        "the adopted upgrade did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eperm(&intruder.run_in_cgroup(&l.d.cgroup_dir, &["true"]));
}
