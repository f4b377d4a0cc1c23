//! `authz-agent config check [--config PATH]`: validates the agent's config
//! (its settings and the `[trust]` policy in it) and says, in plain words,
//! what an agent started with it would do. Nothing is loaded or changed.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde::Serialize;

use super::{exit::Exit, output::Output};
use crate::{config::Config, control::access::Access, defaults, store::Store};

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a config and its trust policy; print what the agent would do
    ///
    /// Parses every key (unknown keys are refused with their line), checks
    /// the trust policy, the groups and the paths it names, and prints the
    /// mode, scope, control-socket roles, decision log, metrics textfile and
    /// trusted root keys an agent started with it would use. Exit status 0
    /// when it is valid (warnings are printed), 3 when it is not.
    ///
    /// Example: authz-agent config check --config /etc/authz/agent.toml
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The config to check.
    #[arg(long, value_name = "FILE", env = "AUTHZ_CONFIG", default_value = defaults::CONFIG)]
    pub config: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ConfigArgs {
    pub(super) fn config(&self) -> Option<&Path> {
        match &self.command {
            ConfigCommand::Check(a) => Some(&a.config),
        }
    }

    pub(super) fn json(&self) -> bool {
        match &self.command {
            ConfigCommand::Check(a) => a.json,
        }
    }
}

/// A trusted root key, as `config check` shows it.
#[derive(Debug, Serialize)]
pub struct Root {
    pub name: Option<String>,
    pub key_id: String,
    pub cgroup_prefixes: Vec<String>,
    pub max_ttl: String,
}

/// What an agent started with the config would do.
#[derive(Debug, Serialize)]
pub struct ConfigReport {
    pub config: PathBuf,
    /// No problem found (warnings allowed).
    pub valid: bool,
    /// What keeps an agent from starting with it.
    pub problems: Vec<String>,
    /// What it would start with, but probably not as meant.
    pub warnings: Vec<String>,
    pub mode: String,
    /// Where the mode comes from: the config, or a persisted `authz-agent mode`.
    pub mode_source: String,
    pub enforce_cgroups: Vec<String>,
    pub libraries: String,
    pub exec_memory: String,
    pub trusted_filesystems: Vec<String>,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub admin_group: Option<String>,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
    pub audit_log: PathBuf,
    pub metrics_textfile: Option<PathBuf>,
    pub metrics_interval: String,
    pub policy_version: u32,
    pub min_policy_version: u32,
    pub max_chain_length: usize,
    pub retired_keys: usize,
    pub roots: Vec<Root>,
}

/// Runs `authz-agent config ...`.
pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Check(a) => check(&a),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let report = report(&config);
    Output::json_if(args.json).print(&report, render)?;
    if report.valid {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "authz-agent: error: {} cannot start an agent: {}",
            args.config.display(),
            report.problems.join("; ")
        );
        Ok(Exit::Refused.exit_code())
    }
}

fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Checks what parsing cannot and describes the rest.
pub fn report(config: &Config) -> ConfigReport {
    let a = &config.agent;
    let t = &config.trust;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if let Err(e) = Access::new(a.socket_group.as_deref(), a.admin_group.as_deref()) {
        problems.push(e.to_string());
    }
    if t.roots.is_empty() {
        warnings.push(
            "[trust] lists no root key: no permit can verify, so every exec in scope is refused in enforce mode".into(),
        );
    }
    if !a.cgroup_root.join("cgroup.controllers").exists() {
        warnings.push(format!(
            "agent.cgroup_root {} is not a cgroup v2 mount here",
            a.cgroup_root.display()
        ));
    }
    for cg in &a.enforce_cgroups {
        if !a.cgroup_root.join(cg.trim_start_matches('/')).is_dir() {
            warnings.push(format!(
                "enforced cgroup {cg} does not exist yet (it is enforced the moment it does)"
            ));
        }
    }
    if let Some(inbox) = &a.inbox_dir {
        match std::fs::metadata(inbox) {
            Ok(m) if m.is_dir() => {
                use std::os::unix::fs::PermissionsExt as _;
                if m.permissions().mode() & 0o022 != 0 {
                    warnings.push(format!(
                        "agent.inbox_dir {} is writable by others than its owner: they cannot make \
                         anything unsigned run, but they can fill it",
                        inbox.display()
                    ));
                }
            }
            Ok(_) => problems.push(format!(
                "agent.inbox_dir {} is not a directory",
                inbox.display()
            )),
            Err(_) => warnings.push(format!(
                "agent.inbox_dir {} does not exist (the agent takes it in as soon as it does)",
                inbox.display()
            )),
        }
    }
    let mut dirs = vec![("audit.log", config.audit.log.parent())];
    if let Some(textfile) = &config.metrics.textfile {
        dirs.push(("metrics.textfile", textfile.parent()));
    }
    for (key, dir) in dirs {
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            warnings.push(format!(
                "{key}: directory {} does not exist{}",
                dir.display(),
                if key == "audit.log" {
                    " (the agent creates it)"
                } else {
                    ": the textfile cannot be written until it does"
                }
            ));
        }
    }
    // A mode set at runtime (`authz-agent mode`) persists and wins.
    let persisted = Store::at(&a.state_dir).mode().ok().flatten();
    let (mode, mode_source) = match persisted {
        Some(m) => (
            m,
            format!(
                "persisted in {} by `authz-agent mode` (wins over the config's {})",
                a.state_dir.display(),
                a.mode
            ),
        ),
        None => (a.mode, "the config".into()),
    };
    let exec_memory = match a.exec_memory {
        crate::enforcer::Mode::Off => "allow",
        crate::enforcer::Mode::Audit => "audit",
        crate::enforcer::Mode::Enforce => "deny",
    };
    let fs_name = |magic: &u64| {
        authz_common::FILESYSTEMS
            .iter()
            .find(|f| f.magic == *magic)
            .map_or_else(|| format!("{magic:#x}"), |f| f.name.to_owned())
    };
    ConfigReport {
        config: config.path.clone(),
        valid: problems.is_empty(),
        problems,
        warnings,
        mode: mode.to_string(),
        mode_source,
        enforce_cgroups: a.enforce_cgroups.clone(),
        libraries: a.libraries.to_string(),
        exec_memory: exec_memory.into(),
        trusted_filesystems: a.trusted_filesystems.iter().map(fs_name).collect(),
        socket: a.socket.clone(),
        socket_group: a.socket_group.clone(),
        admin_group: a.admin_group.clone(),
        state_dir: a.state_dir.clone(),
        pin_dir: a.pin_dir.clone(),
        audit_log: config.audit.log.clone(),
        metrics_textfile: config.metrics.textfile.clone(),
        metrics_interval: duration(config.metrics.interval),
        policy_version: t.version,
        min_policy_version: t.min_version,
        max_chain_length: t.max_chain_length,
        retired_keys: t.retired.len(),
        roots: t
            .roots
            .iter()
            .map(|r| Root {
                name: r.name.clone(),
                key_id: r.key_id.to_string(),
                cgroup_prefixes: r
                    .cgroup_prefixes
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                max_ttl: crate::vocab::time::format_duration(r.max_ttl_seconds),
            })
            .collect(),
    }
}

fn render(r: &ConfigReport) -> String {
    let mut out = String::new();
    let verdict = if r.valid { "valid" } else { "NOT VALID" };
    let _ = writeln!(out, "{}: {verdict}", r.config.display());
    for p in &r.problems {
        let _ = writeln!(out, "problem:     {p}");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning:     {w}");
    }
    let _ = writeln!(out, "an agent started with it would:");
    let scope = if r.enforce_cgroups.is_empty() {
        "every process on the host".to_owned()
    } else {
        format!("processes in {}", r.enforce_cgroups.join(", "))
    };
    let _ = writeln!(
        out,
        "  decide execs in mode {} ({}) for {scope}",
        r.mode, r.mode_source
    );
    let _ = writeln!(
        out,
        "  check files mapped executable: {}; executable memory: {}",
        r.libraries, r.exec_memory
    );
    if !r.trusted_filesystems.is_empty() {
        let _ = writeln!(
            out,
            "  also trust execs from: {}",
            r.trusted_filesystems.join(", ")
        );
    }
    let group = |g: &Option<String>| g.clone().unwrap_or_else(|| "none (root only)".into());
    let _ = writeln!(
        out,
        "  listen on {} (submit, list, status, report, why: group {}; mode, revoke: group {})",
        r.socket.display(),
        group(&r.socket_group),
        group(&r.admin_group)
    );
    let _ = writeln!(
        out,
        "  keep permits in {}, pin under {}, log decisions to {}",
        r.state_dir.display(),
        r.pin_dir.display(),
        r.audit_log.display()
    );
    match &r.metrics_textfile {
        Some(f) => {
            let _ = writeln!(
                out,
                "  rewrite the metrics textfile {} every {}",
                f.display(),
                r.metrics_interval
            );
        }
        None => {
            let _ = writeln!(out, "  write no metrics textfile");
        }
    }
    let _ = writeln!(
        out,
        "  accept artifacts of policy version {}..={} with at most {} delegation link(s); {} retired key(s)",
        r.min_policy_version, r.policy_version, r.max_chain_length, r.retired_keys
    );
    for root in &r.roots {
        let _ = writeln!(
            out,
            "  trust root {} ({}) for {} up to {}",
            root.name.as_deref().unwrap_or("-"),
            root.key_id,
            root.cgroup_prefixes.join(", "),
            root.max_ttl
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_the_agent_would_do_and_warns() {
        let config = Config::parse(
            Path::new("/etc/authz/agent.toml"),
            "[agent]\nmode = \"enforce\"\nenforce_cgroups = [\"/no-such-cgroup.slice\"]\nstate_dir = \"/nonexistent/authz\"\n\
             [metrics]\ntextfile = \"/nonexistent/authz.prom\"\n[trust]\nversion = 2\n",
        )
        .unwrap();
        let r = report(&config);
        assert!(r.valid, "{:?}", r.problems);
        assert_eq!(r.mode, "enforce");
        assert_eq!(r.mode_source, "the config");
        assert!(
            r.warnings.iter().any(|w| w.contains("no root key")),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("/no-such-cgroup.slice")),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings.iter().any(|w| w.contains("metrics.textfile")),
            "{:?}",
            r.warnings
        );
        let text = render(&r);
        assert!(text.contains("decide execs in mode enforce"), "{text}");
        assert!(
            text.contains("rewrite the metrics textfile /nonexistent/authz.prom every 15s"),
            "{text}"
        );
    }

    #[test]
    fn a_group_that_does_not_exist_is_a_problem() {
        let config = Config::parse(
            Path::new("agent.toml"),
            "[agent]\nsocket_group = \"no-such-group-authz-test\"\n[trust]\nversion = 1\n",
        )
        .unwrap();
        let r = report(&config);
        assert!(!r.valid);
        assert!(
            r.problems[0].contains("no-such-group-authz-test"),
            "{:?}",
            r.problems
        );
    }
}
