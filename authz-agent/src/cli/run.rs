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
}

/// Runs `authz-agent run` until SIGTERM.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    crate::daemon::run(&args.config).map(|()| ExitCode::SUCCESS)
}
