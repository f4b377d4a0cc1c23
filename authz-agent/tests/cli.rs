//! End-to-end tests of `authz-agent key | delegate | artifact | audit` through the
//! built binary: what an operator types, what they get back.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const BIN: &str = env!("CARGO_BIN_EXE_authz-agent");

/// Exit statuses (docs/operations.md), written out here so a change to them
/// shows as a test failure.
const FAILURE: i32 = 1;
const REFUSED: i32 = 3;
const LOG_BROKEN: i32 = 6;

/// A scratch directory with a root key, a team key and an agent config that
/// trusts the root key for /jobs.slice, permits up to 7 days.
struct Scene {
    dir: PathBuf,
}

/// Appends each `(flag, value)` default that `extra` does not give, then `extra`.
fn with_defaults<'a>(args: &mut Vec<&'a str>, extra: &[&'a str], defaults: &[(&'a str, &'a str)]) {
    for &(flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
}

impl Scene {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("authz-cli-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let s = Self { dir };
        s.ok(&["key", "generate", "--out", "root"]);
        s.ok(&["key", "generate", "--out", "team"]);
        let root_pub = fs::read_to_string(s.path("root.pub")).unwrap();
        let public_key = root_pub
            .lines()
            .find_map(|l| l.strip_prefix("public_key = "))
            .unwrap()
            .to_owned();
        fs::write(
            s.path("agent.toml"),
            format!(
                "[daemon]\nsomething = \"not ours\"\n\n[trust]\nversion = 1\n\n[[trust.roots]]\n\
                 name = \"root\"\npublic_key = {public_key}\ncgroup_prefixes = [\"/jobs.slice\"]\nmax_ttl = \"7d\"\n"
            ),
        )
        .unwrap();
        fs::write(s.path("tool"), b"#!/bin/sh\necho hello\n").unwrap();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("AUTHZ_CONFIG")
            .env("AUTHZ_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit status 1 (`failure`); returns stderr, which
    /// must be one line.
    fn fails(&self, args: &[&str]) -> String {
        self.fails_with(FAILURE, args)
    }

    /// Runs and expects exit status 3 (`refused`: invalid input).
    fn refused(&self, args: &[&str]) -> String {
        self.fails_with(REFUSED, args)
    }

    /// Runs and expects exit status `status`; returns stderr, which must be
    /// one line.
    fn fails_with(&self, status: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(status),
            "{args:?} did not fail: {:?}",
            out
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        err
    }

    /// The root key delegates to the team key; `extra` may override
    /// `--cgroup-prefix` and `--out`.
    fn delegate(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "delegate",
            "--key",
            "root.key",
            "--to",
            "team.pub",
            "--max-ttl",
            "1d",
            "--expires",
            "30d",
            "--config",
            "agent.toml",
        ];
        with_defaults(
            &mut args,
            extra,
            &[
                ("--cgroup-prefix", "/jobs.slice/team-a"),
                ("--out", "team.delegation"),
            ],
        );
        self.run(&args)
    }

    /// Issues a permit through the team delegation; `extra` may override
    /// `--cgroup` and `--ttl`.
    fn issue(&self, out: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "artifact",
            "issue",
            "--key",
            "team.key",
            "--delegation",
            "team.delegation",
            "--binary",
            "tool",
            "--config",
            "agent.toml",
            "--out",
            out,
        ];
        with_defaults(
            &mut args,
            extra,
            &[("--cgroup", "/jobs.slice/team-a/build"), ("--ttl", "12h")],
        );
        self.run(&args)
    }

    fn verify_args<'a>(file: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["artifact", "verify", file, "--config", "agent.toml"];
        args.extend_from_slice(extra);
        args
    }

    fn verify(&self, file: &str, extra: &[&str]) -> Output {
        self.run(&Self::verify_args(file, extra))
    }

    /// `artifact verify` that must fail with one line; returns it.
    fn verify_fails(&self, file: &str, extra: &[&str]) -> String {
        self.refused(&Self::verify_args(file, extra))
    }

    /// A delegation and a permit issued through it: `tool.permit`.
    fn with_permit(self) -> Self {
        assert!(self.delegate(&[]).status.success());
        let out = self.issue(
            "tool.permit",
            &[
                "--descendants",
                "--reason",
                "nightly build",
                "--requested-by",
                "alice",
                "--on-behalf-of",
                "ops",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn key_generate_writes_a_private_key_once() {
    let s = Scene::new("keys");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.path("root.key")), 0o600);
    assert_eq!(
        mode(&s.path("root.pub")) & 0o044,
        0o044,
        "public key readable by all"
    );
    let before = fs::read(s.path("root.key")).unwrap();
    let err = s.fails(&["key", "generate", "--out", "root"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(s.path("root.key")).unwrap(), before);
    let shown = s.ok(&["key", "show", "root.key"]);
    let shown_pub = s.ok(&["key", "show", "root.pub"]);
    let id = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("key id:"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(id(&shown), id(&shown_pub));
}

#[test]
fn delegate_issue_verify_inspect() {
    let s = Scene::new("flow").with_permit();
    let out = s.ok(&[
        "artifact",
        "verify",
        "tool.permit",
        "--config",
        "agent.toml",
    ]);
    assert!(out.starts_with("valid: permit "), "{out}");
    assert!(
        out.contains("cgroup /jobs.slice/team-a/build and its descendants"),
        "{out}"
    );
    let inspect = s.ok(&["artifact", "inspect", "tool.permit"]);
    for needle in [
        "allows:",
        "to run in:",
        "until:",
        "alice, on behalf of ops",
        "nightly build",
        "link 1:",
    ] {
        assert!(inspect.contains(needle), "{needle} missing: {inspect}");
    }
    let inspect = s.ok(&["artifact", "inspect", "team.delegation"]);
    assert!(
        inspect.contains("issuing permits for cgroups /jobs.slice/team-a"),
        "{inspect}"
    );
    // The config can also come from the environment.
    let out = Command::new(BIN)
        .args(["artifact", "verify", "tool.permit"])
        .current_dir(&s.dir)
        .env("AUTHZ_CONFIG", "agent.toml")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn verify_says_why_a_permit_is_not_valid() {
    let s = Scene::new("invalid").with_permit();
    let err = s.verify_fails("tool.permit", &["--at", "2999-01-01T00:00:00Z"]);
    assert!(
        err.contains("tool.permit is not valid: delegation 1 of 1") && err.contains("expired at"),
        "{err}"
    );
    let err = s.verify_fails("tool.permit", &["--at", "2000-01-01T00:00:00Z"]);
    assert!(err.contains("is not valid before"), "{err}");

    let permit = fs::read_to_string(s.path("tool.permit")).unwrap();
    let id = permit
        .lines()
        .find_map(|l| l.strip_prefix("id = "))
        .unwrap()
        .trim_matches('"');
    let err = s.verify_fails("tool.permit", &["--revoked", id]);
    assert!(err.contains(&format!("permit {id} is revoked")), "{err}");

    fs::write(
        s.path("edited.permit"),
        permit.replace("/jobs.slice/team-a/build", "/jobs.slice/team-a/prod"),
    )
    .unwrap();
    let err = String::from_utf8(s.verify("edited.permit", &[]).stderr).unwrap();
    assert!(err.contains("bad signature on permit"), "{err}");

    fs::write(
        s.path("future.permit"),
        permit.replace("version = 1\n", "version = 9\n"),
    )
    .unwrap();
    let err = s.verify_fails("future.permit", &[]);
    assert!(err.contains("unsupported artifact version 9"), "{err}");

    fs::write(
        s.path("extra.permit"),
        permit.replace("[scope]\n", "[scope]\nhost = \"x\"\n"),
    )
    .unwrap();
    let err = s.verify_fails("extra.permit", &[]);
    assert!(
        err.contains("malformed artifact")
            && err.contains("unknown field `host`")
            && err.contains("line"),
        "{err}"
    );

    let other = fs::read_to_string(s.path("agent.toml"))
        .unwrap()
        .replace("version = 1", "version = 2");
    fs::write(s.path("v2.toml"), other).unwrap();
    let err = s.refused(&["artifact", "verify", "tool.permit", "--config", "v2.toml"]);
    assert!(
        err.contains("trust policy version 1; this policy accepts only version 2"),
        "{err}"
    );
}

#[test]
fn issue_and_delegate_refuse_what_would_never_be_valid() {
    let s = Scene::new("refuse");
    let err = stderr(&s.delegate(&["--cgroup-prefix", "/other", "--out", "wide.delegation"]));
    assert!(
        err.contains("widens the authority it received from root key"),
        "{err}"
    );
    assert!(!s.path("wide.delegation").exists());

    let s = s.with_permit();
    let err = stderr(&s.issue("long.permit", &["--ttl", "2d"]));
    assert!(
        err.contains("permit lifetime 2days is over the limit of 1day"),
        "{err}"
    );
    let err = stderr(&s.issue("outside.permit", &["--cgroup", "/jobs.slice/team-b"]));
    assert!(
        err.contains("cgroup /jobs.slice/team-b is outside the scope of delegation 1 of 1"),
        "{err}"
    );
    let err = stderr(&s.issue("tool.permit", &[]));
    assert!(err.contains("tool.permit already exists"), "{err}");

    // Without a config, the policy version must be given.
    let root_issue = |cgroup, extra: &[&'static str]| {
        let mut args = vec![
            "artifact", "issue", "--key", "root.key", "--binary", "tool", "--cgroup", cgroup,
            "--ttl", "1h",
        ];
        args.extend_from_slice(extra);
        s.run(&args)
    };
    let err = stderr(&root_issue("/jobs.slice", &["--out", "x.permit"]));
    assert!(err.contains("--policy-version"), "{err}");
    // A root key issues directly; writing to stdout with `--out -`.
    let out = root_issue("/jobs.slice/x", &["--policy-version", "1", "--out", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.contains("format = \"authz-artifact\""), "{out}");
    fs::write(s.path("root.permit"), out).unwrap();
    s.ok(&[
        "artifact",
        "verify",
        "root.permit",
        "--config",
        "agent.toml",
    ]);
}

#[test]
fn a_permit_under_a_delegation_that_starts_later_is_in_force_only_from_then() {
    let s = Scene::new("latestart");
    let out = s.delegate(&["--not-before", "2999-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Issued "from now" under it: in force from the delegation's start.
    let out = s.issue(
        "later.permit",
        &["--not-before", "2998-12-31T23:00:00Z", "--ttl", "2h"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("in force from 2999-01-01T00:00:00Z until 2999-01-01T01:00:00Z")
            && said.contains("its own window, from 2998-12-31T23:00:00Z until 2999-01-01T01:00:00Z, narrowed by its delegation chain"),
        "{said}"
    );
    let inspect = s.ok(&["artifact", "inspect", "later.permit"]);
    assert!(
        inspect.contains("in force:  2999-01-01T00:00:00Z until 2999-01-01T01:00:00Z"),
        "{inspect}"
    );
    let err = s.verify_fails("later.permit", &["--at", "2998-12-31T23:30:00Z"]);
    assert!(
        err.contains("is not valid before 2999-01-01T00:00:00Z"),
        "{err}"
    );
    let out = s.ok(&[
        "artifact",
        "verify",
        "later.permit",
        "--config",
        "agent.toml",
        "--at",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(
        out.contains("in force:  2999-01-01T00:00:00Z until 2999-01-01T01:00:00Z"),
        "{out}"
    );

    // Over before the delegation starts: refused, nothing written.
    let err = stderr(&s.issue(
        "never.permit",
        &["--not-before", "2998-12-31T22:00:00Z", "--ttl", "1h"],
    ));
    assert!(
        err.contains("the permit would never be valid: its own window, from 2998-12-31T22:00:00Z until 2998-12-31T23:00:00Z, does not overlap its delegation chain's (from 2999-01-01T00:00:00Z until"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!s.path("never.permit").exists());
}

#[test]
fn help_teaches_with_examples() {
    let s = Scene::new("help");
    for cmd in [
        &["key", "generate", "--help"][..],
        &["delegate", "--help"],
        &["artifact", "issue", "--help"],
        &["artifact", "verify", "--help"],
        &["artifact", "inspect", "--help"],
        &["run", "--help"],
        &["check", "--help"],
        &["audit", "verify", "--help"],
        &["audit", "explain", "--help"],
        &["revoke", "--help"],
        &["mode", "--help"],
    ] {
        let help = s.ok(cmd);
        assert!(help.contains("Example: authz-agent"), "{cmd:?}: {help}");
    }
}

#[test]
fn a_team_key_delegates_further_down_a_two_link_chain() {
    let s = Scene::new("chain").with_permit();
    s.ok(&["key", "generate", "--out", "ci"]);
    let sub = |prefix: &str, out: &str| {
        s.run(&[
            "delegate",
            "--key",
            "team.key",
            "--delegation",
            "team.delegation",
            "--to",
            "ci.pub",
            "--cgroup-prefix",
            prefix,
            "--max-ttl",
            "1h",
            "--expires",
            "7d",
            "--config",
            "agent.toml",
            "--out",
            out,
        ])
    };
    let err = stderr(&sub("/jobs.slice/team-b", "wide.delegation"));
    assert!(
        err.contains("widens the authority it received from delegation 1 of 1"),
        "{err}"
    );
    assert!(sub("/jobs.slice/team-a/ci", "ci.delegation")
        .status
        .success());
    let inspect = s.ok(&["artifact", "inspect", "ci.delegation"]);
    assert!(inspect.contains("link 2"), "{inspect}");
    s.ok(&[
        "artifact",
        "issue",
        "--key",
        "ci.key",
        "--delegation",
        "ci.delegation",
        "--binary",
        "tool",
        "--cgroup",
        "/jobs.slice/team-a/ci/job-7",
        "--ttl",
        "30m",
        "--config",
        "agent.toml",
        "--out",
        "ci.permit",
    ]);
    let out = s.ok(&["artifact", "verify", "ci.permit", "--config", "agent.toml"]);
    assert!(out.contains("through 2 delegation links"), "{out}");
    // The team key cannot sign with the CI key's delegation.
    let err = stderr(&s.run(&[
        "artifact",
        "issue",
        "--key",
        "team.key",
        "--delegation",
        "ci.delegation",
        "--binary",
        "tool",
        "--cgroup",
        "/jobs.slice/team-a/ci",
        "--ttl",
        "30m",
        "--policy-version",
        "1",
        "--out",
        "bad.permit",
    ]));
    assert!(
        err.contains("is not the key the delegation delegates to"),
        "{err}"
    );
}

/// The Scene's config, made one the agent itself accepts (its own parser
/// refuses the unknown `[daemon]` table), with `extra` tables added.
fn agent_config(s: &Scene, name: &str, extra: &str) {
    let text = fs::read_to_string(s.path("agent.toml"))
        .unwrap()
        .replace("[daemon]\nsomething = \"not ours\"\n", extra);
    fs::write(s.path(name), text).unwrap();
}

/// `[log] level` in the config a command reads sets its log filter, below
/// `--log` and `AUTHZ_LOG`.
#[test]
fn the_configs_log_level_counts_after_the_flag_and_the_environment() {
    let s = Scene::new("loglevel");
    agent_config(&s, "quiet.toml", "[log]\nlevel = \"error\"\n");
    agent_config(&s, "plain.toml", "");
    // A secret key others can read: a warning each time it is read.
    fs::set_permissions(s.path("root.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let warns = |flag: Option<&str>, env: Option<&str>, config: &str| -> bool {
        let mut cmd = Command::new(BIN);
        if let Some(filter) = flag {
            cmd.args(["--log", filter]);
        }
        cmd.args(["delegate", "--key", "root.key", "--to", "team.pub"])
            .args(["--cgroup-prefix", "/jobs.slice/a", "--max-ttl", "1d"])
            .args(["--expires", "30d", "--config", config, "--out", "-"])
            .current_dir(&s.dir)
            .env_remove("AUTHZ_CONFIG")
            .env_remove("AUTHZ_LOG");
        if let Some(filter) = env {
            cmd.env("AUTHZ_LOG", filter);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out).contains("readable by other users")
    };
    assert!(warns(None, None, "plain.toml"), "default: info");
    assert!(!warns(None, None, "quiet.toml"), "the config's level");
    assert!(
        warns(None, Some("warn"), "quiet.toml"),
        "AUTHZ_LOG over the config"
    );
    assert!(
        !warns(Some("error"), Some("warn"), "quiet.toml"),
        "--log over AUTHZ_LOG"
    );
    assert!(
        warns(Some("warn"), None, "quiet.toml"),
        "--log over the config"
    );
}

/// Without paths, `audit verify` and `audit explain` read the agent's own log
/// and key: the config's `[audit] log` and `state_dir/audit.pub`.
#[test]
fn audit_commands_take_the_log_and_key_from_the_config() {
    use authz_agent::audit::{writer, AuditConfig, AuditLog};
    let s = Scene::new("auditconfig");
    let state = s.path("state");
    let log = s.path("log/decisions.jsonl");
    fs::create_dir_all(&state).unwrap();
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    let key = writer::load_or_create_key(&state).unwrap();
    let cfg = AuditConfig {
        path: log.clone(),
        rotate_bytes: 1 << 30,
        checkpoint_every: std::time::Duration::from_secs(3600),
        host: "test-host".into(),
    };
    let mut audit = AuditLog::open(cfg, key).unwrap();
    audit
        .append("admin", std::time::SystemTime::now(), Default::default())
        .unwrap();
    audit.checkpoint("test").unwrap();
    drop(audit);
    agent_config(
        &s,
        "audit.toml",
        &format!(
            "[agent]\nstate_dir = \"{}\"\n\n[audit]\nlog = \"{}\"\n\n",
            state.display(),
            log.display()
        ),
    );

    let out = s.ok(&["audit", "verify", "--config", "audit.toml"]);
    assert!(
        out.contains("intact: 2 records") && out.contains("1 signatures verified"),
        "{out}"
    );
    let out = s.ok(&["audit", "explain", "0", "--config", "audit.toml"]);
    assert!(out.starts_with("record 0 ("), "{out}");
    // What is given explicitly wins over the config.
    let out = s.run(&[
        "audit",
        "verify",
        "--config",
        "audit.toml",
        "--key",
        "team.pub",
    ]);
    assert_eq!(out.status.code(), Some(LOG_BROKEN), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("BROKEN"),
        "{out:?}"
    );
    let err = s.fails(&[
        "audit",
        "explain",
        "0",
        "--config",
        "audit.toml",
        "--log-file",
        "none.jsonl",
    ]);
    assert!(err.contains("no decision log at none.jsonl"), "{err}");
}

#[test]
fn revocation_lists_are_signed_by_a_root_or_a_delegate_and_checked_against_the_config() {
    let s = Scene::new("revocations").with_permit();
    let permit = fs::read_to_string(s.path("tool.permit")).unwrap();
    let id = permit
        .lines()
        .find_map(|l| l.strip_prefix("id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let list = |key: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "revocations",
            "issue",
            "--key",
            key,
            "--serial",
            "3",
            "--reason",
            "key leaked",
            "--config",
            "agent.toml",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        args.push(&id);
        s.run(&args)
    };
    let out = list("root.key", "root.revocations", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(s.path("root.revocations")).unwrap();
    for needle in [
        "format = \"authz-revocations\"",
        "serial = 3",
        &id,
        "key leaked",
    ] {
        assert!(text.contains(needle), "{needle} missing: {text}");
    }
    // Never overwrites.
    assert!(!list("root.key", "root.revocations", &[]).status.success());

    // The team key alone is no authority; with its delegation it is.
    let err = {
        let out = list("team.key", "team.revocations", &[]);
        assert_eq!(out.status.code(), Some(1));
        stderr(&out)
    };
    assert!(err.contains("not a trusted root key"), "{err}");
    assert!(!s.path("team.revocations").exists());
    let out = list(
        "team.key",
        "team.revocations",
        &["--delegation", "team.delegation"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(s.path("team.revocations")).unwrap();
    assert!(text.contains("[[delegation]]"), "{text}");
    // The root key does not hold the team's delegation.
    let out = list(
        "root.key",
        "x.revocations",
        &["--delegation", "team.delegation"],
    );
    assert_eq!(out.status.code(), Some(REFUSED), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not the key the delegation delegates to"),
        "{}",
        stderr(&out)
    );
}
