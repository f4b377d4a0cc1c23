//! The real service under real systemd (issue 16). `cargo xtask test` runs
//! this binary only in the systemd VM: Debian with systemd as PID 1 and the
//! package `cargo xtask deb` built at /authz/authz-agent.deb.
//!
//! The package installs with dpkg; `systemctl start` returns once the agent
//! said READY=1 (Type=notify); the unit's sandbox lets it enforce; its log
//! reaches journald with real priorities and fields; `systemctl reload`
//! applies a changed setting and trust policy without a restart and refuses
//! a bad config; the watchdog restarts an agent that stopped answering; and
//! neither `systemctl stop` nor a crash lets an unpermitted exec run.
//!
//! The tests share the installed package and the service (one boot); each
//! starts from the same config (`service()`), and undoes what it changes.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use authz_tests::{assert_eperm, assert_ran, busybox, Program};
use serde_json::Value;

const DEB: &str = "/authz/authz-agent.deb";
const AGENT: &str = "/usr/sbin/authz-agent";
const UNIT: &str = "authz-agent.service";
const CONFIG: &str = "/etc/authz/agent.toml";
const DECISIONS: &str = "/var/log/authz/decisions.jsonl";
/// Keys, programs and permits of these tests (kept for the whole boot).
const HOME: &str = "/var/lib/authz-systemd-test";
/// The enforced cgroup, and one the tests add to the scope by reloading.
const JAIL: &str = "/authz-systemd-test/jail";
const OTHER: &str = "/authz-systemd-test/other";
/// A drop-in the watchdog test adds (in /run: gone at reboot anyway).
const WATCHDOG_DROPIN: &str = "/run/systemd/system/authz-agent.service.d/50-test-watchdog.conf";
/// WatchdogSec= for the watchdog test: short, but a few turns of the main
/// loop even under software emulation.
const TEST_WATCHDOG_SECS: u64 = 5;
/// The unit's CapabilityBoundingSet=, by number (linux/capability.h):
/// CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN,
/// CAP_SYS_RESOURCE, CAP_MAC_ADMIN, CAP_PERFMON, CAP_BPF.
const UNIT_CAPABILITIES: [u32; 8] = [0, 1, 2, 21, 24, 33, 38, 39];
/// How long systemd and the agent get for anything asynchronous here.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `cmd` through sh; its output, whatever the status.
fn sh(cmd: &str) -> Output {
    Command::new("/bin/sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .env("SYSTEMD_PAGER", "")
        .output()
        .unwrap_or_else(|e| panic!("sh -c {cmd:?}: {e}"))
}

/// Runs `cmd` through sh, which must succeed; its stdout.
#[track_caller]
fn ok(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One property of the unit (`systemctl show -p NAME --value`).
fn show(property: &str) -> String {
    ok(&format!("systemctl show -p {property} --value {UNIT}"))
        .trim()
        .to_owned()
}

fn main_pid() -> u32 {
    show("MainPID").parse().expect("MainPID is a number")
}

fn restarts() -> u32 {
    show("NRestarts").parse().expect("NRestarts is a number")
}

/// Waits until `f` holds, or panics with `what` and the unit's journal.
#[track_caller]
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > PATIENCE {
            panic!("{what}: not within {PATIENCE:?}\n{}", unit_report());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The unit's state and its last journal records, for a failure message.
fn unit_report() -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&sh(&format!("systemctl status --no-pager {UNIT}")).stdout),
        String::from_utf8_lossy(&sh(&format!("journalctl -u {UNIT} --no-pager -n 40")).stdout)
    )
}

/// Runs a `systemctl` verb on the unit, which must succeed (else the
/// unit's status and journal say why).
#[track_caller]
fn systemctl(verb: &str) {
    let out = sh(&format!("systemctl {verb} {UNIT}"));
    assert!(
        out.status.success(),
        "systemctl {verb} {UNIT} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        unit_report()
    );
}

fn restart() {
    let _ = sh(&format!("systemctl reset-failed {UNIT}"));
    systemctl("restart");
}

/// dpkg -i of the package, once per boot.
fn installed() {
    if Path::new(AGENT).exists() {
        return;
    }
    let out = ok(&format!("dpkg -i {DEB} 2>&1"));
    eprintln!("dpkg -i {DEB}:\n{out}");
}

/// The test's state: the root key's public half, the programs, the jail.
struct Service {
    jail: PathBuf,
    other: PathBuf,
    /// Permitted in the jail (its permit is submitted).
    allowed: Program,
    /// Permitted nowhere.
    intruder: Program,
    public_key: String,
}

/// A copy of busybox at `HOME/name`, with content of its own.
fn program(name: &str) -> Program {
    let path = Path::new(HOME).join(name);
    if !path.exists() {
        fs::copy(busybox(), &path).expect("copy busybox");
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(name.as_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    Program::at(path)
}

/// The config every test starts from: enforce in JAIL, trust the test root.
fn config_text(public_key: &str, enforce: &[&str], extra_agent: &str, trusted: bool) -> String {
    let cgroups: Vec<String> = enforce.iter().map(|c| format!("{c:?}")).collect();
    let root = if trusted {
        format!(
            "[[trust.roots]]\nname = \"test-root\"\npublic_key = \"{public_key}\"\n\
             cgroup_prefixes = [\"/\"]\nmax_ttl = \"30d\"\n"
        )
    } else {
        String::new()
    };
    format!(
        "[agent]\nmode = \"enforce\"\nenforce_cgroups = [{}]\ncgroup_poll = \"1s\"\n{extra_agent}\n\
         [audit]\ncheckpoint_interval = \"1s\"\n\n[trust]\nversion = 1\n\n{root}",
        cgroups.join(", ")
    )
}

/// The package installed, the service running with the standard config,
/// `allowed` permitted in the jail.
fn service() -> Service {
    installed();
    fs::create_dir_all(HOME).unwrap();
    for cg in [JAIL, OTHER] {
        fs::create_dir_all(format!("/sys/fs/cgroup{cg}")).expect("create the test cgroup");
    }
    let key = Path::new(HOME).join("root");
    if !key.with_extension("key").exists() {
        ok(&format!("{AGENT} key generate --out {}", key.display()));
    }
    let public =
        authz_agent::trust::PublicKey::read(&key.with_extension("pub")).expect("read .pub");
    let public_key = hex::encode(public.key.as_bytes());
    let wanted = config_text(&public_key, &[JAIL], "", true);
    let changed = fs::read_to_string(CONFIG).ok().as_deref() != Some(wanted.as_str());
    if changed {
        fs::write(CONFIG, &wanted).unwrap();
    }
    if changed || show("ActiveState") != "active" {
        restart();
    }
    let allowed = program("allowed");
    let intruder = program("intruder");
    let permit = Path::new(HOME).join("allowed.permit");
    if !permit.exists() {
        ok(&format!(
            "{AGENT} artifact issue --key {} --binary {} --cgroup {JAIL} --ttl 1d \
             --requested-by systemd-test --config {CONFIG} --out {}",
            key.with_extension("key").display(),
            allowed.path.display(),
            permit.display()
        ));
    }
    ok(&format!("{AGENT} submit {}", permit.display()));
    Service {
        jail: PathBuf::from(format!("/sys/fs/cgroup{JAIL}")),
        other: PathBuf::from(format!("/sys/fs/cgroup{OTHER}")),
        allowed,
        intruder,
        public_key,
    }
}

/// The enforcement every test expects: the permitted program runs in the
/// jail, the other one is refused there with EPERM.
#[track_caller]
fn enforcing(s: &Service) {
    assert_ran(&s.allowed.run_in_cgroup(&s.jail, &["true"]));
    assert_eperm(&s.intruder.run_in_cgroup(&s.jail, &["true"]));
}

/// The decision log's `reload` records.
fn reload_records() -> Vec<Value> {
    fs::read_to_string(DECISIONS)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == "reload")
        .collect()
}

/// `systemctl reload`, then the decision log's record of it.
#[track_caller]
fn reload() -> Value {
    let before = reload_records().len();
    ok(&format!("systemctl reload {UNIT}"));
    let mut record = Value::Null;
    wait_for("a reload record in the decision log", || {
        let records = reload_records();
        if records.len() > before {
            record = records[before].clone();
            true
        } else {
            false
        }
    });
    record
}

/// The unit's journal records (JSON export), at `priority` or worse when given.
fn journal(priority: Option<&str>) -> Vec<Value> {
    let filter = priority.map_or(String::new(), |p| format!("-p {p}"));
    ok(&format!("journalctl -u {UNIT} {filter} -o json --no-pager"))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn message(record: &Value) -> &str {
    record["MESSAGE"].as_str().unwrap_or_default()
}

#[test]
fn the_package_installs_and_start_returns_once_the_agent_is_ready() {
    installed();
    let status = ok("dpkg-query -W -f='${Status} ${Version}' authz-agent");
    assert!(status.starts_with("install ok installed"), "{status}");
    let conffiles = ok("dpkg-query -W -f='${Conffiles}' authz-agent");
    assert!(conffiles.contains("/etc/authz/agent.toml"), "{conffiles}");
    let files = ok("dpkg -L authz-agent");
    for f in [
        AGENT,
        "/lib/systemd/system/authz-agent.service",
        "/usr/share/man/man8/authz-agent.8.gz",
        "/usr/share/bash-completion/completions/authz-agent",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "the package lacks {f}:\n{files}"
        );
        assert!(Path::new(f).exists(), "{f} is not installed");
    }
    assert_eq!(
        ok(&format!("systemctl is-enabled {UNIT}")).trim(),
        "enabled"
    );
    assert_eq!(show("Type"), "notify");

    let s = service();
    ok(&format!("systemctl stop {UNIT}"));
    assert_eq!(show("ActiveState"), "inactive");
    let start = Instant::now();
    systemctl("start");
    let took = start.elapsed();
    // Type=notify: start returned after READY=1, which the agent sends once
    // its socket is open and its programs attached: it answers at once.
    assert_eq!(show("ActiveState"), "active");
    assert_eq!(show("SubState"), "running");
    let out = Command::new(AGENT)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the agent did not answer right after `systemctl start` returned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["mode"], "enforce");
    let text = show("StatusText");
    assert!(
        text.contains("mode enforce"),
        "the agent's status line: {text:?}"
    );
    eprintln!("systemctl start took {took:?}; status line {text:?}");
    enforcing(&s);
}

#[test]
fn the_units_sandbox_lets_the_agent_enforce() {
    let s = service();
    let pid = main_pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    // The unit's hardening is really on the running agent.
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(
        field("Seccomp:"),
        "2",
        "SystemCallFilter= installs a seccomp filter"
    );
    let expected: u64 = UNIT_CAPABILITIES.iter().map(|c| 1u64 << c).sum();
    let bounding = u64::from_str_radix(&field("CapBnd:"), 16).unwrap();
    assert_eq!(
        bounding, expected,
        "CapabilityBoundingSet= is the unit's capabilities"
    );
    let own_ns = fs::read_link("/proc/self/ns/mnt").unwrap();
    let agent_ns = fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(
        own_ns, agent_ns,
        "ProtectSystem= gives the agent its own mounts"
    );
    // ... and within it the agent loaded, attached and enforces.
    enforcing(&s);
    let status: Value = serde_json::from_str(&ok(&format!("{AGENT} status --json"))).unwrap();
    assert_eq!(status["mode"], "enforce");
}

#[test]
fn journald_gets_records_with_priorities_and_fields() {
    let s = service();
    // A warning: a setting that needs a restart, changed by a reload.
    fs::write(
        CONFIG,
        config_text(&s.public_key, &[JAIL], "max_permits = 4096", true),
    )
    .unwrap();
    let record = reload();
    assert_eq!(record["detail"]["ok"], true, "{record}");
    assert_eq!(
        record["detail"]["needs_restart"][0], "agent.max_permits",
        "{record}"
    );

    let mut all = Vec::new();
    wait_for("the restart-only warning in the journal", || {
        all = journal(None);
        all.iter().any(|r| r["AUTHZ_KEY"] == "agent.max_permits")
    });
    let warning = all
        .iter()
        .find(|r| r["AUTHZ_KEY"] == "agent.max_permits")
        .unwrap();
    assert_eq!(warning["PRIORITY"], "4", "{warning}");
    assert_eq!(warning["SYSLOG_IDENTIFIER"], "authz-agent", "{warning}");
    assert!(message(warning).contains("restart"), "{warning}");
    let started = all
        .iter()
        .find(|r| message(r) == "authz-agent enforcing")
        .unwrap_or_else(|| panic!("no start record among {} journal records", all.len()));
    assert_eq!(started["PRIORITY"], "6", "info is informational: {started}");
    assert_eq!(
        started["AUTHZ_MODE"], "enforce",
        "fields are journal fields: {started}"
    );

    // `-p warning` keeps warnings and worse only.
    let warnings = journal(Some("warning"));
    assert!(!warnings.is_empty());
    for r in &warnings {
        let p: u8 = r["PRIORITY"].as_str().unwrap().parse().unwrap();
        assert!(p <= 4, "journalctl -p warning returned {r}");
    }
    assert!(warnings
        .iter()
        .any(|r| r["AUTHZ_KEY"] == "agent.max_permits"));
    assert!(!warnings
        .iter()
        .any(|r| message(r) == "authz-agent enforcing"));

    fs::write(CONFIG, config_text(&s.public_key, &[JAIL], "", true)).unwrap();
    assert_eq!(reload()["detail"]["ok"], true);
}

#[test]
fn reload_applies_settings_and_trust_without_a_restart_and_refuses_a_bad_config() {
    let s = service();
    let (pid, restarted) = (main_pid(), restarts());
    assert_ran(&s.intruder.run_in_cgroup(&s.other, &["true"]));

    // A wider scope.
    fs::write(CONFIG, config_text(&s.public_key, &[JAIL, OTHER], "", true)).unwrap();
    let record = reload();
    assert_eq!(record["detail"]["ok"], true, "{record}");
    assert!(
        record["detail"]["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "agent.enforce_cgroups"),
        "{record}"
    );
    assert_eperm(&s.intruder.run_in_cgroup(&s.other, &["true"]));
    enforcing(&s);

    // A trust policy without the root: its permit goes; back with it.
    fs::write(
        CONFIG,
        config_text(&s.public_key, &[JAIL, OTHER], "", false),
    )
    .unwrap();
    let record = reload();
    assert_eq!(record["detail"]["ok"], true, "{record}");
    assert_eq!(record["detail"]["live_permits"]["after"], 0, "{record}");
    assert_eperm(&s.allowed.run_in_cgroup(&s.jail, &["true"]));
    fs::write(CONFIG, config_text(&s.public_key, &[JAIL, OTHER], "", true)).unwrap();
    let record = reload();
    assert_eq!(record["detail"]["live_permits"]["after"], 1, "{record}");
    enforcing(&s);

    // A config that does not parse: refused, logged, nothing changes.
    fs::write(CONFIG, "[agent]\nmode = \"lax\"\n[trust]\nversion = 1\n").unwrap();
    let record = reload();
    assert_eq!(record["detail"]["ok"], false, "{record}");
    assert!(
        record["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{record}"
    );
    wait_for("the refusal in the journal at priority err", || {
        journal(Some("err"))
            .iter()
            .any(|r| message(r).contains("reload refused"))
    });
    assert_eq!(show("ActiveState"), "active");
    assert_eperm(&s.intruder.run_in_cgroup(&s.other, &["true"]));
    enforcing(&s);

    // All of it without a restart: same process, nothing detached.
    assert_eq!(main_pid(), pid);
    assert_eq!(restarts(), restarted);
    fs::write(CONFIG, config_text(&s.public_key, &[JAIL], "", true)).unwrap();
    assert_eq!(reload()["detail"]["ok"], true);
    assert_ran(&s.intruder.run_in_cgroup(&s.other, &["true"]));
}

/// Removes the watchdog drop-in again, whatever happened.
struct WatchdogDropIn;

impl WatchdogDropIn {
    fn install() -> Self {
        let path = Path::new(WATCHDOG_DROPIN);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            path,
            format!("[Service]\nWatchdogSec={TEST_WATCHDOG_SECS}s\n"),
        )
        .unwrap();
        ok("systemctl daemon-reload");
        Self
    }
}

impl Drop for WatchdogDropIn {
    fn drop(&mut self) {
        let _ = fs::remove_file(WATCHDOG_DROPIN);
        let _ = sh(&format!(
            "systemctl daemon-reload; systemctl reset-failed {UNIT}; systemctl restart {UNIT}"
        ));
    }
}

#[test]
fn the_watchdog_restarts_an_agent_that_stopped_answering() {
    let s = service();
    let _dropin = WatchdogDropIn::install();
    systemctl("restart");
    let pid = main_pid();
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let wanted = format!("WATCHDOG_USEC={}", TEST_WATCHDOG_SECS * 1_000_000);
    assert!(
        environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()),
        "systemd did not give the agent {wanted}"
    );
    // Pinging: alive and the same process after three watchdog periods.
    std::thread::sleep(Duration::from_secs(3 * TEST_WATCHDOG_SECS));
    assert_eq!(
        main_pid(),
        pid,
        "the agent was restarted although it pinged"
    );
    assert_eq!(show("ActiveState"), "active");

    // Hung: no pings. systemd kills it and starts a new one; meanwhile the
    // kernel goes on refusing.
    let restarted = restarts();
    ok(&format!("kill -STOP {pid}"));
    enforcing(&s);
    wait_for("a new agent after the watchdog fired", || {
        show("ActiveState") == "active" && main_pid() != pid && main_pid() != 0
    });
    assert!(restarts() > restarted);
    let systemd_saw = journal(None)
        .iter()
        .any(|r| message(r).contains("Watchdog timeout"));
    assert!(systemd_saw, "systemd logged no watchdog timeout");
    enforcing(&s);
}

#[test]
fn stop_and_a_crash_keep_enforcement() {
    let s = service();
    ok(&format!("systemctl stop {UNIT}"));
    assert_eq!(show("ActiveState"), "inactive");
    enforcing(&s);
    systemctl("start");
    enforcing(&s);

    let (pid, restarted) = (main_pid(), restarts());
    ok(&format!("systemctl kill --signal=SIGKILL {UNIT}"));
    enforcing(&s);
    wait_for("systemd to restart the killed agent", || {
        show("ActiveState") == "active" && main_pid() != pid && main_pid() != 0
    });
    assert!(restarts() > restarted);
    enforcing(&s);
}
