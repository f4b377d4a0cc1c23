//! `authz-agent why PATH [--cgroup C | --pid P]`: asks the running agent
//! whether a binary would run there, and why.
use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use super::{
    control::{ask, SocketArgs},
    exit::Exit,
    output::Output,
};
use crate::control::protocol::{Request, WhyResult};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("where").args(["cgroup", "pid"])))]
pub struct WhyArgs {
    /// The binary (a path; it is resolved here and read by the agent).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The cgroup v2 path to ask about, e.g. /jobs.slice/build.
    #[arg(long, value_name = "CGROUP")]
    pub cgroup: Option<String>,
    /// Ask about the cgroup this process runs in.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Runs `authz-agent why`: exit 0 when it would run, 3 (`refused`) when not.
pub fn run(args: WhyArgs) -> anyhow::Result<ExitCode> {
    let path = std::path::absolute(&args.path)
        .with_context(|| format!("cannot resolve {}", args.path.display()))?;
    // Neither given: the cgroup of this command's own process is the
    // caller's (the agent reads it from our pid).
    let request = Request::Why {
        path: path.to_string_lossy().into_owned(),
        cgroup: args.cgroup.clone(),
        pid: args.pid,
    };
    let v: WhyResult = ask(&args.socket, &request)?;
    Output::json_if(args.socket.json).print(&v, render)?;
    Ok(if v.decision == "allow" {
        ExitCode::SUCCESS
    } else {
        Exit::Refused.exit_code()
    })
}

fn render(v: &WhyResult) -> String {
    let mut out = String::new();
    let verdict = match v.decision.as_str() {
        "allow" => "ALLOWED",
        "audit-deny" => "WOULD BE REFUSED (audit mode lets it run)",
        _ => "REFUSED",
    };
    let _ = writeln!(out, "{verdict}: {} ({})", v.explanation, v.reason);
    let _ = writeln!(out, "path:        {}", v.path);
    let _ = writeln!(
        out,
        "sha256:      {}",
        v.digest.as_deref().unwrap_or("- (could not be read)")
    );
    let id = v
        .cgroup_id
        .map_or_else(|| "does not exist".into(), |id| format!("id {id}"));
    let scope = if v.in_scope {
        "enforced"
    } else {
        "not enforced"
    };
    let _ = writeln!(out, "cgroup:      {} ({id}; {scope})", v.cgroup);
    let _ = writeln!(out, "mode:        {}", v.mode);
    if let Some(fs) = &v.filesystem {
        let _ = writeln!(out, "filesystem:  {fs}");
    }
    if let Some(p) = &v.permit {
        let below = if p.descendants { " and below" } else { "" };
        let _ = writeln!(
            out,
            "permit:      {} ({}) for {}{below}, from {} until {}",
            p.id,
            p.state.as_str(),
            p.cgroup,
            p.not_before,
            p.expires
        );
        if let Some(by) = &p.requested_by {
            let _ = writeln!(out, "requested by: {by}");
        }
    }
    for p in &v.elsewhere {
        let below = if p.descendants { "/**" } else { "" };
        let _ = writeln!(
            out,
            "elsewhere:   {} for {}{below} until {}",
            p.id, p.cgroup, p.expires
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_render_their_verdict_and_permit() {
        let v: WhyResult = serde_json::from_value(json!({
            "path": "/usr/bin/make", "digest": "ab", "cgroup": "/jobs/a", "cgroup_id": 7,
            "mode": "enforce", "in_scope": true, "decision": "allow", "reason": "permit-inherited",
            "explanation": "permit 01 allows it here until 2030-01-01T00:00:00Z",
            "permit": {"id": "01", "state": "live", "cgroup": "/jobs", "descendants": true,
                       "not_before": "2029-01-01T00:00:00Z", "expires": "2030-01-01T00:00:00Z"},
            "filesystem": "ext4",
        }))
        .unwrap();
        let text = render(&v);
        assert!(text.starts_with("ALLOWED: permit 01"), "{text}");
        assert!(text.contains("for /jobs and below, from 2029"), "{text}");
        assert!(text.contains("(id 7; enforced)"), "{text}");
        let refused = WhyResult {
            decision: "deny".into(),
            reason: "no-permit".into(),
            permit: None,
            digest: None,
            ..v
        };
        let text = render(&refused);
        assert!(
            text.starts_with("REFUSED:") && text.contains("could not be read"),
            "{text}"
        );
    }
}
