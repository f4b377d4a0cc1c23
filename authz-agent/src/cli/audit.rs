//! `authz-agent audit verify` and `authz-agent audit explain`.
//!
//! The log and the checkpoint key are the agent's own unless given: the
//! config's `[audit] log` and `state_dir/audit.pub` (the config named by
//! `--config`, else the default one if it exists, else the built-in paths).
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context as _};

use super::{exit::Exit, output::Output, readable_config};
use crate::{
    audit::{explain, verify_files, writer},
    config::Config,
    defaults,
};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Prove the decision log was not edited, reordered or added to
    ///
    /// Recomputes the hash chain across the files (oldest first) and checks
    /// every signed checkpoint: an edited, deleted, inserted or reordered
    /// record, or a log truncated in the middle, breaks it. Exits 0 when
    /// intact; otherwise names the first broken record and exits 6
    /// (`log-broken`).
    /// Without files, verifies the agent's own log (the config's `[audit]
    /// log` and its rotated files) with the agent's key
    /// (`state_dir/audit.pub`).
    ///
    /// Example: authz-agent audit verify --config /etc/authz/agent.toml
    ///          authz-agent audit verify /var/log/authz/decisions-*.jsonl /var/log/authz/decisions.jsonl
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),
    /// Tell the story of one decision
    ///
    /// Who ran what, under whose authority (issuer, delegation chain,
    /// requested by, on behalf of, reason), where, under which policy, why
    /// allowed or refused, and the chain of execs that led to it. Reads the
    /// agent's log (the config's `[audit] log`) unless --log-file names one.
    ///
    /// Example: authz-agent audit explain 1234    (the record's seq)
    ///          authz-agent audit explain --pid 4312 --at 2026-11-25T15:00:00Z
    #[command(verbatim_doc_comment)]
    Explain(ExplainArgs),
}

/// The agent config the log and key come from.
#[derive(Debug, clap::Args)]
pub struct AuditConfigArg {
    /// The agent's config: the log is its `[audit] log`, the key its
    /// `state_dir/audit.pub`. Default: /etc/authz/agent.toml if it exists,
    /// else /var/log/authz/decisions.jsonl and /var/lib/authz/audit.pub.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl AuditConfigArg {
    /// The config to take paths from, read only when a path is needed.
    fn load(&self) -> anyhow::Result<Option<Config>> {
        readable_config(self.config.as_deref())
            .map(|path| Config::load(&path))
            .transpose()
            .map_err(Into::into)
    }

    /// The active decision log.
    fn log(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .load()?
            .map_or_else(|| defaults::AUDIT_LOG.into(), |c| c.audit.log))
    }

    /// The agent's checkpoint public key.
    fn key(&self) -> anyhow::Result<PathBuf> {
        let state_dir = self
            .load()?
            .map_or_else(|| defaults::STATE_DIR.into(), |c| c.agent.state_dir);
        Ok(writer::key_paths(&state_dir).public)
    }
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Log files, oldest first (default: the agent's log and its rotated
    /// files).
    pub files: Vec<PathBuf>,
    /// Public key of the agent's checkpoints (default: the config's
    /// state_dir/audit.pub).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Check only the hash chain, without a key (weaker: a rewritten tail goes unnoticed).
    #[arg(long)]
    pub no_key: bool,
    /// The files are a tail of the chain (older files were removed on
    /// purpose): do not require it to start at seq 0.
    #[arg(long)]
    pub partial: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: AuditConfigArg,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["seq", "pid"])))]
pub struct ExplainArgs {
    /// The record's seq (its id in the log).
    pub seq: Option<u64>,
    /// The last exec decision of this process id.
    #[arg(long)]
    pub pid: Option<u64>,
    /// With --pid: at or before this time (RFC 3339, UTC).
    #[arg(long, requires = "pid")]
    pub at: Option<String>,
    /// The active log file; its rotated files are read too (default: the
    /// config's `[audit] log`).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Print the record itself as JSON instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: AuditConfigArg,
}

impl AuditArgs {
    /// The config this command reads, if any.
    pub(super) fn config(&self) -> Option<&Path> {
        match &self.command {
            AuditCommand::Verify(a) => a.config.config.as_deref(),
            AuditCommand::Explain(a) => a.config.config.as_deref(),
        }
    }

    pub(super) fn json(&self) -> bool {
        match &self.command {
            AuditCommand::Verify(a) => a.json,
            AuditCommand::Explain(a) => a.json,
        }
    }
}

/// `audit verify --json`.
#[derive(Debug, serde::Serialize)]
struct VerifyResult<'a> {
    intact: bool,
    files: &'a [PathBuf],
    /// Checkpoint signatures were checked (a key was used).
    signatures: bool,
    #[serde(flatten)]
    report: &'a crate::audit::VerifyReport,
}

/// Runs `authz-agent audit ...`.
pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Explain(a) => explain_cmd(a),
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let files = if args.files.is_empty() {
        let log = args.config.log()?;
        let files = writer::all_files(&log)
            .with_context(|| format!("cannot list the files of {}", log.display()))?;
        if files.is_empty() {
            bail!(
                "no log files to verify ({} and its rotated files)",
                log.display()
            );
        }
        files
    } else {
        args.files
    };
    let key = if args.no_key {
        None
    } else {
        let path = match args.key {
            Some(path) => path,
            None => args.config.key()?,
        };
        let public = crate::trust::PublicKey::read(&path).with_context(|| {
            format!(
                "cannot read the checkpoint key {} (or pass --no-key)",
                path.display()
            )
        })?;
        Some(public.key)
    };
    let report = verify_files(&files, key.as_ref(), args.partial).context("cannot read the log")?;
    if args.json {
        let result = VerifyResult {
            intact: report.broken.is_none(),
            files: &files,
            signatures: key.is_some(),
            report: &report,
        };
        Output::Json.print(&result, |_| String::new())?;
    }
    if let Some(broken) = &report.broken {
        if !args.json {
            println!("BROKEN: {broken}");
        }
        return Ok(Exit::LogBroken.exit_code());
    }
    if args.json {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "intact: {} records (seq {}..{}) in {} file(s); {} checkpoints, {} signatures verified",
        report.records,
        report.first_seq.map_or("-".into(), |s| s.to_string()),
        report.last_seq.map_or("-".into(), |s| s.to_string()),
        files.len(),
        report.checkpoints,
        report.signatures_checked,
    );
    if key.is_none() {
        println!("warning: no key: checkpoint signatures not checked");
    }
    if report.unsigned_tail > 0 {
        println!(
            "note: the last {} record(s) follow the last checkpoint: the chain protects their order and content, but not their removal",
            report.unsigned_tail
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn explain_cmd(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let log = match args.log_file {
        Some(log) => log,
        None => args.config.log()?,
    };
    let files =
        writer::all_files(&log).with_context(|| format!("cannot list {}", log.display()))?;
    if files.is_empty() {
        bail!("no decision log at {}", log.display());
    }
    let records = explain::load(&files)?;
    let query = match (args.seq, args.pid) {
        (Some(seq), _) => explain::Query::Seq(seq),
        (None, Some(pid)) => explain::Query::Pid { pid, at: args.at },
        (None, None) => bail!("give a record seq or --pid"),
    };
    let Some(found) = explain::find(&records, &query) else {
        bail!("no record matches {query:?} in {} file(s)", files.len());
    };
    Output::json_if(args.json).print(&found.record, |_| explain::explain(&records, found))?;
    Ok(ExitCode::SUCCESS)
}
