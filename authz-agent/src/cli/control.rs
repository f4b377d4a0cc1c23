//! `submit`, `list`, `revoke`, `status`, `mode`, `report`: requests to the
//! running agent over its control socket; and `unload`, which removes the
//! agent's pins directly (it is not a socket request).
//!
//! Each answer is rendered for people by one small function per command,
//! taking the result the agent sent (`render_*`); `--json` prints that result
//! as it is.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::output::Output;
use crate::{
    control::{
        client::{call_as, ClientError},
        protocol::{
            ListResult, ModeResult, PermitState, ReportResult, Request, RevokeAllResult,
            RevokeResult, StatusResult, SubmitResult,
        },
    },
    defaults,
    enforcer::Mode,
    vocab::text::{self, Kind},
};
use anyhow::{bail, Context as _};

/// Options every socket command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArgs {
    /// The agent's control socket (the config's `[agent] socket`).
    #[arg(long, env = "AUTHZ_SOCKET", default_value = defaults::SOCKET, global = true)]
    pub socket: PathBuf,
    /// Print the agent's answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

impl SocketArgs {
    pub(super) fn output(&self) -> Output {
        Output::json_if(self.json)
    }
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
    /// The bpffs directory the agent pins its state in (the config's
    /// `[agent] pin_dir`).
    #[arg(long, default_value = defaults::PIN_DIR)]
    pub pin_dir: PathBuf,
    /// The control socket, to check that no agent is running.
    #[arg(long, default_value = defaults::SOCKET)]
    pub socket: PathBuf,
    /// Under lockdown: an `unlock` statement signed by a trust root for this
    /// host (`authz-agent lockdown statement --action unlock`).
    #[arg(long, value_name = "FILE")]
    pub statement: Option<PathBuf>,
}

/// Sends `request` and returns its result as the request's result type.
pub(super) fn ask<T: serde::de::DeserializeOwned>(
    args: &SocketArgs,
    request: &Request,
) -> anyhow::Result<T> {
    call_as(&args.socket, request).map_err(|e| match &e {
        ClientError::Refused { kind, message } => anyhow::anyhow!("{message} [{kind}]"),
        _ => anyhow::Error::new(e),
    })
}

/// An optional field as text, `-` when absent.
fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
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

/// Runs `authz-agent submit`: each file in turn; exits 1 if any was refused.
pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for file in &args.files {
        let result = read_artifact(file).and_then(|text| {
            if text::kind_of(&text) == Some(Kind::Revocations) {
                return super::revocations::submit(&args.socket, file, text);
            }
            let v =
                call_as::<SubmitResult>(&args.socket.socket, &Request::Submit { artifact: text })
                    .map_err(anyhow::Error::new)?;
            args.socket.output().print(&v, |v| render_submit(file, v))
        });
        match result {
            Ok(()) => {}
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

fn render_submit(file: &Path, v: &SubmitResult) -> String {
    let again = if v.already_accepted {
        " (already accepted)"
    } else {
        ""
    };
    let from = if v.state == PermitState::Scheduled {
        format!(" from {}", opt(&v.not_before))
    } else {
        String::new()
    };
    format!(
        "accepted {}: {} in {}{from} until {}{again}\n",
        file.display(),
        v.state.as_str(),
        opt(&v.cgroup),
        opt(&v.expires),
    )
}

/// Runs `authz-agent list`.
pub fn list(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let v: ListResult = ask(&args.socket, &Request::List {})?;
    args.socket.output().print(&v, render_list)?;
    Ok(ExitCode::SUCCESS)
}

fn render_list(v: &ListResult) -> String {
    let mut out = String::new();
    // FROM and EXPIRES: the effective window (the permit's own narrowed by
    // its delegation chain); `--json` also gives the permit's own.
    let _ = writeln!(
        out,
        "{:<32}  {:<18}  {:<24}  {:<20}  {:<20}  {:<16}  REQUESTED BY",
        "ID", "STATE", "CGROUP", "FROM", "EXPIRES", "DIGEST"
    );
    for p in &v.permits {
        let cgroup = format!("{}{}", p.cgroup, if p.descendants { "/**" } else { "" });
        let _ = writeln!(
            out,
            "{:<32}  {:<18}  {:<24}  {:<20}  {:<20}  {:<16}  {}",
            p.id,
            p.state.as_str(),
            cgroup,
            p.not_before,
            p.expires,
            p.digest.chars().take(16).collect::<String>(),
            opt(&p.requested_by),
        );
    }
    let _ = writeln!(
        out,
        "{} artifacts; {} revoked ids on record",
        v.permits.len(),
        v.revoked
    );
    out
}

/// Runs `authz-agent revoke`.
pub fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    if args.all {
        let request = Request::RevokeAll {
            reason: args.reason,
        };
        let v: RevokeAllResult = ask(&args.socket, &request)?;
        args.socket.output().print(&v, render_revoke_all)?;
    } else {
        let request = Request::Revoke {
            id: args.id.unwrap_or_default(),
            reason: args.reason,
        };
        let v: RevokeResult = ask(&args.socket, &request)?;
        args.socket.output().print(&v, render_revoke)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render_revoke_all(v: &RevokeAllResult) -> String {
    format!(
        "revoked {} artifacts; flushed {} kernel permits\n",
        v.revoked, v.flushed
    )
}

fn render_revoke(v: &RevokeResult) -> String {
    if v.already_revoked {
        format!("{} was already revoked\n", v.id)
    } else if !v.known {
        format!(
            "revoked {} (no accepted artifact has it now; it can never be submitted)\n",
            v.id
        )
    } else {
        format!(
            "revoked {}: {} artifact(s) removed from the kernel\n",
            v.id, v.removed
        )
    }
}

/// Runs `authz-agent status`.
pub fn status(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let v: StatusResult = ask(&args.socket, &Request::Status {})?;
    args.socket.output().print(&v, render_status)?;
    Ok(ExitCode::SUCCESS)
}

fn render_status(v: &StatusResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mode:            {}", v.mode);
    let scope = if v.enforced_cgroups.is_empty() {
        v.scope.clone()
    } else {
        format!("{} ({})", v.scope, v.enforced_cgroups.join(", "))
    };
    let _ = writeln!(out, "scope:           {scope}");
    let _ = writeln!(out, "libraries:       {}", v.libraries);
    let _ = writeln!(out, "exec memory:     {}", v.exec_memory);
    let _ = writeln!(
        out,
        "lockdown:        {}",
        if v.lockdown { "on" } else { "off" }
    );
    let _ = writeln!(
        out,
        "kernel:          {} (BPF LSM {}; IMA policy {})",
        v.kernel.release,
        v.bpf_lsm,
        if v.kernel.ima.active {
            "active"
        } else {
            "none"
        }
    );
    let permits: Vec<String> = v
        .permits
        .iter()
        .map(|(state, n)| format!("{} {n}", state.as_str()))
        .collect();
    let _ = writeln!(out, "permits:         {}", permits.join(", "));
    let _ = writeln!(out, "kernel entries:  {}", v.kernel_permit_entries);
    let _ = writeln!(out, "revoked ids:     {}", v.revoked);
    let _ = writeln!(out, "policy version:  {}", v.policy_version);
    let _ = writeln!(
        out,
        "events:          {} received, {} dropped by the kernel",
        v.events_received,
        v.events_dropped.map_or("-".into(), |n| n.to_string())
    );
    let _ = writeln!(
        out,
        "uptime:          {}s (pinned state adopted: {})",
        v.uptime_seconds, v.pinned_state_adopted
    );
    if let Some(c) = &v.counters {
        let _ = writeln!(out, "counters:");
        for (k, n) in c {
            let _ = writeln!(out, "  {k:<28} {n}");
        }
    }
    out
}

/// Runs `authz-agent mode`.
pub fn set_mode(args: ModeArgs) -> anyhow::Result<ExitCode> {
    let v: ModeResult = ask(&args.socket, &Request::SetMode { mode: args.mode })?;
    args.socket.output().print(&v, render_mode)?;
    Ok(ExitCode::SUCCESS)
}

fn render_mode(v: &ModeResult) -> String {
    format!("mode: {} (was {})\n", v.mode, v.previous)
}

/// Runs `authz-agent report`.
pub fn report(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let v: ReportResult = ask(&args.socket, &Request::Report {})?;
    args.socket.output().print(&v, render_report)?;
    Ok(ExitCode::SUCCESS)
}

fn render_report(v: &ReportResult) -> String {
    if v.rows.is_empty() {
        return "no exec was refused or would have been refused since the agent started\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<10}  {:<20}  {:<24}  {:<16}  PATH",
        "COUNT", "DECISION", "REASON", "CGROUP", "DIGEST"
    );
    for r in &v.rows {
        let _ = writeln!(
            out,
            "{:>6}  {:<10}  {:<20}  {:<24}  {:<16}  {}",
            r.count,
            r.decision,
            r.reason,
            opt(&r.cgroup),
            opt(&r.digest).chars().take(16).collect::<String>(),
            r.path,
        );
    }
    let _ = writeln!(out, "issue permits for the rows that should run (`authz-agent artifact issue`, `--with-libraries` for programs' libraries), then `authz-agent mode enforce`");
    out
}

/// Runs `authz-agent unload`.
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
    // Under lockdown the kernel lets this binary at the pins (it is agent
    // code), so the refusal is this code's: nothing is removed without a
    // valid signed unlock.
    let locked = crate::enforcer::pinned_lockdown(&args.pin_dir).with_context(|| {
        format!(
            "cannot read whether the state pinned under {} is locked down; nothing removed",
            args.pin_dir.display()
        )
    })?;
    if let Some(guard) = locked {
        let Some(path) = &args.statement else {
            bail!(crate::lockdown::LockError::Locked("unload"));
        };
        let statement = crate::daemon::lockdown::read_statement(path)?;
        crate::lockdown::check_statement(
            &statement,
            crate::vocab::statement::Action::Unlock,
            &guard,
            crate::vocab::time::Timestamp::now(),
        )
        .with_context(|| format!("{} does not unlock this host", path.display()))?;
        eprintln!(
            "lockdown ended by statement {} (signed by {})",
            statement.claim().id,
            statement.issuer()
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_render_as_before() {
        let v: SubmitResult = serde_json::from_value(json!({"id": "ab", "state": "scheduled", "cgroup": "/jobs/a", "not_before": "2030-01-01T00:00:00Z",
                       "expires": "2030-01-02T00:00:00Z", "already_accepted": true})).unwrap();
        assert_eq!(
            render_submit(Path::new("a.permit"), &v),
            "accepted a.permit: scheduled in /jobs/a from 2030-01-01T00:00:00Z until 2030-01-02T00:00:00Z (already accepted)\n"
        );
        let r: RevokeResult =
            serde_json::from_value(json!({"id": "ab", "removed": 0, "known": false})).unwrap();
        assert_eq!(
            render_revoke(&r),
            "revoked ab (no accepted artifact has it now; it can never be submitted)\n"
        );
        let m: ModeResult =
            serde_json::from_value(json!({"mode": "enforce", "previous": "audit"})).unwrap();
        assert_eq!(render_mode(&m), "mode: enforce (was audit)\n");
        let report: ReportResult =
            serde_json::from_value(json!({"rows": [], "not_shown": 0})).unwrap();
        assert!(render_report(&report).starts_with("no exec was refused"));
        let entry = json!({"id": "ab", "state": "live", "digest": "00", "cgroup": "/j", "cgroup_id": null,
            "descendants": true, "not_before": "x", "expires": "y",
            "permit_validity": {"not_before": "x", "expires": "y"}, "issuer": "k", "chain": [],
            "policy_version": 1, "requested_by": null, "on_behalf_of": null, "reason": null,
            "subject_path": null, "subject_name": null});
        let list: ListResult =
            serde_json::from_value(json!({"permits": [entry], "revoked": 3})).unwrap();
        let list = render_list(&list);
        assert!(
            list.contains("/j/**") && list.ends_with("1 artifacts; 3 revoked ids on record\n"),
            "{list}"
        );
    }
}
