//! `authz-agent`: the authz daemon and its command line.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use authz_agent::enforcer::{self, Enforcer, LoadOptions, Mode};
use clap::{Parser, Subcommand};

/// Fail-closed exec authorization for Linux.
///
/// A BPF LSM program refuses every execve whose binary (by SHA-256, computed in
/// the kernel) has no valid signed permit for the caller's cgroup. This binary is
/// both the daemon that loads it and the tool that talks to it.
#[derive(Debug, Parser)]
#[command(name = "authz-agent", version, propagate_version = true, max_term_width = 100)]
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
    /// Loads the BPF LSM program, proves with a self-test that it refuses an
    /// unauthorized exec, then reports every decision until stopped (SIGINT or
    /// SIGTERM). On a kernel that cannot run BPF LSM programs it exits non-zero
    /// and says what is missing.
    Run(RunArgs),
    /// Check that this host can enforce: kernel support, program load, self-test.
    ///
    /// Loads and attaches the program in `off` mode, runs the self-test (a probe
    /// exec that must be refused, whose in-kernel SHA-256 must match), prints a
    /// report and detaches. Exit status 0 means authz can enforce here.
    Check(CheckArgs),
    Key(authz_agent::cli::KeyArgs),
    Delegate(authz_agent::cli::DelegateArgs),
    Artifact(authz_agent::cli::ArtifactArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Enforcement mode to start in.
    #[arg(long, value_enum, default_value_t = Mode::Audit)]
    mode: Mode,
    /// Enforce only in this cgroup subtree (e.g. `/jobs.slice`); repeatable.
    /// Without it the mode applies to every process on the host.
    #[arg(long = "enforce-cgroup", value_name = "CGROUP")]
    enforce_cgroups: Vec<String>,
    /// Where cgroup v2 is mounted.
    #[arg(long, default_value = authz_agent::cgroup::CGROUP_ROOT)]
    cgroup_root: PathBuf,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Where cgroup v2 is mounted.
    #[arg(long, default_value = authz_agent::cgroup::CGROUP_ROOT)]
    cgroup_root: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
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

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let hierarchy = authz_agent::cgroup::Hierarchy::open(&args.cgroup_root)?;
        let mut enforced_cgroups = Vec::new();
        for cgroup in &args.enforce_cgroups {
            enforced_cgroups.push(
                hierarchy
                    .id(cgroup)
                    .with_context(|| format!("cannot enforce cgroup {cgroup}"))?,
            );
        }
        let opts = LoadOptions {
            mode: args.mode,
            cgroup_root: args.cgroup_root,
            enforced_cgroups,
            ..LoadOptions::default()
        };
        let mut enforcer = Enforcer::load(&opts).context("cannot start enforcement")?;
        tracing::info!(
            mode = %enforcer.mode(),
            kernel = %enforcer.kernel().release,
            scope = ?args.enforce_cgroups,
            "authz-agent enforcing"
        );
        let ring = enforcer
            .take_event_ring()
            .context("event ring already taken")?;
        // SAFETY: the ring buffer owns its map fd and the AsyncFd owns the ring
        // buffer, so the fd stays open for as long as it is registered.
        let mut ring = unsafe { tokio::io::unix::AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("cannot watch the event ring: {e}"))?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("event ring")?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        if let Some(ev) = enforcer::event::decode(&item) {
                            println!("{}", serde_json::to_string(&ev).unwrap_or_default());
                        }
                    }
                    guard.clear_ready();
                }
            }
        }
        tracing::info!("stopping");
        drop(enforcer);
        Ok(ExitCode::SUCCESS)
    })
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
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "kernel": kernel,
                "selftest": report,
            })
        );
    } else {
        println!("kernel:      {}", kernel.release);
        println!("active LSMs: {}", kernel.active_lsms.join(","));
        println!("BPF LSM:     program loaded and attached to bprm_check_security");
        println!("self-test:   probe exec refused with EPERM; in-kernel SHA-256 {} matches", report.digest);
        println!("result:      authz can enforce on this host");
    }
    Ok(ExitCode::SUCCESS)
}
