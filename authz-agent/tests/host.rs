//! What a user sees on a host whose kernel cannot run authz (like our build
//! machines): one clear error, non-zero exit, no panic — before any config is read.
use std::process::Command;

#[test]
fn run_on_an_unsuitable_host_says_why_and_exits_non_zero() {
    let check = Command::new(env!("CARGO_BIN_EXE_authz-agent"))
        .args(["check"])
        .output()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authz-agent"))
        .args(["run", "--config", "/nonexistent/agent.toml"])
        .env("AUTHZ_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.starts_with("authz-agent: error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    if check.status.success() {
        // This host can enforce: the missing config is what is wrong.
        assert!(stderr.contains("/nonexistent/agent.toml"), "{stderr}");
    } else {
        // The kernel is reported first, with the way out.
        assert!(
            stderr.contains("authz cannot enforce on this host"),
            "{stderr}"
        );
        assert!(
            stderr.contains("cargo xtask vm") || stderr.contains("root"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("agent.toml"),
            "the config is not the problem: {stderr}"
        );
    }
}
