//! The command line of `authz-agent`: one module per command family.
//!
//! - [`run`], [`check`]: the daemon, and whether this host can enforce;
//! - [`control`]: `submit`, `list`, `revoke`, `status`, `mode`, `report`
//!   (requests to the running agent) and `unload`;
//! - [`audit`]: `audit verify`, `audit explain`;
//! - [`key`], [`delegate`], [`artifact`]: keys, delegations and permits;
//!   [`revocations`]: signed revocation lists;
//!   [`sign`] is what `delegate` and `artifact issue` share.
//!
//! - [`why`]: would a binary run in a cgroup, and why (asked of the agent);
//! - [`config_check`]: validate a config and say what it would do;
//! - [`generate`]: shell completions and man pages from this definition.
//!
//! [`output`] prints every command's `--json`. Default paths come from
//! [`crate::defaults`]. Each handler returns `anyhow::Result<ExitCode>`: the
//! binary prints the error chain on one line (`{:#}`) and exits with the
//! status [`exit`] gives the error.
pub mod artifact;
pub mod audit;
pub mod check;
pub mod config_check;
pub mod control;
pub mod delegate;
pub mod exit;
pub mod generate;
pub mod key;
pub mod lockdown;
pub mod output;
pub mod revocations;
pub mod run;
mod sign;
pub mod why;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::{config::Config, defaults};

/// Fail-closed exec authorization for Linux.
///
/// A BPF LSM program refuses every execve whose binary (by SHA-256, computed in
/// the kernel) has no valid signed permit for the caller's cgroup. This binary is
/// both the daemon that loads it and the tool that talks to it.
#[derive(Debug, Parser)]
#[command(
    name = "authz-agent",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_long_help = exit::help_table()
)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info`, `authz_agent=debug`.
    /// Default: $AUTHZ_LOG, else the `[log] level` of the config the command
    /// reads, else `info`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the enforcement daemon (needs root and a kernel with BPF LSM).
    ///
    /// Loads the BPF LSM program (re-adopting the state a previous run pinned),
    /// re-verifies every stored artifact into kernel permits, proves with a
    /// self-test that the hook refuses an unauthorized exec, then serves the
    /// control socket until SIGTERM. Stopping leaves enforcement in place; see
    /// `unload`. On a kernel that cannot run BPF LSM programs it exits non-zero
    /// and says what is missing.
    ///
    /// Example: authz-agent run --config /etc/authz/agent.toml
    Run(run::RunArgs),
    /// Check that this host can enforce: kernel support, program load, self-test.
    ///
    /// Loads and attaches the program in `off` mode, runs the self-test (a probe
    /// exec that must be refused, whose in-kernel SHA-256 must match), prints a
    /// report and detaches. Exit status 0 means authz can enforce here. With
    /// the agent's config it also warns of delegated cgroups: cgroups on the
    /// way to an enforced or permitted one that a non-root user can write, and
    /// so move processes out of enforcement or into a permit.
    ///
    /// Example: authz-agent check --config /etc/authz/agent.toml
    Check(check::CheckArgs),
    /// Submit signed artifacts to the running agent (verified, stored, enforced).
    ///
    /// A signed revocation list (from `authz-agent revocations issue`) is
    /// submitted the same way: the agent applies it when its serial is above
    /// the last list applied from its signer.
    ///
    /// Example: authz-agent submit build-tool.permit.toml
    Submit(control::SubmitArgs),
    /// List accepted artifacts: live, waiting for their cgroup, or scheduled.
    ///
    /// Example: authz-agent list --json
    List(control::QueryArgs),
    /// Revoke an artifact or a delegation by id, or everything (`--all`).
    ///
    /// A revoked id can never be submitted again. `--all` is incident response:
    /// every accepted artifact is revoked and the kernel's permit map flushed at
    /// once, so every exec in scope is refused. Needs root or membership of the
    /// agent's `admin_group`.
    ///
    /// Example: authz-agent revoke 3f2a... --reason "key leaked"
    Revoke(control::RevokeArgs),
    /// Show the agent's mode, scope, permits, kernel counters and kernel state.
    ///
    /// `--format openmetrics` prints every counter, gauge and histogram the
    /// agent has instead (decisions by outcome and reason, digest cache hits,
    /// events dropped, permits by state, submit latency, event ring fill), for
    /// a scraper; the config's `[metrics] textfile` writes the same for
    /// node_exporter.
    ///
    /// Example: authz-agent status --format openmetrics
    Status(control::StatusArgs),
    /// Change the enforcement mode at runtime (persists across restarts).
    ///
    /// Roll out safely: `mode audit`, run the workload, read `report`, issue
    /// the missing permits, then `mode enforce`. Needs root or membership of
    /// the agent's `admin_group`.
    ///
    /// Example: authz-agent mode enforce
    Mode(control::ModeArgs),
    /// Execs refused (or, in audit mode, that would have been) since start.
    ///
    /// With `--since`, read from the decision log instead, so the report spans
    /// agent restarts.
    ///
    /// Example: authz-agent report --since 24h
    Report(control::ReportArgs),
    /// Would this binary run, and why: its digest, the permit that allows it
    /// and until when, or the exact reason it would be refused.
    ///
    /// Asks the running agent, so the answer is its live state: mode, scope,
    /// filesystem policy, the permits it holds, and the ones revoked or
    /// expired since it started. The cgroup is the one named, the one of
    /// `--pid`, or this shell's. Exit status 0 when it would run, 3 when it
    /// would be refused (in audit mode: would be refused, and runs).
    ///
    /// Example: authz-agent why /usr/bin/make --cgroup /jobs.slice/build
    Why(why::WhyArgs),
    /// The agent's configuration: `config check` validates it.
    Config(config_check::ConfigArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// Example: authz-agent completions bash > /usr/share/bash-completion/completions/authz-agent
    Completions(generate::CompletionsArgs),
    /// Write the man pages (authz-agent.8 and one per command) into a directory.
    ///
    /// Example: authz-agent man --out /usr/share/man/man8
    Man(generate::ManArgs),
    /// Remove the pinned programs and maps: authz stops enforcing on this host.
    ///
    /// Refuses while an agent is running. This is the only way to turn
    /// enforcement off for good; `mode off` is the runtime switch. A local
    /// action on the bpffs pins, not a control-socket request: it needs root
    /// on the host, and `admin_group` membership does not grant it.
    ///
    /// Example: systemctl stop authz-agent && authz-agent unload
    Unload(control::UnloadArgs),
    /// The decision log: prove it intact (`verify`), explain a decision (`explain`).
    Audit(audit::AuditArgs),
    Key(key::KeyArgs),
    Delegate(delegate::DelegateArgs),
    Artifact(artifact::ArtifactArgs),
    Lockdown(lockdown::LockdownArgs),
    Revocations(revocations::RevocationsArgs),
}

impl Command {
    /// The agent config this command reads, if it reads one: the one named,
    /// or the default one where the command falls back to it.
    pub fn config_file(&self) -> Option<PathBuf> {
        match self {
            Command::Run(a) => Some(a.config.clone()),
            Command::Check(a) => readable_config(a.config.as_deref()),
            Command::Audit(a) => readable_config(a.config()),
            Command::Delegate(a) => a.policy.config.clone(),
            Command::Artifact(a) => a.config().map(Path::to_owned),
            Command::Revocations(a) => a.config().map(Path::to_owned),
            Command::Config(a) => readable_config(a.config()),
            Command::Submit(_)
            | Command::List(_)
            | Command::Revoke(_)
            | Command::Status(_)
            | Command::Mode(_)
            | Command::Report(_)
            | Command::Why(_)
            | Command::Unload(_)
            | Command::Key(_)
            | Command::Lockdown(_)
            | Command::Completions(_)
            | Command::Man(_) => None,
        }
    }

    /// Whether the command prints JSON (`--json`, `--format json`): a
    /// failure is then also reported as JSON on standard output.
    pub fn wants_json(&self) -> bool {
        match self {
            Command::Run(_) | Command::Completions(_) | Command::Man(_) => false,
            Command::Check(a) => a.json,
            Command::Submit(a) => a.socket.json,
            Command::List(a) => a.socket.json,
            Command::Revoke(a) => a.socket.json,
            Command::Status(a) => a.socket.json || a.format == control::StatusFormat::Json,
            Command::Mode(a) => a.socket.json,
            Command::Report(a) => a.socket.json,
            Command::Why(a) => a.socket.json,
            Command::Unload(a) => a.json,
            Command::Audit(a) => a.json(),
            Command::Key(a) => a.json(),
            Command::Delegate(a) => a.json,
            Command::Artifact(a) => a.json(),
            Command::Config(a) => a.json(),
            Command::Lockdown(a) => a.json(),
            Command::Revocations(a) => a.json(),
        }
    }
}

impl Cli {
    /// The log filter this invocation uses: see [`log_filter`]. The config's
    /// `[log] level` counts only when the config can be read; a config that
    /// cannot is reported by the command itself.
    pub fn log_filter(&self) -> String {
        let env = std::env::var("AUTHZ_LOG").ok();
        let config = self
            .command
            .config_file()
            .and_then(|path| Config::load(&path).ok())
            .map(|config| config.log.level);
        log_filter(self.log.as_deref(), env.as_deref(), config.as_deref()).to_owned()
    }

    /// Whether `--log` or `AUTHZ_LOG` chose the filter (so a config's
    /// `[log] level`, also one applied by a reload, does not).
    pub fn log_filter_overridden(&self) -> bool {
        let env = std::env::var("AUTHZ_LOG").ok();
        let given = [self.log.as_deref(), env.as_deref()]
            .into_iter()
            .flatten()
            .any(|s| !s.trim().is_empty());
        given
    }
}

/// The log filter, by precedence: `--log`, then `AUTHZ_LOG`, then the
/// config's `[log] level`, then [`defaults::LOG_LEVEL`]. An empty value counts
/// as not given.
pub fn log_filter<'a>(
    flag: Option<&'a str>,
    env: Option<&'a str>,
    config: Option<&'a str>,
) -> &'a str {
    [flag, env, config]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .unwrap_or(defaults::LOG_LEVEL)
}

/// The config a command that can do without one reads: the one named, else
/// the default one if it exists.
pub(crate) fn readable_config(named: Option<&Path>) -> Option<PathBuf> {
    match named {
        Some(path) => Some(path.to_owned()),
        None => Some(PathBuf::from(defaults::CONFIG)).filter(|p| p.exists()),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Global options and subcommand options must not share an id: clap only
    /// notices when the command is parsed, so parse every subcommand once.
    #[test]
    fn every_subcommand_parses() {
        for argv in [
            &["authz-agent", "audit", "explain", "1", "--log-file", "/x"][..],
            &["authz-agent", "audit", "verify", "/x", "--key", "/k"],
            &["authz-agent", "--log", "debug", "status", "--socket", "/s"],
            &["authz-agent", "revoke", "--all"],
            &["authz-agent", "mode", "enforce"],
            &["authz-agent", "submit", "a", "b"],
            &["authz-agent", "run", "--config", "/c"],
            &["authz-agent", "check", "--json"],
            &["authz-agent", "check", "--config", "/c"],
            &["authz-agent", "unload"],
            &["authz-agent", "report", "--json"],
            &["authz-agent", "list"],
            &["authz-agent", "unload", "--statement", "u.toml"],
            &["authz-agent", "lockdown", "unlock", "--statement", "u.toml"],
            &[
                "authz-agent",
                "lockdown",
                "adopt",
                "--statement",
                "a.toml",
                "--json",
            ],
            &[
                "authz-agent",
                "lockdown",
                "statement",
                "--key",
                "k",
                "--action",
                "adopt-agent",
                "--binary",
                "b",
                "--library",
                "l",
                "-o",
                "-",
            ],
            &[
                "authz-agent",
                "revocations",
                "issue",
                "--key",
                "k",
                "--serial",
                "2",
                "--out",
                "-",
                "00000000000000000000000000000001",
            ],
            &["authz-agent", "submit", "-", "--json"],
            &["authz-agent", "status", "--format", "openmetrics"],
            &["authz-agent", "report", "--since", "2026-01-01T00:00:00Z"],
            &["authz-agent", "why", "/bin/sh", "--cgroup", "/jobs"],
            &["authz-agent", "why", "/bin/sh", "--pid", "1", "--json"],
            &["authz-agent", "config", "check", "--config", "/c", "--json"],
            &["authz-agent", "completions", "bash"],
            &["authz-agent", "man", "--out", "/tmp/man"],
            &["authz-agent", "unload", "--json"],
            &["authz-agent", "key", "show", "k.pub", "--json"],
            &["authz-agent", "artifact", "inspect", "p", "--json"],
            &["authz-agent", "audit", "verify", "--json"],
            &[
                "authz-agent",
                "artifact",
                "issue",
                "--key",
                "k",
                "--binary",
                "/b",
                "--cgroup",
                "/c",
                "--ttl",
                "1h",
                "--policy-version",
                "1",
                "--submit",
                "--socket",
                "/s",
            ],
        ] {
            Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
    }

    #[test]
    fn why_takes_a_cgroup_or_a_pid_not_both() {
        assert!(Cli::try_parse_from([
            "authz-agent",
            "why",
            "/bin/sh",
            "--cgroup",
            "/a",
            "--pid",
            "1"
        ])
        .is_err());
    }

    /// Every command that prints a result can print it as JSON.
    #[test]
    fn every_command_takes_json() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.has_subcommands() {
                for sub in cmd.get_subcommands() {
                    walk(sub, &path, missing);
                }
                return;
            }
            let exempt = ["run", "completions", "man"].contains(&cmd.get_name());
            if !exempt && !cmd.get_arguments().any(|a| a.get_id() == "json") {
                missing.push(path);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no --json: {missing:?}");
    }

    #[test]
    fn the_help_lists_the_exit_statuses() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("Exit status:") && help.contains("5  permission-denied"),
            "{help}"
        );
    }

    #[test]
    fn the_log_filter_is_the_flag_then_the_environment_then_the_config_then_info() {
        assert_eq!(
            log_filter(Some("debug"), Some("warn"), Some("error")),
            "debug"
        );
        assert_eq!(log_filter(None, Some("warn"), Some("error")), "warn");
        assert_eq!(log_filter(None, None, Some("error")), "error");
        assert_eq!(log_filter(None, None, None), "info");
        assert_eq!(log_filter(Some("debug"), None, Some("error")), "debug");
        // An empty value is no value.
        assert_eq!(log_filter(Some(""), Some(" "), Some("error")), "error");
        assert_eq!(log_filter(None, Some(""), None), "info");
    }

    #[test]
    fn commands_name_the_config_they_read() {
        let config = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().command.config_file();
        assert_eq!(
            config(&["authz-agent", "run", "--config", "/c"]),
            Some("/c".into())
        );
        assert_eq!(
            config(&["authz-agent", "run"]),
            Some(defaults::CONFIG.into())
        );
        assert_eq!(
            config(&["authz-agent", "audit", "verify", "--config", "/a"]),
            Some("/a".into())
        );
        assert_eq!(
            config(&["authz-agent", "artifact", "verify", "p", "--config", "/v"]),
            Some("/v".into())
        );
        assert_eq!(config(&["authz-agent", "status"]), None);
        assert_eq!(config(&["authz-agent", "key", "show", "k.pub"]), None);
    }
}
