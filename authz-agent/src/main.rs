//! `authz-agent`: the authz daemon and its command line. This file only
//! parses and dispatches; the commands live in `authz_agent::cli`.
use std::process::ExitCode;

use authz_agent::cli::{artifact, audit, check, control, delegate, key, run, Cli, Command};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A CLI piped into `head` should stop quietly, not panic on EPIPE.
        // (The daemon keeps SIGPIPE ignored: a client hanging up must never kill it.)
        // SAFETY: restoring the default disposition of a signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    authz_agent::logging::init(&cli.log_filter(), cli.log_filter_overridden());
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Submit(args) => control::submit(args),
        Command::List(args) => control::list(args),
        Command::Revoke(args) => control::revoke(args),
        Command::Status(args) => control::status(args),
        Command::Mode(args) => control::set_mode(args),
        Command::Report(args) => control::report(args),
        Command::Unload(args) => control::unload(args),
        Command::Audit(args) => audit::run(args),
        Command::Key(args) => key::run(args),
        Command::Delegate(args) => delegate::run(args),
        Command::Artifact(args) => artifact::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "authz-agent: error: {}",
                authz_agent::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}
