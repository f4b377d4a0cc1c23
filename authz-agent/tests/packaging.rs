//! The shipped systemd unit and example config are valid as shipped.
use std::{path::Path, process::Command};

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(root.join("packaging/authz-agent.service")).unwrap();
    assert!(unit.contains("Type=notify"), "the agent notifies readiness");
    // Where the Debian package (cargo xtask deb) installs the agent.
    assert!(unit.contains("ExecStart=/usr/sbin/authz-agent run --config /etc/authz/agent.toml"));
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "reload is SIGHUP"
    );
    assert!(
        unit.contains("\nWatchdogSec="),
        "the agent pings a watchdog"
    );
    let dir = std::env::temp_dir().join(format!("authz-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("authz-agent.service");
    std::fs::write(
        &path,
        unit.replace("/usr/sbin/authz-agent", env!("CARGO_BIN_EXE_authz-agent")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd) is needed to check the unit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("authz-agent.service"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
