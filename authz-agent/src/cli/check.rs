//! `authz-agent check`: can this host enforce, and which cgroups are
//! delegated to users who could move processes around enforcement.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;

use super::{output::Output, readable_config};
use crate::{
    artifact::Artifact,
    cgroup_writers::{self, Finding},
    config::Config,
    defaults,
    enforcer::{self, Enforcer, KernelSupport, LoadOptions, Mode},
    store::Store,
};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where cgroup v2 is mounted (the config's `cgroup_root` when one is read).
    #[arg(long, default_value = defaults::CGROUP_ROOT)]
    pub cgroup_root: PathBuf,
    /// The agent's configuration, to name delegated cgroups: those on the way
    /// to its enforced subtrees and to the cgroups its stored permits name
    /// that a non-root user can write. Default: /etc/authz/agent.toml if it
    /// exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs `authz-agent check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions {
        mode: Mode::Off,
        selftest: false,
        cgroup_root: args.cgroup_root.clone(),
        ..LoadOptions::default()
    };
    let mut enforcer = Enforcer::load(&opts).context("authz cannot enforce on this host")?;
    let report = enforcer::selftest::run(&mut enforcer, &args.cgroup_root)
        .context("authz cannot enforce on this host")?;
    let kernel = enforcer.kernel().clone();
    let delegated = delegated_cgroups(args.config.as_deref())?;
    let result = serde_json::json!({
        "ok": true,
        "kernel": kernel,
        "selftest": report,
        "config": delegated.as_ref().map(|(config, _)| config),
        "delegated_cgroups": delegated.as_ref().map(|(_, findings)| findings),
    });
    Output::json_if(args.json).print(&result, |_| {
        render(&kernel, &report.digest, delegated.as_ref())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn render(
    kernel: &KernelSupport,
    digest: &str,
    delegated: Option<&(PathBuf, Vec<Finding>)>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel:      {}", kernel.release);
    let _ = writeln!(out, "active LSMs: {}", kernel.active_lsms.join(","));
    let _ = writeln!(
        out,
        "BPF LSM:     program loaded and attached to bprm_check_security"
    );
    let _ = writeln!(
        out,
        "self-test:   probe exec refused with EPERM; in-kernel SHA-256 {digest} matches"
    );
    match delegated {
        None => {
            let _ = writeln!(out, "delegation:  not checked (no config; pass --config)");
        }
        Some((config, findings)) if findings.is_empty() => {
            let _ = writeln!(
                out,
                "delegation:  no cgroup on the way to what {} enforces or permits is writable by a non-root user",
                config.display()
            );
        }
        Some((_, findings)) => {
            for f in findings {
                let _ = writeln!(out, "warning:     {}", f.sentence);
            }
        }
    }
    let _ = writeln!(out, "result:      authz can enforce on this host");
    out
}

/// The config `check` reads (the default one only if it exists), and what
/// [`cgroup_writers::audit`] finds on the way to the cgroups it enforces and
/// its stored permits name.
fn delegated_cgroups(config: Option<&Path>) -> anyhow::Result<Option<(PathBuf, Vec<Finding>)>> {
    let Some(path) = readable_config(config) else {
        return Ok(None);
    };
    let config = Config::load(&path)?;
    let a = &config.agent;
    let stored = Store::at(&a.state_dir)
        .artifacts_read_only()
        .unwrap_or_default();
    let permitted: BTreeSet<String> = stored
        .into_iter()
        .flatten()
        .filter_map(|s| Artifact::parse(&s.text).ok())
        .map(|artifact| artifact.scope.cgroup.to_string())
        .collect();
    let permitted: Vec<String> = permitted.into_iter().collect();
    let findings = cgroup_writers::audit(&a.cgroup_root, &a.enforce_cgroups, &permitted);
    Ok(Some((path, findings)))
}
