//! `authz-agent delegate`.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::bail;
use clap::Args;

use super::{
    exit::{self, Exit},
    output::Output,
    sign::{check_and_write, parse_start, parse_until, HostArgs, PolicySource},
};
use crate::{
    trust::keys::{self, PublicKey},
    vocab::{
        delegation::{Delegation, Grant},
        fields::{join_prefixes, ArtifactId, CgroupPath},
        keyid::KeyId,
        time::{self, Timestamp},
    },
};

/// Delegate part of a key's authority to another key
///
/// Signs a delegation that lets the key in --to issue permits for cgroups under
/// the given prefixes, each permit living at most --max-ttl, until --expires.
/// The signing key is a root key, or a key that already holds a delegation
/// (pass it with --delegation; the new link is appended to that chain). The
/// delegation may only narrow the authority it is given.
///
/// Example: authz-agent delegate --key ops-root.key --to team-a.pub
///   --cgroup-prefix /jobs.slice/team-a --max-ttl 1d --expires 90d
///   --config /etc/authz/agent.toml --out team-a.delegation
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DelegateArgs {
    /// The signing key (NAME.key).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The delegation that gives the signing key its authority, when it is not
    /// a root key.
    #[arg(long, value_name = "FILE")]
    pub delegation: Option<PathBuf>,
    /// The public key receiving the authority (NAME.pub).
    #[arg(long, value_name = "PUB")]
    pub to: PathBuf,
    /// A cgroup (with its descendants) the delegate may issue permits for;
    /// repeatable.
    #[arg(long = "cgroup-prefix", value_name = "CGROUP", required = true)]
    pub cgroup_prefixes: Vec<String>,
    /// Longest lifetime of a permit the delegate may issue (e.g. 12h, 7d).
    #[arg(long, value_name = "DURATION")]
    pub max_ttl: String,
    /// When the delegation ends: an RFC 3339 UTC time or a duration from now.
    #[arg(long, value_name = "TIME|DURATION")]
    pub expires: String,
    /// When the delegation starts (RFC 3339 UTC; default now).
    #[arg(long, value_name = "TIME")]
    pub not_before: Option<String>,
    /// Let the delegate issue permits that grant executable memory (a JIT,
    /// `artifact issue --exec-memory`) and hand that on. Without it, such
    /// permits under this delegation do not verify.
    #[arg(long)]
    pub exec_memory: bool,
    #[command(flatten)]
    pub hosts: HostArgs,
    #[command(flatten)]
    pub policy: PolicySource,
    /// Where to write the delegation (`-` for standard output). Never overwrites.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print what was delegated as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `delegate --json`.
#[derive(Debug, serde::Serialize)]
struct DelegateResult {
    /// The new link's id (revoking it revokes everything issued under it).
    id: String,
    out: PathBuf,
    delegate_key: String,
    links: usize,
    cgroup_prefixes: Vec<String>,
    max_ttl_seconds: u64,
    not_before: String,
    expires: String,
}

/// Runs `authz-agent delegate`.
pub fn run(args: DelegateArgs) -> anyhow::Result<ExitCode> {
    let (policy, policy_version) = args.policy.load()?;
    let key = keys::read_secret_key(&args.key)?;
    let to = PublicKey::read(&args.to)?;
    let parent = args
        .delegation
        .as_deref()
        .map(Delegation::read)
        .transpose()?;
    let issuer = KeyId::of(&key.verifying_key());
    if let Some(p) = &parent {
        let holder = p.last().delegate_key_id();
        if holder != issuer {
            bail!(
                "{} delegates to key {holder}, not to the signing key {issuer}",
                args.delegation
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            );
        }
    }
    let now = Timestamp::now();
    let not_before = parse_start(args.not_before.as_deref(), now)?;
    let cgroup_prefixes = args
        .cgroup_prefixes
        .iter()
        .map(|p| CgroupPath::normalize(p))
        .collect::<Result<Vec<_>, _>>()?;
    let grant = Grant {
        id: ArtifactId::random(),
        issued_at: now,
        policy_version,
        issuer,
        delegate_key: to.key,
        cgroup_prefixes,
        max_ttl_seconds: time::parse_duration(&args.max_ttl)?,
        not_before,
        expires: parse_until(&args.expires, not_before)?,
        exec_memory: args.exec_memory,
        hosts: args.hosts.binding()?,
    };
    let delegation = Delegation::extend(parent.as_ref(), grant, &key)?;
    if args.json && args.out == Path::new("-") {
        return Err(exit::error(
            Exit::Usage,
            "--json and --out - would both print on standard output: write the delegation to a file",
        ));
    }
    check_and_write(&delegation, policy.as_ref(), &args.out)?;
    let last = delegation.last().grant();
    if args.json {
        let result = DelegateResult {
            id: last.id.to_string(),
            out: args.out.clone(),
            delegate_key: to.id.to_string(),
            links: delegation.links().len(),
            cgroup_prefixes: last
                .cgroup_prefixes
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            max_ttl_seconds: last.max_ttl_seconds,
            not_before: last.not_before.to_string(),
            expires: last.expires.to_string(),
        };
        Output::Json.print(&result, |_| String::new())?;
    }
    eprintln!(
        "delegated to key {} ({} link{}): cgroups {}, permits up to {}, until {}{}",
        to.id,
        delegation.links().len(),
        if delegation.links().len() == 1 {
            ""
        } else {
            "s"
        },
        join_prefixes(&last.cgroup_prefixes),
        time::format_duration(last.max_ttl_seconds),
        last.expires,
        if last.exec_memory {
            "; may grant executable memory"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
