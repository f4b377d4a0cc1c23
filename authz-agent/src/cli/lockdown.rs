//! `authz-agent lockdown statement | unlock | adopt`: the signed statements
//! that end lockdown or authorize new agent code, and the requests that
//! present them to the running agent.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::control::{ask, SocketArgs};
use crate::{
    control::protocol::{AdoptResult, Request, UnlockResult},
    lockdown,
    trust::keys,
    vocab::{
        fields::ArtifactId,
        statement::{Action, AgentCode, Claim, MAX_LIFETIME_SECS},
        text::{self, Kind},
        time::{parse_duration, Timestamp},
    },
};

/// Lockdown: only the agent changes what the kernel enforces.
///
/// With `[agent] lockdown = true` the agent records its trust roots, this
/// host's machine id, its configuration's digest and its own code in the
/// kernel; from then on the kernel refuses authz's pinned programs and maps
/// to every process not exec'd from that code, even root's, and the agent
/// refuses to lower the mode, start with another configuration or unload.
/// Leaving lockdown takes a statement signed by a trust root for this host,
/// valid at most an hour.
///
/// Example (on the signer's machine, then on the host):
///   authz-agent lockdown statement --key ops-root.key --action unlock
///     --host "$(ssh host cat /etc/machine-id)" --reason "maintenance" -o unlock.toml
///   authz-agent lockdown unlock --statement unlock.toml
#[derive(Debug, Args)]
pub struct LockdownArgs {
    #[command(subcommand)]
    pub command: LockdownCommand,
}

#[derive(Debug, Subcommand)]
pub enum LockdownCommand {
    /// Sign a statement with a trust root's key: `unlock` or `adopt-agent`.
    ///
    /// `adopt-agent` authorizes new agent code (an upgraded binary, a new
    /// library) to take over the locked state: name each file with
    /// `--binary` or `--library`.
    ///
    /// Example: authz-agent lockdown statement --key root.key --action adopt-agent
    ///   --binary ./authz-agent-1.2 --host 0123... -o adopt.toml
    Statement(StatementArgs),
    /// End lockdown on the running agent (needs an admin).
    ///
    /// Example: authz-agent lockdown unlock --statement unlock.toml
    Unlock(PresentArgs),
    /// Authorize the agent code a statement names (needs an admin).
    ///
    /// Example: authz-agent lockdown adopt --statement adopt.toml
    Adopt(PresentArgs),
}

/// What a statement allows.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActionArg {
    Unlock,
    AdoptAgent,
}

#[derive(Debug, Args)]
pub struct StatementArgs {
    /// The trust root's secret key file.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    #[arg(long, value_enum)]
    pub action: ActionArg,
    /// The machine id of the host it is for (`cat /etc/machine-id` there).
    /// Default: this host's.
    #[arg(long, value_name = "MACHINE_ID")]
    pub host: Option<String>,
    /// Start of validity (RFC 3339). Default: now.
    #[arg(long)]
    pub not_before: Option<String>,
    /// How long it stays valid (at most 1h).
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    /// `adopt-agent`: an agent binary to authorize (repeatable).
    #[arg(long, value_name = "PATH")]
    pub binary: Vec<PathBuf>,
    /// `adopt-agent`: a library or loader the agent maps (repeatable).
    #[arg(long, value_name = "PATH")]
    pub library: Vec<PathBuf>,
    /// Why (kept in the decision log when it is used).
    #[arg(long)]
    pub reason: Option<String>,
    /// Where to write it (`-`: standard output). Never overwrites.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Print what was signed as JSON (not with `-o -`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PresentArgs {
    /// The statement file (from `lockdown statement`).
    #[arg(long, value_name = "FILE")]
    pub statement: PathBuf,
    #[command(flatten)]
    pub socket: SocketArgs,
}

impl LockdownArgs {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match &self.command {
            LockdownCommand::Statement(a) => a.json,
            LockdownCommand::Unlock(a) | LockdownCommand::Adopt(a) => a.socket.json,
        }
    }
}

/// Runs `authz-agent lockdown ...`.
pub fn run(args: LockdownArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LockdownCommand::Statement(a) => statement(a),
        LockdownCommand::Unlock(a) => {
            let text = text::read_file(&a.statement, Kind::Statement)?;
            let v: UnlockResult = ask(&a.socket, &Request::Unlock { statement: text })?;
            a.socket.output().print(&v, |v| {
                format!(
                    "lockdown ended by statement {} (signed by {}); the next start with \
                     `lockdown = true` begins it again\n",
                    v.statement_id, v.issuer
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        LockdownCommand::Adopt(a) => {
            let text = text::read_file(&a.statement, Kind::Statement)?;
            let v: AdoptResult = ask(&a.socket, &Request::Adopt { statement: text })?;
            a.socket.output().print(&v, |v| {
                let mut s = format!(
                    "authorized {} file(s) of agent code (statement {}):\n",
                    v.files, v.statement_id
                );
                for d in &v.digests {
                    s.push_str(&format!("  sha256 {d}\n"));
                }
                s
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn statement(args: StatementArgs) -> anyhow::Result<ExitCode> {
    let key = keys::read_secret_key(&args.key)?;
    let host = match args.host {
        Some(h) => h,
        None => lockdown::machine_id(Path::new(lockdown::MACHINE_ID))?,
    };
    let now = Timestamp::now();
    let not_before = match &args.not_before {
        Some(s) => s.parse::<Timestamp>()?,
        None => now,
    };
    let ttl = parse_duration(&args.ttl)?;
    anyhow::ensure!(
        ttl <= MAX_LIFETIME_SECS,
        "--ttl {} is longer than a statement may live (1h)",
        args.ttl
    );
    let action = match args.action {
        ActionArg::Unlock => Action::Unlock,
        ActionArg::AdoptAgent => Action::AdoptAgent,
    };
    let mut agents = Vec::new();
    for (paths, binary) in [(&args.binary, true), (&args.library, false)] {
        for path in paths {
            let sha256 = lockdown::hash_file(path)
                .with_context(|| format!("cannot hash {}", path.display()))?;
            agents.push(AgentCode { sha256, binary });
        }
    }
    let claim = Claim {
        id: ArtifactId::random(),
        issued_at: now,
        issuer_key: key.verifying_key(),
        action,
        host,
        not_before,
        expires: not_before
            .checked_add(ttl)
            .context("--not-before plus --ttl is past the end of time")?,
        agents,
        reason: args.reason,
    };
    anyhow::ensure!(
        !(args.json && args.out == Path::new("-")),
        "--json and -o - would both print on standard output: write the statement to a file"
    );
    let signed = claim.sign(&key)?;
    let toml = signed.to_toml();
    if args.out == Path::new("-") {
        print!("{toml}");
    } else {
        text::write_new(&args.out, 0o644, &toml)?;
    }
    if args.json {
        let c = signed.claim();
        super::output::Output::Json.print(
            &serde_json::json!({
                "id": c.id.to_string(),
                "action": c.action.as_str(),
                "host": c.host,
                "issuer": signed.issuer().to_string(),
                "not_before": c.not_before.to_string(),
                "expires": c.expires.to_string(),
                "agents": c.agents.iter().map(|a| serde_json::json!({
                    "sha256": hex::encode(a.sha256),
                    "binary": a.binary,
                })).collect::<Vec<_>>(),
                "out": args.out,
            }),
            |_| String::new(),
        )?;
    }
    eprintln!(
        "signed {} statement {} for host {}, valid {} to {}",
        action.as_str(),
        signed.claim().id,
        signed.claim().host,
        signed.claim().not_before,
        signed.claim().expires
    );
    Ok(ExitCode::SUCCESS)
}
