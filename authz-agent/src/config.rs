//! The agent's configuration file (`/etc/authz/agent.toml`).
//!
//! Every key is documented in `packaging/agent.toml` (the example config).
//! Unknown keys are refused, with their line, so a misspelt key never silently
//! means "default".
use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{
    defaults,
    enforcer::Mode,
    trust::TrustPolicy,
    vocab::{hosts::HostLabel, time::parse_duration},
};

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = authz_common::limits::MAX_CONFIG_BYTES as u64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("config {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("config {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The whole file.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub agent: AgentSection,
    pub log: LogSection,
    pub audit: AuditSection,
    pub metrics: MetricsSection,
    pub trust: TrustPolicy,
    /// SHA-256 of the file's bytes: lockdown holds the agent to exactly this
    /// file.
    pub digest: [u8; 32],
}

/// `[metrics]`: the node_exporter textfile.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSection {
    /// Rewritten (atomically) with the agent's metrics every `interval`;
    /// none: no textfile.
    pub textfile: Option<PathBuf>,
    pub interval: Duration,
}

/// Default `[metrics] interval`: node_exporter's usual scrape interval.
const METRICS_INTERVAL_SECONDS: u64 = 15;

/// `[audit]`: the tamper-evident decision log.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditSection {
    pub log: PathBuf,
    /// Which allowed execs are recorded; refusals always are.
    pub allowed: crate::audit::Sampling,
    pub rotate_bytes: u64,
    pub checkpoint_interval: Duration,
    /// Host name written in every record (default: the system's).
    pub host: Option<String>,
}

/// `[agent]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSection {
    /// Mode on first start; `authz-agent mode` changes persist across restarts.
    pub mode: Mode,
    /// Enforced cgroup subtrees, by path; empty = the whole host. The kernel
    /// matches paths at every exec: they need not exist.
    pub enforce_cgroups: Vec<String>,
    /// Filesystems (superblock magics) trusted for exec beyond authz's
    /// built-in local ones, from `trusted_filesystems`.
    pub trusted_filesystems: Vec<u64>,
    /// Files mapped executable (libraries, the loader, dlopen): checked like
    /// execs, within `mode`.
    pub libraries: Mode,
    /// Executable memory no file backs, and writes into process memory from
    /// outside: `allow` (off), `audit` or `deny` (enforce), within `mode`.
    pub exec_memory: Mode,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Members of this group may submit, list, status and report (root
    /// always may).
    pub socket_group: Option<String>,
    /// Members of this group may also change enforcement: mode, revoke,
    /// revoke --all (root always may).
    pub admin_group: Option<String>,
    pub pin_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub max_permits: u32,
    /// How often cgroups that permits wait for are looked for again.
    pub cgroup_poll: Duration,
    /// How often expired permits are swept from the kernel's maps.
    pub sweep_interval: Duration,
    /// How often the kernel's state is compared with the agent's and
    /// restored (also before every `status`).
    pub tamper_check: Duration,
    /// Only the agent may change what the kernel enforces, and leaving that
    /// state takes a signed statement (`crate::lockdown`).
    pub lockdown: bool,
    /// Labels of this host: artifacts bound to one of them (`[hosts]`) are
    /// live here.
    pub host_labels: Vec<HostLabel>,
    /// A directory the agent watches and takes in every artifact and
    /// revocation list dropped there, as `submit` would (`daemon::inbox`);
    /// none: no inbox.
    pub inbox_dir: Option<PathBuf>,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSection {
    /// tracing filter for the daemon's own log (stderr / journald).
    pub level: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    metrics: RawMetrics,
    trust: TrustPolicy,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    textfile: Option<PathBuf>,
    interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    log: Option<PathBuf>,
    allowed: Option<String>,
    rotate_bytes: Option<u64>,
    checkpoint_interval: Option<String>,
    host: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    mode: Option<Mode>,
    enforce_cgroups: Option<Vec<String>>,
    trusted_filesystems: Option<Vec<String>>,
    libraries: Option<Mode>,
    exec_memory: Option<ExecMemory>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    admin_group: Option<String>,
    pin_dir: Option<PathBuf>,
    cgroup_root: Option<PathBuf>,
    max_permits: Option<u32>,
    cgroup_poll: Option<String>,
    sweep_interval: Option<String>,
    tamper_check: Option<String>,
    lockdown: Option<bool>,
    host_labels: Option<Vec<String>>,
    inbox_dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let meta = fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            line: e.span().map_or(0, |span| line_of(text, span.start)),
            message: e.message().to_owned(),
        })?;
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let a = raw.agent;
        let duration = |key: &'static str,
                        value: Option<String>,
                        default: u64|
         -> Result<Duration, ConfigError> {
            match value {
                None => Ok(Duration::from_secs(default)),
                Some(v) => parse_duration(&v)
                    .map(Duration::from_secs)
                    .map_err(|e| invalid(key, e.to_string())),
            }
        };
        let enforce_cgroups = a.enforce_cgroups.unwrap_or_default();
        for cg in &enforce_cgroups {
            crate::cgroup::normalize(cg)
                .map_err(|e| invalid("agent.enforce_cgroups", e.to_string()))?;
        }
        let mut trusted_filesystems = Vec::new();
        for name in a.trusted_filesystems.unwrap_or_default() {
            trusted_filesystems.push(
                filesystem_magic(&name)
                    .map_err(|message| invalid("agent.trusted_filesystems", message))?,
            );
        }
        let absolute = |key: &'static str, p: PathBuf| -> Result<PathBuf, ConfigError> {
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(invalid(
                    key,
                    format!("{} must be an absolute path", p.display()),
                ))
            }
        };
        let max_permits = a.max_permits.unwrap_or(authz_common::DEFAULT_MAX_PERMITS);
        if !(1..=authz_common::MAX_PERMITS_LIMIT).contains(&max_permits) {
            return Err(invalid(
                "agent.max_permits",
                format!("must be between 1 and {}", authz_common::MAX_PERMITS_LIMIT),
            ));
        }
        let au = raw.audit;
        let audit = AuditSection {
            log: absolute(
                "audit.log",
                au.log.unwrap_or_else(|| defaults::AUDIT_LOG.into()),
            )?,
            allowed: au
                .allowed
                .as_deref()
                .unwrap_or("all")
                .parse()
                .map_err(|e: String| invalid("audit.allowed", e))?,
            rotate_bytes: match au.rotate_bytes.unwrap_or(64 * 1024 * 1024) {
                n if n >= 4096 => n,
                _ => {
                    return Err(invalid(
                        "audit.rotate_bytes",
                        "must be at least 4096".into(),
                    ))
                }
            },
            checkpoint_interval: duration("audit.checkpoint_interval", au.checkpoint_interval, 60)?,
            host: au.host,
        };
        let host_labels = a
            .host_labels
            .unwrap_or_default()
            .iter()
            .map(|l| l.parse::<HostLabel>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("agent.host_labels", e.to_string()))?;
        let metrics = MetricsSection {
            textfile: match raw.metrics.textfile {
                None => None,
                Some(p) => {
                    let p = absolute("metrics.textfile", p)?;
                    if p.extension().is_none_or(|e| e != "prom") {
                        return Err(invalid(
                            "metrics.textfile",
                            format!(
                                "{} must end in .prom (node_exporter's textfile collector reads only those)",
                                p.display()
                            ),
                        ));
                    }
                    Some(p)
                }
            },
            interval: duration(
                "metrics.interval",
                raw.metrics.interval,
                METRICS_INTERVAL_SECONDS,
            )?,
        };
        let cgroup_poll = duration("agent.cgroup_poll", a.cgroup_poll, 1)?;
        let sweep_interval = duration("agent.sweep_interval", a.sweep_interval, 30)?;
        let tamper_check = duration("agent.tamper_check", a.tamper_check, 2)?;
        if cgroup_poll.is_zero() || sweep_interval.is_zero() || tamper_check.is_zero() {
            return Err(invalid(
                "agent",
                "intervals must be at least one second".into(),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            agent: AgentSection {
                mode: a.mode.unwrap_or(Mode::Audit),
                enforce_cgroups,
                trusted_filesystems,
                libraries: a.libraries.unwrap_or(Mode::Off),
                exec_memory: a.exec_memory.unwrap_or(ExecMemory::Allow).mode(),
                state_dir: absolute(
                    "agent.state_dir",
                    a.state_dir.unwrap_or_else(|| defaults::STATE_DIR.into()),
                )?,
                socket: absolute(
                    "agent.socket",
                    a.socket.unwrap_or_else(|| defaults::SOCKET.into()),
                )?,
                socket_group: a.socket_group,
                admin_group: a.admin_group,
                pin_dir: absolute(
                    "agent.pin_dir",
                    a.pin_dir.unwrap_or_else(|| defaults::PIN_DIR.into()),
                )?,
                cgroup_root: absolute(
                    "agent.cgroup_root",
                    a.cgroup_root
                        .unwrap_or_else(|| defaults::CGROUP_ROOT.into()),
                )?,
                max_permits,
                cgroup_poll,
                sweep_interval,
                tamper_check,
                lockdown: a.lockdown.unwrap_or(false),
                host_labels,
                inbox_dir: a
                    .inbox_dir
                    .map(|p| absolute("agent.inbox_dir", p))
                    .transpose()?,
            },
            log: LogSection {
                level: raw.log.level.unwrap_or_else(|| defaults::LOG_LEVEL.into()),
            },
            audit,
            metrics,
            trust: raw.trust,
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }
}

/// The `exec_memory` setting as written in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ExecMemory {
    Allow,
    Audit,
    Deny,
}

impl ExecMemory {
    fn mode(self) -> Mode {
        match self {
            ExecMemory::Allow => Mode::Off,
            ExecMemory::Audit => Mode::Audit,
            ExecMemory::Deny => Mode::Enforce,
        }
    }
}

/// The superblock magic of a filesystem named in `trusted_filesystems`: a
/// name authz knows (`nfs`, `fuse`, ...) or a number (`0x6969`).
fn filesystem_magic(name: &str) -> Result<u64, String> {
    if let Some(fs) = authz_common::filesystem(name) {
        return Ok(fs.magic);
    }
    let parsed = match name.strip_prefix("0x").or_else(|| name.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => None,
    };
    parsed.ok_or_else(|| {
        let known: Vec<&str> = authz_common::FILESYSTEMS.iter().map(|f| f.name).collect();
        format!(
            "{name:?} is neither a filesystem authz knows ({}) nor a superblock magic such as \"0x6969\"",
            known.join(", ")
        )
    })
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUST: &str = "[trust]\nversion = 1\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("agent.toml"), text)
    }

    #[test]
    fn minimal_config_gets_sane_defaults() {
        let c = parse(TRUST).unwrap();
        assert_eq!(c.agent.mode, Mode::Audit);
        assert!(c.agent.enforce_cgroups.is_empty());
        assert_eq!(c.agent.state_dir, PathBuf::from("/var/lib/authz"));
        assert_eq!(c.agent.socket, PathBuf::from("/run/authz/agent.sock"));
        assert_eq!(c.agent.pin_dir, PathBuf::from("/sys/fs/bpf/authz"));
        assert_eq!(c.agent.socket_group, None);
        assert_eq!(c.agent.admin_group, None);
        assert_eq!(c.log.level, "info");
    }

    #[test]
    fn the_two_control_groups_are_read() {
        let c = parse(&format!(
            "{TRUST}[agent]\nsocket_group = \"authz\"\nadmin_group = \"authz-admin\"\n"
        ))
        .unwrap();
        assert_eq!(c.agent.socket_group.as_deref(), Some("authz"));
        assert_eq!(c.agent.admin_group.as_deref(), Some("authz-admin"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let text = format!("{TRUST}\n[agent]\nmode = \"enforce\"\nsokcet = \"/x\"\n");
        match parse(&text).unwrap_err() {
            ConfigError::Parse { line, message, .. } => {
                assert_eq!(line, 6, "{message}");
                assert!(message.contains("sokcet"), "{message}");
            }
            other => panic!("{other}"),
        }
        let err = parse("[trust]\nversion = 1\nbogus = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("bogus"), "{err}");
        let err = parse("[nonsense]\n[trust]\nversion = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("nonsense"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse(&format!("{TRUST}[agent]\nstate_dir = \"relative\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.state_dir"), "{err}");
        let err = parse(&format!("{TRUST}[agent]\nenforce_cgroups = [\"a/../b\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.enforce_cgroups"), "{err}");
        let err = parse(&format!("{TRUST}[agent]\ncgroup_poll = \"soon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.cgroup_poll"), "{err}");
        let err = parse(&format!("{TRUST}[agent]\nmode = \"lax\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line"), "{err}");
        let err = parse("[agent]\n").unwrap_err().to_string();
        assert!(err.contains("trust"), "{err}");
    }

    #[test]
    fn libraries_and_exec_memory_default_off_and_parse() {
        let c = parse(TRUST).unwrap();
        assert_eq!(
            (c.agent.libraries, c.agent.exec_memory),
            (Mode::Off, Mode::Off)
        );
        let c = parse(&format!(
            "{TRUST}[agent]\nlibraries = \"enforce\"\nexec_memory = \"deny\"\n"
        ))
        .unwrap();
        assert_eq!(
            (c.agent.libraries, c.agent.exec_memory),
            (Mode::Enforce, Mode::Enforce)
        );
        let err = parse(&format!("{TRUST}[agent]\nexec_memory = \"enforce\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn the_metrics_textfile_is_optional_absolute_and_a_prom_file() {
        let c = parse(TRUST).unwrap();
        assert_eq!(c.metrics.textfile, None);
        assert_eq!(c.metrics.interval, Duration::from_secs(15));
        let c = parse(&format!(
            "{TRUST}[metrics]\ntextfile = \"/var/lib/node_exporter/authz.prom\"\ninterval = \"5s\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.metrics.textfile.as_deref(),
            Some(Path::new("/var/lib/node_exporter/authz.prom"))
        );
        assert_eq!(c.metrics.interval, Duration::from_secs(5));
        for bad in [
            "textfile = \"authz.prom\"",
            "textfile = \"/x/authz.txt\"",
            "interval = \"0s\"",
        ] {
            let err = parse(&format!("{TRUST}[metrics]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("metrics."), "{bad}: {err}");
        }
    }

    #[test]
    fn trusted_filesystems_by_name_or_magic() {
        let c = parse(&format!(
            "{TRUST}[agent]\ntrusted_filesystems = [\"nfs\", \"0x65735546\"]\n"
        ))
        .unwrap();
        assert_eq!(c.agent.trusted_filesystems, vec![0x6969, 0x6573_5546]);
        let err = parse(&format!(
            "{TRUST}[agent]\ntrusted_filesystems = [\"nfz\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("agent.trusted_filesystems") && err.contains("nfs"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.agent.mode, Mode::Audit);
        // The commented-out inbox line is valid when uncommented.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("# inbox_dir = ", "inbox_dir = ");
        let c = Config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.agent.inbox_dir.as_deref(),
            Some(Path::new("/etc/authz/inbox"))
        );
    }

    #[test]
    fn the_inbox_must_be_an_absolute_path() {
        let err = parse(&format!("[agent]\ninbox_dir = \"inbox\"\n{TRUST}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.inbox_dir"), "{err}");
    }
}
