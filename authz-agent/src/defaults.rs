//! Where authz looks for things when nobody says: the one home of every
//! default path (and the default log filter). The config's defaults
//! ([`crate::config`]) and every command-line flag's default use these.
//!
//! Each is what a packaged install uses; packaging/agent.toml documents the
//! config keys that change them.

/// The agent's configuration file.
pub const CONFIG: &str = "/etc/authz/agent.toml";
/// `[agent] socket`: the control socket.
pub const SOCKET: &str = "/run/authz/agent.sock";
/// `[agent] state_dir`: accepted artifacts, revocations, the audit key.
pub const STATE_DIR: &str = "/var/lib/authz";
/// `[audit] log`: the decision log (rotated files sit next to it).
pub const AUDIT_LOG: &str = "/var/log/authz/decisions.jsonl";
/// `[agent] pin_dir`: the bpffs directory programs and maps are pinned in.
pub const PIN_DIR: &str = "/sys/fs/bpf/authz";
/// `[agent] cgroup_root`: where cgroup v2 is normally mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `[log] level`: the filter for the agent's own log, when neither `--log`,
/// `AUTHZ_LOG` nor the config says otherwise.
pub const LOG_LEVEL: &str = "info";
