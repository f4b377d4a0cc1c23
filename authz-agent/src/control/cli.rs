//! CLI commands that talk to the running daemon over its control socket.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::{
    client::{call, ClientError},
    protocol::Request,
};
use crate::enforcer::Mode;

/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/authz/agent.sock";

/// Options every socket command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArgs {
    /// The agent's control socket.
    #[arg(long, env = "AUTHZ_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    /// Print the agent's answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `submit FILE...`
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Artifact files (from `authz-agent artifact issue`).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `revoke ID` / `revoke --all`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["id", "all"])))]
pub struct RevokeArgs {
    /// The artifact or delegation id (32 hex digits, as `list` shows).
    pub id: Option<String>,
    /// Revoke every accepted artifact and flush the kernel's permit map now.
    #[arg(long)]
    pub all: bool,
    /// Why (kept in the revocation list).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `mode MODE`
#[derive(Debug, clap::Args)]
pub struct ModeArgs {
    /// off: decide nothing; audit: report refusals but allow; enforce: refuse.
    #[arg(value_enum)]
    pub mode: Mode,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `list`, `status`, `report`
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `unload`
#[derive(Debug, clap::Args)]
pub struct UnloadArgs {
    /// The bpffs directory the agent pins its state in.
    #[arg(long, default_value = "/sys/fs/bpf/authz")]
    pub pin_dir: PathBuf,
    /// The control socket, to check that no agent is running.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

fn ask(args: &SocketArgs, request: &Request) -> anyhow::Result<Value> {
    call(&args.socket, request).map_err(|e| match &e {
        ClientError::Refused { kind, message } => anyhow::anyhow!("{message} [{kind}]"),
        _ => anyhow::Error::new(e),
    })
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Reads an artifact file, refusing oversized ones before reading them.
fn read_artifact(path: &Path) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > crate::store::MAX_ARTIFACT_BYTES {
        bail!(
            "{} is {len} bytes; an artifact is at most {} bytes",
            path.display(),
            crate::store::MAX_ARTIFACT_BYTES
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for file in &args.files {
        let result = read_artifact(file).and_then(|text| {
            call(&args.socket.socket, &Request::Submit { artifact: text })
                .map_err(anyhow::Error::new)
        });
        match result {
            Ok(v) if args.socket.json => print_json(&v),
            Ok(v) => {
                let again = if v["already_accepted"] == Value::Bool(true) {
                    " (already accepted)"
                } else {
                    ""
                };
                let from = if v["state"] == "scheduled" {
                    format!(" from {}", s(&v["not_before"]))
                } else {
                    String::new()
                };
                println!(
                    "accepted {}: {} in {}{from} until {}{again}",
                    file.display(),
                    s(&v["state"]),
                    s(&v["cgroup"]),
                    s(&v["expires"]),
                );
            }
            Err(e) => {
                failed += 1;
                let msg = match e.downcast_ref::<ClientError>() {
                    Some(ClientError::Refused { kind, message }) => format!("{message} [{kind}]"),
                    _ => crate::error_chain(e.as_ref()),
                };
                eprintln!("refused {}: {msg}", file.display());
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn list(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let v = ask(&args.socket, &Request::List {})?;
    if args.socket.json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let permits = v["permits"].as_array().cloned().unwrap_or_default();
    // FROM and EXPIRES: the effective window (the permit's own narrowed by
    // its delegation chain); `--json` also gives the permit's own.
    println!(
        "{:<32}  {:<18}  {:<24}  {:<20}  {:<20}  {:<16}  REQUESTED BY",
        "ID", "STATE", "CGROUP", "FROM", "EXPIRES", "DIGEST"
    );
    for p in &permits {
        let cgroup = format!(
            "{}{}",
            s(&p["cgroup"]),
            if p["descendants"] == Value::Bool(true) {
                "/**"
            } else {
                ""
            }
        );
        println!(
            "{:<32}  {:<18}  {:<24}  {:<20}  {:<20}  {:<16}  {}",
            s(&p["id"]),
            s(&p["state"]),
            cgroup,
            s(&p["not_before"]),
            s(&p["expires"]),
            s(&p["digest"]).chars().take(16).collect::<String>(),
            s(&p["requested_by"]),
        );
    }
    println!(
        "{} artifacts; {} revoked ids on record",
        permits.len(),
        s(&v["revoked"])
    );
    Ok(ExitCode::SUCCESS)
}

pub fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let request = if args.all {
        Request::RevokeAll {
            reason: args.reason,
        }
    } else {
        Request::Revoke {
            id: args.id.unwrap_or_default(),
            reason: args.reason,
        }
    };
    let v = ask(&args.socket, &request)?;
    if args.socket.json {
        print_json(&v);
    } else if args.all {
        println!(
            "revoked {} artifacts; flushed {} kernel permits",
            s(&v["revoked"]),
            s(&v["flushed"])
        );
    } else if v["already_revoked"] == Value::Bool(true) {
        println!("{} was already revoked", s(&v["id"]));
    } else if v["known"] == Value::Bool(false) {
        println!(
            "revoked {} (no accepted artifact has it now; it can never be submitted)",
            s(&v["id"])
        );
    } else {
        println!(
            "revoked {}: {} artifact(s) removed from the kernel",
            s(&v["id"]),
            s(&v["removed"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let v = ask(&args.socket, &Request::Status {})?;
    if args.socket.json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    println!("mode:            {}", s(&v["mode"]));
    println!("scope:           {}", s(&v["scope"]));
    println!(
        "kernel:          {} (BPF LSM {})",
        s(&v["kernel"]["release"]),
        s(&v["bpf_lsm"])
    );
    println!("permits:         {}", v["permits"]);
    println!("kernel entries:  {}", s(&v["kernel_permit_entries"]));
    println!("revoked ids:     {}", s(&v["revoked"]));
    println!("policy version:  {}", s(&v["policy_version"]));
    println!(
        "events:          {} received, {} dropped by the kernel",
        s(&v["events_received"]),
        s(&v["events_dropped"])
    );
    println!(
        "uptime:          {}s (pinned state adopted: {})",
        s(&v["uptime_seconds"]),
        s(&v["pinned_state_adopted"])
    );
    if let Some(c) = v["counters"].as_object() {
        println!("counters:");
        for (k, n) in c {
            println!("  {k:<22} {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn set_mode(args: ModeArgs) -> anyhow::Result<ExitCode> {
    let v = ask(&args.socket, &Request::SetMode { mode: args.mode })?;
    if args.socket.json {
        print_json(&v);
    } else {
        println!("mode: {} (was {})", s(&v["mode"]), s(&v["previous"]));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn report(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let v = ask(&args.socket, &Request::Report {})?;
    if args.socket.json {
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no exec was refused or would have been refused since the agent started");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<10}  {:<14}  {:<24}  {:<16}  PATH",
        "COUNT", "DECISION", "REASON", "CGROUP", "DIGEST"
    );
    for r in &rows {
        println!(
            "{:>6}  {:<10}  {:<14}  {:<24}  {:<16}  {}",
            s(&r["count"]),
            s(&r["decision"]),
            s(&r["reason"]),
            s(&r["cgroup"]),
            s(&r["digest"]).chars().take(16).collect::<String>(),
            s(&r["path"]),
        );
    }
    println!("issue permits for the rows that should run (`authz-agent artifact issue`), then `authz-agent mode enforce`");
    Ok(ExitCode::SUCCESS)
}

pub fn unload(args: UnloadArgs) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "unload removes the pins under {} directly and needs root on this host (admin_group does not grant it)",
            args.pin_dir.display()
        );
    }
    if std::os::unix::net::UnixStream::connect(&args.socket).is_ok() {
        bail!(
            "an agent is running on {}: stop it first (`systemctl stop authz-agent`); unloading removes enforcement",
            args.socket.display()
        );
    }
    if crate::enforcer::pin::unload(&args.pin_dir)? {
        println!(
            "unloaded: authz no longer enforces on this host (pins under {} removed)",
            args.pin_dir.display()
        );
    } else {
        println!("nothing pinned under {}", args.pin_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
