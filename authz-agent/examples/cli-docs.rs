//! Writes the man pages (section 8: `authz-agent` is a system daemon and its
//! administration tool) and the bash, zsh and fish completions of
//! `authz-agent`, generated from its command-line definition by clap's own
//! generators:
//!
//!     cargo run -p authz-agent --example cli-docs -- OUT
//!
//! gives `OUT/man/authz-agent.8`, `OUT/man/authz-agent-submit.8`, ... and
//! `OUT/completions/{authz-agent.bash,_authz-agent,authz-agent.fish}`.
//! `cargo xtask deb` uses it for the Debian package.
use std::{fs, path::Path};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

/// Man page section of system administration commands.
const SECTION: &str = "8";

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .context("usage: cli-docs OUT_DIR")?;
    let out = Path::new(&out);
    let cmd = authz_agent::cli::Cli::command();
    let man = out.join("man");
    fs::create_dir_all(&man)?;
    write_pages(&cmd, cmd.get_name(), &man)?;
    let completions = out.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in [
        (Shell::Bash, "authz-agent.bash"),
        (Shell::Zsh, "_authz-agent"),
        (Shell::Fish, "authz-agent.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "authz-agent", &mut text);
        fs::write(completions.join(file), text)?;
    }
    Ok(())
}

/// One page per command, as git does: `authz-agent-artifact-issue.8`.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    // clap names commands with &'static str; this program runs once.
    let page = cmd.clone().name(&*String::leak(name.to_owned()));
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .section(SECTION)
        .render(&mut text)?;
    fs::write(dir.join(format!("{name}.{SECTION}")), text)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
