//! `authz-agent completions SHELL` and `authz-agent man --out DIR`: shell
//! completions and man pages generated from the command-line definition
//! itself (clap_complete, clap_mangen), so they never disagree with it.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::Cli;

/// Man section: the agent is a system administration command (/usr/sbin).
pub const MAN_SECTION: &str = "8";

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write authz-agent.8 and authz-agent-COMMAND.8 into
    /// (created if missing; existing pages are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs `authz-agent completions`: the script on standard output.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "authz-agent", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `authz-agent man`: one page per command, the file names on
/// standard output.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    for page in write_man_pages(&args.out)? {
        println!("{}", page.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages of every (visible) command into `dir`.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        write_pages(sub, dir, written)?;
    }
    let page = clap_mangen::Man::new(cmd)
        .section(MAN_SECTION)
        .manual("authz");
    let path = page
        .generate_to(dir)
        .with_context(|| format!("cannot write a man page into {}", dir.display()))?;
    written.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_man_page_with_its_exit_statuses() {
        let dir = std::env::temp_dir().join(format!("authz-man-{}", std::process::id()));
        let pages = write_man_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for name in [
            "authz-agent.8",
            "authz-agent-why.8",
            "authz-agent-submit.8",
            "authz-agent-config-check.8",
            "authz-agent-artifact-issue.8",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        let main = std::fs::read_to_string(dir.join("authz-agent.8")).unwrap();
        assert!(
            main.starts_with(".ie") || main.contains(".TH authz-agent 8"),
            "{main}"
        );
        assert!(main.contains("permission\\-denied"), "{main}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_name_the_commands() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "authz-agent",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        assert!(
            script.contains("complete -F") && script.contains("why"),
            "{script}"
        );
    }
}
