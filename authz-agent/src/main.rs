//! `authz-agent`: the authz daemon and its command line.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use authz_agent::{
    control::cli as control_cli,
    enforcer::{self, Enforcer, LoadOptions, Mode},
};
use clap::{Parser, Subcommand};

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
    max_term_width = 100
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info`, `authz_agent=debug`.
    #[arg(long, global = true, env = "AUTHZ_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    Run(RunArgs),
    /// Check that this host can enforce: kernel support, program load, self-test.
    ///
    /// Loads and attaches the program in `off` mode, runs the self-test (a probe
    /// exec that must be refused, whose in-kernel SHA-256 must match), prints a
    /// report and detaches. Exit status 0 means authz can enforce here. With
    /// the agent's config it also warns of delegated cgroups: cgroups on the
    /// way to an enforced or permitted one that a non-root user can write, and
    /// so move processes out of enforcement or into a permit.
    Check(CheckArgs),
    /// Submit signed artifacts to the running agent (verified, stored, enforced).
    ///
    /// Example: authz-agent submit build-tool.permit.toml
    Submit(control_cli::SubmitArgs),
    /// List accepted artifacts: live, waiting for their cgroup, or scheduled.
    List(control_cli::QueryArgs),
    /// Revoke an artifact or a delegation by id, or everything (`--all`).
    ///
    /// A revoked id can never be submitted again. `--all` is incident response:
    /// every accepted artifact is revoked and the kernel's permit map flushed at
    /// once, so every exec in scope is refused. Needs root or membership of the
    /// agent's `admin_group`.
    ///
    /// Example: authz-agent revoke 3f2a... --reason "key leaked"
    Revoke(control_cli::RevokeArgs),
    /// Show the agent's mode, scope, permits, kernel counters and kernel state.
    Status(control_cli::QueryArgs),
    /// Change the enforcement mode at runtime (persists across restarts).
    ///
    /// Roll out safely: `mode audit`, run the workload, read `report`, issue
    /// the missing permits, then `mode enforce`. Needs root or membership of
    /// the agent's `admin_group`.
    Mode(control_cli::ModeArgs),
    /// Execs refused (or, in audit mode, that would have been) since start.
    Report(control_cli::QueryArgs),
    /// Remove the pinned programs and maps: authz stops enforcing on this host.
    ///
    /// Refuses while an agent is running. This is the only way to turn
    /// enforcement off for good; `mode off` is the runtime switch. A local
    /// action on the bpffs pins, not a control-socket request: it needs root
    /// on the host, and `admin_group` membership does not grant it.
    Unload(control_cli::UnloadArgs),
    /// The decision log: prove it intact (`verify`), explain a decision (`explain`).
    Audit(authz_agent::audit::cli::AuditArgs),
    Key(authz_agent::cli::KeyArgs),
    Delegate(authz_agent::cli::DelegateArgs),
    Artifact(authz_agent::cli::ArtifactArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The agent's configuration (trust policy, mode, scope, paths); every key
    /// is documented in the example config shipped as packaging/agent.toml.
    #[arg(long, default_value = authz_agent::config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Where cgroup v2 is mounted (the config's `cgroup_root` when one is read).
    #[arg(long, default_value = authz_agent::cgroup::CGROUP_ROOT)]
    cgroup_root: PathBuf,
    /// The agent's configuration, to name delegated cgroups: those on the way
    /// to its enforced subtrees and to the cgroups its stored permits name
    /// that a non-root user can write. Default: /etc/authz/agent.toml if it
    /// exists.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A CLI piped into `head` should stop quietly, not panic on EPIPE.
        // (The daemon keeps SIGPIPE ignored: a client hanging up must never kill it.)
        // SAFETY: restoring the default disposition of a signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Run(args) => authz_agent::daemon::run(&args.config).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => check(args),
        Command::Submit(args) => control_cli::submit(args),
        Command::List(args) => control_cli::list(args),
        Command::Revoke(args) => control_cli::revoke(args),
        Command::Status(args) => control_cli::status(args),
        Command::Mode(args) => control_cli::set_mode(args),
        Command::Report(args) => control_cli::report(args),
        Command::Unload(args) => control_cli::unload(args),
        Command::Audit(args) => authz_agent::audit::cli::run(args),
        Command::Key(args) => authz_agent::cli::key(args),
        Command::Delegate(args) => authz_agent::cli::delegate(args),
        Command::Artifact(args) => authz_agent::cli::artifact(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("authz-agent: error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// "outer: inner: innermost", each cause once.
fn chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if parts.last().is_none_or(|last| !last.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions {
        mode: Mode::Off,
        selftest: false,
        cgroup_root: args.cgroup_root.clone(),
        ..LoadOptions::default()
    };
    let mut enforcer = Enforcer::load(&opts).context("authz cannot enforce on this host")?;
    let report = enforcer::selftest::run(&mut enforcer, &args.cgroup_root)
        .context("authz cannot enforce on this host")?;
    let kernel = enforcer.kernel().clone();
    let delegated = delegated_cgroups(&args)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "kernel": kernel,
                "selftest": report,
                "config": delegated.as_ref().map(|(config, _)| config),
                "delegated_cgroups": delegated.as_ref().map(|(_, findings)| findings),
            })
        );
    } else {
        println!("kernel:      {}", kernel.release);
        println!("active LSMs: {}", kernel.active_lsms.join(","));
        println!("BPF LSM:     program loaded and attached to bprm_check_security");
        println!(
            "self-test:   probe exec refused with EPERM; in-kernel SHA-256 {} matches",
            report.digest
        );
        match &delegated {
            None => println!("delegation:  not checked (no config; pass --config)"),
            Some((config, findings)) if findings.is_empty() => println!(
                "delegation:  no cgroup on the way to what {} enforces or permits is writable by a non-root user",
                config.display()
            ),
            Some((_, findings)) => {
                for f in findings {
                    println!("warning:     {}", f.sentence);
                }
            }
        }
        println!("result:      authz can enforce on this host");
    }
    Ok(ExitCode::SUCCESS)
}

/// The config `check` reads (the default one only if it exists), and what
/// [`authz_agent::cgroup_writers::audit`] finds on the way to the cgroups it
/// enforces and its stored permits name.
fn delegated_cgroups(
    args: &CheckArgs,
) -> anyhow::Result<Option<(PathBuf, Vec<authz_agent::cgroup_writers::Finding>)>> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None if std::path::Path::new(authz_agent::config::DEFAULT_PATH).exists() => {
            authz_agent::config::DEFAULT_PATH.into()
        }
        None => return Ok(None),
    };
    let config = authz_agent::config::Config::load(&path)?;
    let a = &config.agent;
    let stored = authz_agent::store::Store::at(&a.state_dir)
        .artifacts_read_only()
        .unwrap_or_default();
    let permitted: std::collections::BTreeSet<String> = stored
        .into_iter()
        .flatten()
        .filter_map(|s| authz_agent::artifact::Artifact::parse(&s.text).ok())
        .map(|artifact| artifact.scope.cgroup.to_string())
        .collect();
    let permitted: Vec<String> = permitted.into_iter().collect();
    let findings =
        authz_agent::cgroup_writers::audit(&a.cgroup_root, &a.enforce_cgroups, &permitted);
    Ok(Some((path, findings)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }

    /// Global options and subcommand options must not share an id: clap only
    /// notices when the command is parsed, so parse every subcommand once.
    #[test]
    fn every_subcommand_parses() {
        use clap::Parser as _;
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
        ] {
            super::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
    }
}
