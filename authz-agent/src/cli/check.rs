//! `authz-agent check`: can this host enforce — each requirement with ok or
//! missing and the fix, none stopping the others — and which cgroups are
//! delegated to users who could move processes around enforcement.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde::Serialize;

use super::{exit::Exit, output::Output, readable_config};
use crate::{
    artifact::Artifact,
    cgroup_writers::{self, Finding},
    config::Config,
    defaults,
    enforcer::{self, btf::VMLINUX_BTF, preflight, Enforcer, KernelSupport, LoadOptions, Mode},
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

/// How one requirement stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Missing,
    /// Not tried: a requirement it depends on is missing.
    Skipped,
}

/// One thing authz needs of the host, and whether it has it.
#[derive(Clone, Debug, Serialize)]
pub struct Requirement {
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do when it is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Requirement {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn missing(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Missing,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn skipped(name: &'static str, because: &str) -> Self {
        Self {
            name,
            status: Status::Skipped,
            detail: format!("not tried: {because}"),
            fix: None,
        }
    }

    fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// `CGROUP2_SUPER_MAGIC` and `BPF_FS_MAGIC` (include/uapi/linux/magic.h).
const CGROUP2_MAGIC: i64 = 0x6367_7270;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where securityfs shows IMA when the kernel has it (CONFIG_IMA).
const IMA_DIR: &str = "/sys/kernel/security/ima";

/// What `check` found.
#[derive(Debug, Serialize)]
pub struct CheckResult {
    /// Every requirement is met: authz can enforce here.
    pub ok: bool,
    pub requirements: Vec<Requirement>,
    pub kernel: Option<KernelSupport>,
    pub config: Option<PathBuf>,
    pub delegated_cgroups: Option<Vec<Finding>>,
}

// `f_type` is an i64 on x86_64 but narrower on other architectures.
#[allow(clippy::unnecessary_cast)]
fn statfs_magic(path: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(path)
        .ok()
        .map(|s| s.filesystem_type().0 as i64)
}

/// Every requirement that can be checked without loading a program, each
/// on its own (none stops the others).
pub fn host_requirements(cgroup_root: &Path) -> Vec<Requirement> {
    let mut out = Vec::new();
    let euid = nix::unistd::geteuid();
    out.push(if euid.is_root() {
        Requirement::ok("root", "running as root")
    } else {
        Requirement::missing(
            "root",
            format!("effective uid {euid}"),
            "run `authz-agent check` (and the agent) as root: loading BPF LSM programs needs it",
        )
    });
    let release = preflight::kernel_release();
    let (major, minor) = preflight::MIN_KERNEL;
    out.push(match preflight::parse_release(&release) {
        Some(v) if v >= preflight::MIN_KERNEL => {
            Requirement::ok("kernel version", format!("{release} (>= {major}.{minor})"))
        }
        Some(_) => Requirement::missing(
            "kernel version",
            format!("{release} (< {major}.{minor})"),
            format!("boot Linux >= {major}.{minor} (sleepable BPF LSM programs with bpf_ima_file_hash); Debian 12's kernel qualifies"),
        ),
        None => Requirement::ok("kernel version", format!("{release} (version not parsed; assumed recent)")),
    });
    out.push(match preflight::read_lsm_list() {
        Ok(list) => {
            let list = list.trim().to_owned();
            if list.split(',').any(|l| l == "bpf") {
                Requirement::ok(
                    "BPF LSM active",
                    format!("{} lists {list}", preflight::LSM_LIST),
                )
            } else {
                Requirement::missing(
                    "BPF LSM active",
                    format!("{} lists {list}, without bpf", preflight::LSM_LIST),
                    format!("build the kernel with CONFIG_BPF_LSM=y and boot with lsm={list},bpf"),
                )
            }
        }
        Err(e) => Requirement::missing(
            "BPF LSM active",
            format!("cannot read {}: {e}", preflight::LSM_LIST),
            "mount securityfs (mount -t securityfs securityfs /sys/kernel/security), as root",
        ),
    });
    out.push(if Path::new(VMLINUX_BTF).exists() {
        Requirement::ok("BTF", format!("{VMLINUX_BTF} present"))
    } else {
        Requirement::missing(
            "BTF",
            format!("{VMLINUX_BTF} missing"),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (authz reads struct layouts from it)",
        )
    });
    out.push(if Path::new(IMA_DIR).is_dir() {
        let ima = preflight::ImaPolicy::detect();
        let policy = match (&ima.boot_policy, ima.active) {
            (Some(p), _) => format!("measuring ({p})"),
            (None, true) => "measuring (a loaded policy)".to_owned(),
            (None, false) => "no measurement policy: the kernel hashes each exec itself".to_owned(),
        };
        Requirement::ok("IMA", format!("{IMA_DIR} present; {policy}"))
    } else {
        Requirement::missing(
            "IMA",
            format!("{IMA_DIR} missing"),
            "use a kernel built with CONFIG_IMA=y: bpf_ima_file_hash is how the kernel hashes what it executes",
        )
    });
    let controllers = cgroup_root.join("cgroup.controllers");
    out.push(if statfs_magic(cgroup_root) == Some(CGROUP2_MAGIC) {
        Requirement::ok("cgroup v2", format!("mounted at {}", cgroup_root.display()))
    } else {
        Requirement::missing(
            "cgroup v2",
            format!(
                "{} is not a cgroup v2 mount ({} {})",
                cgroup_root.display(),
                controllers.display(),
                if controllers.exists() { "exists" } else { "missing" }
            ),
            format!("mount cgroup v2 (mount -t cgroup2 none {}; systemd: systemd.unified_cgroup_hierarchy=1)", cgroup_root.display()),
        )
    });
    let bpffs = Path::new(preflight::BPFFS);
    out.push(if statfs_magic(bpffs) == Some(BPF_FS_MAGIC) {
        Requirement::ok("bpffs", format!("mounted at {}", bpffs.display()))
    } else {
        Requirement::missing(
            "bpffs",
            format!("no bpf filesystem at {}", bpffs.display()),
            format!("mount -t bpf bpf {} (the agent mounts it when it can; pins keep enforcement across restarts)", bpffs.display()),
        )
    });
    out
}

/// Runs `authz-agent check`: every requirement, then (when the kernel ones
/// hold) a program load and the self-test. Exits 0 when all hold; 5 when the
/// only thing missing is root; 1 otherwise.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut requirements = host_requirements(&args.cgroup_root);
    let needed = [
        "root",
        "kernel version",
        "BPF LSM active",
        "BTF",
        "cgroup v2",
    ];
    let blocking: Vec<&str> = requirements
        .iter()
        .filter(|r| !r.is_ok() && needed.contains(&r.name))
        .map(|r| r.name)
        .collect();
    let mut kernel = None;
    if blocking.is_empty() {
        let opts = LoadOptions {
            mode: Mode::Off,
            selftest: false,
            cgroup_root: args.cgroup_root.clone(),
            ..LoadOptions::default()
        };
        match Enforcer::load(&opts) {
            Ok(mut enforcer) => {
                requirements.push(Requirement::ok(
                    "program load",
                    "the verifier accepted every program; attached in mode off",
                ));
                kernel = Some(enforcer.kernel().clone());
                requirements.push(
                    match enforcer::selftest::run(&mut enforcer, &args.cgroup_root) {
                        Ok(report) => Requirement::ok(
                            "self-test",
                            format!("probe exec refused with EPERM; in-kernel SHA-256 {} matches", report.digest),
                        ),
                        Err(e) => Requirement::missing(
                            "self-test",
                            format!("{:#}", anyhow::Error::new(e)),
                            "the hook does not refuse as it must on this kernel: report it with the output of `authz-agent check --json`",
                        ),
                    },
                );
            }
            Err(e) => {
                requirements.push(Requirement::missing(
                    "program load",
                    format!("{:#}", anyhow::Error::new(e)),
                    preflight::VM_HINT,
                ));
                requirements.push(Requirement::skipped(
                    "self-test",
                    "the programs did not load",
                ));
            }
        }
    } else {
        let because = format!("{} missing", blocking.join(", "));
        requirements.push(Requirement::skipped("program load", &because));
        requirements.push(Requirement::skipped("self-test", &because));
    }
    let delegated = delegated_cgroups(args.config.as_deref())?;
    let ok = requirements.iter().all(Requirement::is_ok);
    let result = CheckResult {
        ok,
        requirements,
        kernel,
        config: delegated.as_ref().map(|(config, _)| config.clone()),
        delegated_cgroups: delegated.map(|(_, findings)| findings),
    };
    Output::json_if(args.json).print(&result, render)?;
    let missing: Vec<&str> = result
        .requirements
        .iter()
        .filter(|r| r.status == Status::Missing)
        .map(|r| r.name)
        .collect();
    if !ok {
        let why: Vec<String> = result
            .requirements
            .iter()
            .filter(|r| r.status == Status::Missing)
            .map(|r| format!("{}: {}", r.name, r.detail))
            .collect();
        eprintln!(
            "authz-agent: error: authz cannot enforce on this host: {}",
            why.join("; ")
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else if missing == ["root"] {
        Exit::PermissionDenied.exit_code()
    } else {
        Exit::Failure.exit_code()
    })
}

fn render(r: &CheckResult) -> String {
    let mut out = String::new();
    for req in &r.requirements {
        let status = match req.status {
            Status::Ok => "ok",
            Status::Missing => "MISSING",
            Status::Skipped => "skipped",
        };
        let _ = writeln!(out, "{status:<8} {:<15} {}", req.name, req.detail);
        if let Some(fix) = &req.fix {
            let _ = writeln!(out, "{:<8} {:<15} fix: {fix}", "", "");
        }
    }
    match (&r.config, &r.delegated_cgroups) {
        (Some(config), Some(findings)) if findings.is_empty() => {
            let _ = writeln!(
                out,
                "delegation:  no cgroup on the way to what {} enforces or permits is writable by a non-root user",
                config.display()
            );
        }
        (_, Some(findings)) => {
            for f in findings {
                let _ = writeln!(out, "warning:     {}", f.sentence);
            }
        }
        _ => {
            let _ = writeln!(out, "delegation:  not checked (no config; pass --config)");
        }
    }
    let _ = writeln!(
        out,
        "result:      {}",
        if r.ok {
            "authz can enforce on this host"
        } else {
            "authz cannot enforce on this host (see MISSING above)"
        }
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every requirement is reported, whatever the host lacks.
    #[test]
    fn every_host_requirement_is_reported_with_a_fix_when_missing() {
        let reqs = host_requirements(Path::new("/nonexistent-cgroup-root"));
        let names: Vec<&str> = reqs.iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            [
                "root",
                "kernel version",
                "BPF LSM active",
                "BTF",
                "IMA",
                "cgroup v2",
                "bpffs"
            ]
        );
        let cgroup = &reqs[5];
        assert_eq!(cgroup.status, Status::Missing);
        assert!(
            cgroup.fix.as_deref().unwrap().contains("cgroup2"),
            "{cgroup:?}"
        );
        for r in &reqs {
            assert_eq!(r.fix.is_some(), r.status == Status::Missing, "{r:?}");
        }
    }

    #[test]
    fn the_report_prints_each_line_and_the_verdict() {
        let result = CheckResult {
            ok: false,
            requirements: vec![
                Requirement::ok("root", "running as root"),
                Requirement::missing(
                    "BTF",
                    "/sys/kernel/btf/vmlinux missing",
                    "use CONFIG_DEBUG_INFO_BTF=y",
                ),
                Requirement::skipped("self-test", "BTF missing"),
            ],
            kernel: None,
            config: None,
            delegated_cgroups: None,
        };
        let text = render(&result);
        assert!(text.contains("ok       root"), "{text}");
        assert!(text.contains("MISSING  BTF"), "{text}");
        assert!(text.contains("fix: use CONFIG_DEBUG_INFO_BTF=y"), "{text}");
        assert!(text.contains("skipped  self-test"), "{text}");
        assert!(text.contains("cannot enforce"), "{text}");
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["requirements"][1]["status"], "missing");
    }
}
