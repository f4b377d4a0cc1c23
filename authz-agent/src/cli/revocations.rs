//! `authz-agent revocations issue`: sign a revocation list. It is applied
//! with `authz-agent submit LIST` (which tells it from a permit by its
//! `format`), on every host that should drop what it names.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{control::SocketArgs, output::Output, sign::write_output};
use crate::{
    control::{
        client::call_as,
        protocol::{Request, RevocationListResult},
    },
    revocation_list,
    trust::{keys, revocations::verify_list, HostCheck, TrustPolicy},
    vocab::{delegation::Delegation, fields::ArtifactId, time::Timestamp},
};

/// Signed revocation lists: fleet-wide revocation by dropping one file everywhere
#[derive(Debug, Args)]
pub struct RevocationsArgs {
    #[command(subcommand)]
    pub command: RevocationsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RevocationsCommand {
    Issue(IssueArgs),
}

/// Sign a list revoking permits and delegations by id
///
/// The list is signed by a root key of the trust policy, or by a delegate
/// (pass its delegation with --delegation), which may revoke only what was
/// issued under its delegation. Every list from one key needs a higher
/// --serial than the last one an agent applied from that key: an agent
/// refuses an older list, so replaying one cannot undo a newer one. Apply it
/// with `authz-agent submit FILE` on each host. Revoking a delegation id
/// revokes every permit issued under it, for good.
///
/// Example: authz-agent revocations issue --key ops-root.key --serial 12
///   --reason "build key leaked" --out revocations-12.toml 3f2a... 9b1c...
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct IssueArgs {
    /// The signing key (NAME.key): a root key, or a delegate's key.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The delegation that gives the signing key its authority, when it is
    /// not a root key.
    #[arg(long, value_name = "FILE")]
    pub delegation: Option<PathBuf>,
    /// Above every earlier list signed with this key (from 1).
    #[arg(long, value_name = "N")]
    pub serial: u64,
    /// Why (signed, and kept with each revocation on every host).
    #[arg(long)]
    pub reason: Option<String>,
    /// The agent config whose `[trust]` table to check the list against.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to write the list (`-` for standard output). Never overwrites.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print what was signed as JSON (not with `--out -`).
    #[arg(long)]
    pub json: bool,
    /// Permit and delegation ids (32 hex digits, as `list` shows).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<ArtifactId>,
}

impl RevocationsArgs {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match &self.command {
            RevocationsCommand::Issue(a) => a.json,
        }
    }

    pub fn config(&self) -> Option<&Path> {
        match &self.command {
            RevocationsCommand::Issue(a) => a.config.as_deref(),
        }
    }
}

/// Runs `authz-agent revocations`.
pub fn run(args: RevocationsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RevocationsCommand::Issue(a) => issue(a),
    }
}

fn issue(args: IssueArgs) -> anyhow::Result<ExitCode> {
    let key = keys::read_secret_key(&args.key)?;
    let delegation = args
        .delegation
        .as_deref()
        .map(Delegation::read)
        .transpose()?;
    let list = revocation_list::issue(
        args.ids,
        args.serial,
        args.reason,
        &key,
        delegation.as_ref(),
        Timestamp::now(),
    )?;
    if let Some(config) = &args.config {
        let policy = TrustPolicy::from_config_file(config)?;
        verify_list(
            &list,
            &policy,
            HostCheck::Anywhere,
            &|_| false,
            SystemTime::now(),
        )
        .context("the list would not be applied under the given config")?;
    }
    anyhow::ensure!(
        !(args.json && args.out == Path::new("-")),
        "--json and --out - would both print on standard output: write the list to a file"
    );
    write_output(&args.out, 0o644, &list.to_toml())?;
    if args.json {
        Output::Json.print(
            &serde_json::json!({
                "serial": list.serial,
                "signer": list.issuer.to_string(),
                "ids": list.revoked.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "out": args.out,
            }),
            |_| String::new(),
        )?;
    }
    eprintln!(
        "revocation list {} from key {}: {} id{}",
        list.serial,
        list.issuer,
        list.revoked.len(),
        if list.revoked.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `submit` of a file that is a revocation list: sends it, prints the answer.
pub(super) fn submit(socket: &SocketArgs, file: &Path, text: String) -> anyhow::Result<()> {
    let v: RevocationListResult = call_as(&socket.socket, &Request::RevocationList { list: text })
        .map_err(anyhow::Error::new)?;
    Output::json_if(socket.json).print(&v, |v| render(file, v))
}

fn render(file: &Path, v: &RevocationListResult) -> String {
    if v.already_applied {
        return format!(
            "applied {}: list {} from key {} was applied before; nothing changed\n",
            file.display(),
            v.serial,
            v.signer
        );
    }
    let mut out = format!(
        "applied {}: list {} from key {}: {} revoked, {} already revoked, {} artifact{} removed\n",
        file.display(),
        v.serial,
        v.signer,
        v.revoked,
        v.already_revoked,
        v.removed,
        if v.removed == 1 { "" } else { "s" }
    );
    if !v.out_of_scope.is_empty() {
        out.push_str(&format!(
            "not applied (not issued under the signer's delegation, as far as this agent knows): {}\n",
            v.out_of_scope.join(", ")
        ));
    }
    out
}
