//! `authz-agent audit verify` and `authz-agent audit explain`.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context as _};

use super::{explain, verify_files, writer::all_files};

/// Default decision log.
pub const DEFAULT_LOG: &str = "/var/log/authz/decisions.jsonl";
/// Default public key of the agent's checkpoint signatures.
pub const DEFAULT_KEY: &str = "/var/lib/authz/audit.pub";

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Prove the decision log was not edited, truncated in the middle,
    /// reordered or added to.
    ///
    /// Recomputes the hash chain across the files (oldest first) and checks
    /// every signed checkpoint. Exits 0 when intact; otherwise names the first
    /// broken record and exits 1.
    ///
    /// Example: authz-agent audit verify /var/log/authz/decisions-*.jsonl /var/log/authz/decisions.jsonl
    Verify(VerifyArgs),
    /// Tell the story of one decision: who ran what, under whose authority
    /// (issuer, delegation chain, requested by, on behalf of, reason), where,
    /// under which policy, why allowed or refused, and the chain of execs that
    /// led to it.
    ///
    /// Example: authz-agent audit explain 1234    (the record's seq)
    ///          authz-agent audit explain --pid 4312 --at 2026-11-25T15:00:00Z
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Log files, oldest first (default: every file of the default log).
    pub files: Vec<PathBuf>,
    /// Public key of the agent's checkpoints (state_dir/audit.pub).
    #[arg(long, default_value = DEFAULT_KEY)]
    pub key: PathBuf,
    /// Check only the hash chain, without a key (weaker: a rewritten tail goes unnoticed).
    #[arg(long)]
    pub no_key: bool,
    /// The files are a tail of the chain (older files were removed on
    /// purpose): do not require it to start at seq 0.
    #[arg(long)]
    pub partial: bool,
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
    /// The active log file; its rotated files are read too.
    #[arg(long, default_value = DEFAULT_LOG)]
    pub log_file: PathBuf,
    /// Print the record itself as JSON instead.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Explain(a) => explain_cmd(a),
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let files = if args.files.is_empty() {
        all_files(std::path::Path::new(DEFAULT_LOG))
            .context("cannot list the default log's files")?
    } else {
        args.files
    };
    if files.is_empty() {
        bail!("no log files to verify (default: {DEFAULT_LOG} and its rotated files)");
    }
    let key = if args.no_key {
        None
    } else {
        let public = crate::trust::PublicKey::read(&args.key).with_context(|| {
            format!(
                "cannot read the checkpoint key {} (or pass --no-key)",
                args.key.display()
            )
        })?;
        Some(public.key)
    };
    let report = verify_files(&files, key.as_ref(), args.partial).context("cannot read the log")?;
    if let Some(broken) = &report.broken {
        println!("BROKEN: {broken}");
        return Ok(ExitCode::FAILURE);
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
    let files = all_files(&args.log_file)
        .with_context(|| format!("cannot list {}", args.log_file.display()))?;
    if files.is_empty() {
        bail!("no decision log at {}", args.log_file.display());
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found.record)?);
    } else {
        print!("{}", explain::explain(&records, found));
    }
    Ok(ExitCode::SUCCESS)
}
