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
    time::SystemTime,
};

use super::{
    exit::{self, Exit},
    output::Output,
};
use crate::{
    control::{
        client::{call_as, ClientError},
        protocol::{
            ListResult, MetricsFormat, MetricsResult, ModeResult, PermitState, ReportResult,
            Request, RevokeAllResult, RevokeResult, StatusResult, SubmitResult,
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
    /// Artifact files (from `authz-agent artifact issue`); `-` reads one
    /// from standard input.
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

/// `list`
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// For people.
    Text,
    /// The `status` result as JSON (as `--json`).
    Json,
    /// Every counter, gauge and histogram, as OpenMetrics text.
    Openmetrics,
    /// The same in the Prometheus text format 0.0.4 (node_exporter's
    /// textfile format).
    Prometheus,
}

/// `status`
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// What to print: `openmetrics` gives every metric the agent has (the
    /// same as the `[metrics] textfile`).
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatusFormat,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `report`
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Read the decision log from this time on (RFC 3339, e.g.
    /// 2026-11-25T00:00:00Z, or a duration ago, e.g. 24h): the report then
    /// spans agent restarts. Default: since this agent started.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
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
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sends `request` and returns its result as the request's result type.
/// (A refusal keeps its kind: the exit status and `--json` use it.)
pub(super) fn ask<T: serde::de::DeserializeOwned>(
    args: &SocketArgs,
    request: &Request,
) -> anyhow::Result<T> {
    Ok(call_as(&args.socket, request)?)
}

/// An optional field as text, `-` when absent.
fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Reads an artifact file (`-`: standard input), refusing oversized ones
/// before reading them.
fn read_artifact(path: &Path) -> anyhow::Result<String> {
    if path == Path::new(STDIN) {
        return read_bounded(std::io::stdin().lock(), "standard input");
    }
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

/// The file name that means standard input.
const STDIN: &str = "-";

/// Reads at most one artifact's worth from `input`, refusing more.
fn read_bounded(input: impl std::io::Read, what: &str) -> anyhow::Result<String> {
    use std::io::Read as _;
    let limit = crate::store::MAX_ARTIFACT_BYTES;
    let mut text = String::new();
    input
        .take(limit + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {what}"))?;
    if text.len() as u64 > limit {
        return Err(exit::error(
            Exit::Refused,
            format!("{what} holds more than {limit} bytes; an artifact is at most {limit} bytes"),
        ));
    }
    Ok(text)
}

/// Submits one artifact's text to the agent.
pub(super) fn submit_text(socket: &Path, text: String) -> Result<SubmitResult, ClientError> {
    call_as::<SubmitResult>(socket, &Request::Submit { artifact: text })
}

/// Runs `authz-agent submit`: each file in turn. Exits 0 when all were
/// accepted; otherwise with the status of the worst failure (see
/// [`super::exit`]), each refusal named on standard error.
pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    if args
        .files
        .iter()
        .filter(|f| f.as_path() == Path::new(STDIN))
        .count()
        > 1
    {
        return Err(exit::error(
            Exit::Usage,
            "`-` (standard input) may be given once",
        ));
    }
    let mut worst = Exit::Success;
    let mut results = Vec::new();
    for file in &args.files {
        let result = read_artifact(file).and_then(|text| {
            if text::kind_of(&text) == Some(Kind::Revocations) {
                super::revocations::submit(&args.socket, file, text)?;
                return Ok(None);
            }
            Ok(Some(submit_text(&args.socket.socket, text)?))
        });
        match result {
            Ok(None) => {}
            Ok(Some(v)) => {
                if !args.socket.json {
                    print!("{}", render_submit(file, &v));
                }
                results.push(SubmitOutcome::accepted(file, v));
            }
            Err(e) => {
                let status = Exit::of_error(&e);
                worst = worst.max(status);
                eprintln!("refused {}: {e:#}", file.display());
                results.push(SubmitOutcome::refused(file, &e));
            }
        }
    }
    if args.socket.json {
        // One object per file, in order: the agent's result or the error.
        Output::Json.print(&results, |_| String::new())?;
    }
    Ok(worst.exit_code())
}

/// `submit --json`: what became of one file.
#[derive(Debug, serde::Serialize)]
struct SubmitOutcome {
    file: PathBuf,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<SubmitResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<exit::ErrorReport>,
}

impl SubmitOutcome {
    fn accepted(file: &Path, v: SubmitResult) -> Self {
        Self {
            file: file.to_owned(),
            ok: true,
            result: Some(v),
            error: None,
        }
    }

    fn refused(file: &Path, e: &anyhow::Error) -> Self {
        Self {
            file: file.to_owned(),
            ok: false,
            result: None,
            error: Some(exit::ErrorReport::new(e)),
        }
    }
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
    if let Some(inbox) = &v.inbox {
        render_inbox(&mut out, inbox);
    }
    out
}

/// The inbox part of `list`: a count per outcome, then every file that is
/// not held or applied, with why.
fn render_inbox(out: &mut String, inbox: &crate::control::protocol::InboxStatus) {
    use crate::control::protocol::InboxOutcome as O;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for f in &inbox.files {
        *counts.entry(f.outcome.as_str()).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {o}")).collect();
    let _ = writeln!(
        out,
        "\ninbox {}: {} files{}{}",
        inbox.dir,
        inbox.files.len(),
        if summary.is_empty() { "" } else { ": " },
        summary.join(", ")
    );
    for f in inbox.files.iter().filter(|f| {
        !matches!(
            f.outcome,
            O::Accepted | O::AlreadyHeld | O::Applied | O::AlreadyApplied
        )
    }) {
        let _ = writeln!(
            out,
            "  {:<32}  {:<8}  {}{}",
            f.name,
            f.outcome.as_str(),
            f.error.map(|k| format!("[{k}] ")).unwrap_or_default(),
            f.message.as_deref().unwrap_or("")
        );
    }
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
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let format = match (args.format, args.socket.json) {
        (StatusFormat::Text, true) => StatusFormat::Json,
        (f, _) => f,
    };
    let metrics = match format {
        StatusFormat::Text | StatusFormat::Json => None,
        StatusFormat::Openmetrics => Some(MetricsFormat::Openmetrics),
        StatusFormat::Prometheus => Some(MetricsFormat::Prometheus),
    };
    if let Some(format) = metrics {
        let v: MetricsResult = ask(&args.socket, &Request::Metrics { format })?;
        print!("{}", v.text);
        return Ok(ExitCode::SUCCESS);
    }
    let v: StatusResult = ask(&args.socket, &Request::Status {})?;
    Output::json_if(format == StatusFormat::Json).print(&v, render_status)?;
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
pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|s| since_time(s, SystemTime::now()))
        .transpose()?;
    let v: ReportResult = ask(&args.socket, &Request::Report { since })?;
    args.socket.output().print(&v, render_report)?;
    Ok(ExitCode::SUCCESS)
}

/// `--since`: an RFC 3339 time, or a duration before `now`; as RFC 3339.
fn since_time(s: &str, now: SystemTime) -> anyhow::Result<String> {
    let at = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let ago = humantime::parse_duration(s).map_err(|_| {
                exit::error(
                    Exit::Usage,
                    format!("--since {s:?} is neither an RFC 3339 time (2026-11-25T00:00:00Z) nor a duration (24h)"),
                )
            })?;
            now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH)
        }
    };
    Ok(humantime::format_rfc3339_seconds(at).to_string())
}

fn render_report(v: &ReportResult) -> String {
    if v.rows.is_empty() {
        return match &v.since {
            Some(since) => format!(
                "no exec was refused or would have been refused since {since} ({} decision-log records read)\n",
                v.records_read.unwrap_or(0)
            ),
            None => "no exec was refused or would have been refused since the agent started\n".into(),
        };
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
        return Err(exit::error(
            Exit::PermissionDenied,
            format!(
                "unload removes the pins under {} directly and needs root on this host (admin_group does not grant it)",
                args.pin_dir.display()
            ),
        ));
    }
    if std::os::unix::net::UnixStream::connect(&args.socket).is_ok() {
        return Err(exit::error(
            Exit::Refused,
            format!(
                "an agent is running on {}: stop it first (`systemctl stop authz-agent`); unloading removes enforcement",
                args.socket.display()
            ),
        ));
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
            return Err(exit::error(
                Exit::Refused,
                crate::lockdown::LockError::Locked("unload").to_string(),
            ));
        };
        let statement = crate::daemon::lockdown::read_statement(path)?;
        crate::lockdown::check_statement(
            &statement,
            crate::vocab::statement::Action::Unlock,
            &guard,
            crate::vocab::time::Timestamp::now(),
        )
        .map_err(|e| {
            exit::error(
                Exit::Refused,
                format!("{} does not unlock this host: {e}", path.display()),
            )
        })?;
        eprintln!(
            "lockdown ended by statement {} (signed by {})",
            statement.claim().id,
            statement.issuer()
        );
    }
    let unloaded = crate::enforcer::pin::unload(&args.pin_dir)?;
    let result = UnloadResult {
        pin_dir: args.pin_dir.clone(),
        unloaded,
    };
    Output::json_if(args.json).print(&result, |r| {
        if r.unloaded {
            format!(
                "unloaded: authz no longer enforces on this host (pins under {} removed)\n",
                r.pin_dir.display()
            )
        } else {
            format!("nothing pinned under {}\n", r.pin_dir.display())
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `unload --json`.
#[derive(Debug, serde::Serialize)]
struct UnloadResult {
    pin_dir: PathBuf,
    /// Pins were there and are removed.
    unloaded: bool,
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
