//! `authz-agent run`: the enforcement daemon.
use std::{path::PathBuf, process::ExitCode};

use crate::defaults;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The agent's configuration (trust policy, mode, scope, paths, log
    /// level); every key is documented in the example config shipped as
    /// packaging/agent.toml.
    #[arg(long, default_value = defaults::CONFIG)]
    pub config: PathBuf,
    /// A lockdown statement signed by a trust root (`authz-agent lockdown
    /// statement --action unlock`): ends lockdown at start, which a start
    /// with a configuration other than the one lockdown began with needs.
    #[arg(long, value_name = "STATEMENT")]
    pub unlock: Option<PathBuf>,
}

/// Runs `authz-agent run` until SIGTERM.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    crate::daemon::run(&args.config, args.unlock.as_deref()).map(|()| ExitCode::SUCCESS)
}
