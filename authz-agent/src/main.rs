//! `authz-agent`: the authz daemon and its command line. This file only
//! parses and dispatches; the commands live in `authz_agent::cli`.
use std::process::ExitCode;

use authz_agent::cli::{
    artifact, audit, check, config_check, control, delegate, exit, generate, key, lockdown,
    revocations, run, why, Cli, Command,
};
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
    let json = cli.command.wants_json();
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
        Command::Lockdown(args) => lockdown::run(args),
        Command::Revocations(args) => revocations::run(args),
        Command::Why(args) => why::run(args),
        Command::Config(args) => config_check::run(args),
        Command::Completions(args) => generate::completions(&args),
        Command::Man(args) => generate::man(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("authz-agent: error: {e:#}");
            if json {
                let report = exit::ErrorReport::new(&e);
                if let Ok(text) = serde_json::to_string_pretty(&report) {
                    println!("{text}");
                }
            }
            exit::Exit::of_error(&e).exit_code()
        }
    }
}
