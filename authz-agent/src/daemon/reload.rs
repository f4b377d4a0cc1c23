//! Reload (SIGHUP, which the unit's `ExecReload=` sends): the config file is
//! read again and what changed is applied to the running agent, without
//! detaching or reloading the BPF programs.
//!
//! All or nothing, and never less enforcement than asked for:
//! - the new file is read and checked completely (the same checks as at
//!   start, plus the log filter) before anything changes; a file that does
//!   not pass is refused with one log line saying why, and the running
//!   configuration stays as it was;
//! - then the kernel settings, then the trust policy: every stored artifact
//!   is verified again under the new policy and the kernel's permit map made
//!   to match (a root removed takes its permits with it; one added brings
//!   back the stored permits it signs). If the kernel refuses a write part
//!   way, everything applied so far is put back and the reload is refused;
//! - settings that only a restart can change (paths, the control socket's
//!   groups, the permit map's size, the log's file and host) are left as
//!   they run and named in the result.
//!
//! Every reload, applied or refused, is a `reload` record in the decision log.
use std::time::SystemTime;

use serde::Serialize;

use super::{permits::PermitTable, Agent};
use crate::{
    audit::schema::PolicyRef,
    config::{Config, ConfigError},
    enforcer::{EnforcerError, Mode},
    logging::{FilterChange, LogError},
    trust::Verifier,
};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config {path}: [log] level")]
    LogLevel {
        path: std::path::PathBuf,
        #[source]
        source: LogError,
    },
    #[error("cannot read the agent's store")]
    Store(#[from] crate::store::StoreError),
    /// Under lockdown the configuration is held to the bytes lockdown began
    /// with: a changed file applies only after a signed unlock.
    #[error("lockdown")]
    Locked(#[from] crate::lockdown::LockError),
    #[error("the kernel refused {what}; what the reload had applied was put back")]
    Kernel {
        what: &'static str,
        #[source]
        source: EnforcerError,
    },
}

/// What a reload changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Applied {
    /// Keys whose new value now runs.
    pub applied: Vec<&'static str>,
    /// Keys whose new value needs a restart; the old value keeps running.
    pub needs_restart: Vec<&'static str>,
    /// Keys whose new value does not apply, and why.
    pub overridden: Vec<(&'static str, &'static str)>,
    /// Live permits before and after (the trust policy may change them).
    pub live_permits: (usize, usize),
}

impl Applied {
    /// One line for people (the log, systemd's status).
    pub fn summary(&self) -> String {
        let mut s = if self.applied.is_empty() {
            "nothing changed".to_owned()
        } else {
            format!("applied {}", self.applied.join(", "))
        };
        if !self.needs_restart.is_empty() {
            s.push_str(&format!(
                "; needs a restart: {}",
                self.needs_restart.join(", ")
            ));
        }
        s
    }
}

/// Keys a running agent cannot change: (key, whether it changed).
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.agent, &new.agent);
    [
        ("agent.state_dir", a.state_dir != b.state_dir),
        ("agent.socket", a.socket != b.socket),
        ("agent.socket_group", a.socket_group != b.socket_group),
        ("agent.admin_group", a.admin_group != b.admin_group),
        ("agent.pin_dir", a.pin_dir != b.pin_dir),
        ("agent.cgroup_root", a.cgroup_root != b.cgroup_root),
        ("agent.max_permits", a.max_permits != b.max_permits),
        ("agent.inbox_dir", a.inbox_dir != b.inbox_dir),
        ("audit.log", old.audit.log != new.audit.log),
        ("audit.host", old.audit.host != new.audit.host),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// `new` with every restart-only setting as it runs now (`old`): what the
/// agent runs after the reload.
fn effective(old: &Config, new: Config) -> Config {
    let mut e = new;
    e.agent.state_dir = old.agent.state_dir.clone();
    e.agent.socket = old.agent.socket.clone();
    e.agent.socket_group = old.agent.socket_group.clone();
    e.agent.admin_group = old.agent.admin_group.clone();
    e.agent.pin_dir = old.agent.pin_dir.clone();
    e.agent.cgroup_root = old.agent.cgroup_root.clone();
    e.agent.max_permits = old.agent.max_permits;
    e.agent.inbox_dir = old.agent.inbox_dir.clone();
    e.audit.log = old.audit.log.clone();
    e.audit.host = old.audit.host.clone();
    e
}

/// The kernel settings a config asks for, as the enforcer takes them.
#[derive(Clone, Debug, PartialEq)]
struct KernelSettings {
    /// `None`: the mode persisted by `authz-agent mode` rules.
    mode: Option<Mode>,
    scope: Vec<String>,
    filesystems: Vec<u64>,
    libraries: Mode,
    exec_memory: Mode,
    allowed_sample: u32,
}

impl KernelSettings {
    fn of(config: &Config, persisted_mode: Option<Mode>) -> Self {
        let a = &config.agent;
        Self {
            mode: persisted_mode.is_none().then_some(a.mode),
            scope: a.enforce_cgroups.clone(),
            filesystems: a.trusted_filesystems.clone(),
            libraries: a.libraries,
            exec_memory: a.exec_memory,
            allowed_sample: config.audit.allowed.kernel_value(),
        }
    }

    /// Writes what differs from `from` (everything when `None`); stops at
    /// the first refusal.
    fn write(&self, from: Option<&Self>, agent: &mut Agent) -> Result<(), ReloadError> {
        let e = &mut agent.enforcer;
        let kernel = |what, source| ReloadError::Kernel { what, source };
        let differs = |f: &dyn Fn(&Self) -> bool| from.is_none_or(f);
        if differs(&|from| self.scope != from.scope) {
            e.set_scope(&self.scope)
                .map_err(|s| kernel("agent.enforce_cgroups", s))?;
        }
        if differs(&|from| self.filesystems != from.filesystems) {
            e.set_filesystems(&self.filesystems)
                .map_err(|s| kernel("agent.trusted_filesystems", s))?;
        }
        if differs(&|from| (self.libraries, self.exec_memory) != (from.libraries, from.exec_memory))
        {
            e.set_code_checks(self.libraries, self.exec_memory)
                .map_err(|s| kernel("agent.libraries/exec_memory", s))?;
        }
        if differs(&|from| self.allowed_sample != from.allowed_sample) {
            e.set_allowed_sample(self.allowed_sample)
                .map_err(|s| kernel("audit.allowed", s))?;
        }
        if let Some(mode) = self.mode {
            if mode != e.mode() {
                e.set_mode(mode).map_err(|s| kernel("agent.mode", s))?;
            }
        }
        Ok(())
    }
}

/// Reads `running.path` again and applies it: see the module's comment.
/// On success `running` is what now runs; on error nothing changed.
pub fn reload(
    agent: &mut Agent,
    running: &mut Config,
    now: SystemTime,
) -> Result<Applied, ReloadError> {
    let new = Config::load(&running.path)?;
    if agent.enforcer.lockdown() {
        let guard = agent
            .enforcer
            .guard_state()
            .map_err(|source| ReloadError::Kernel {
                what: "reading the lockdown state",
                source,
            })?;
        crate::lockdown::admit_config(&guard, &new.path, &new.digest)?;
    }
    crate::logging::check_filter(&new.log.level).map_err(|source| ReloadError::LogLevel {
        path: running.path.clone(),
        source,
    })?;
    let persisted = agent.store.mode()?;
    let mut result = Applied {
        needs_restart: restart_only(running, &new),
        ..Applied::default()
    };
    let new = effective(running, new);
    let live = |agent: &Agent| {
        agent
            .permits
            .states(now)
            .get(&super::PermitState::Live)
            .copied()
            .unwrap_or(0)
    };
    result.live_permits.0 = live(agent);

    // The kernel settings, put back if any write fails.
    let before = KernelSettings::of(running, persisted);
    let after = KernelSettings::of(&new, persisted);
    if let Err(e) = after.write(Some(&before), agent) {
        restore_kernel(&before, agent);
        return Err(e);
    }

    // The trust policy: verify the store again, make the kernel match.
    // Host labels decide which host-bound permits are live: a change
    // re-verifies the store like a trust change. The verifier keeps knowing
    // this host (a verifier without one would refuse every bound permit).
    let trust_changed = new.trust != running.trust;
    let labels_changed = new.agent.host_labels != running.agent.host_labels;
    if trust_changed || labels_changed {
        let host = crate::trust::HostIdentity::local(&new.agent.host_labels);
        let old_verifier = std::mem::replace(
            &mut agent.verifier,
            Verifier::for_host(new.trust.clone(), host),
        );
        let old_table = std::mem::replace(&mut agent.permits, PermitTable::new());
        let rebuilt = agent
            .load_store(now)
            .map_err(ReloadError::from)
            .and_then(|()| {
                agent.reconcile(now).map_err(|source| ReloadError::Kernel {
                    what: "the trust policy's permits",
                    source,
                })
            });
        if let Err(e) = rebuilt {
            agent.verifier = old_verifier;
            agent.permits = old_table;
            if let Err(again) = agent.reconcile(now) {
                tracing::error!(error = %crate::error_chain(&again), "cannot put the previous permits back; the integrity check retries");
            }
            restore_kernel(&before, agent);
            return Err(e);
        }
        agent.log.set_policy(PolicyRef {
            version: new.trust.version,
            digest: crate::audit::policy_digest(&new.trust),
        });
    }

    // Userspace settings: cannot fail.
    agent
        .log
        .audit_mut()
        .set_rotation(new.audit.rotate_bytes, new.audit.checkpoint_interval);
    let log_level = if new.log.level != running.log.level {
        match crate::logging::set_config_filter(&new.log.level) {
            Ok(FilterChange::Applied) => Some(true),
            Ok(FilterChange::Overridden) => Some(false),
            // Checked above; only a log that was never set up lands here.
            Err(_) => Some(false),
        }
    } else {
        None
    };

    let (a, b) = (&running.agent, &new.agent);
    for (key, changed) in [
        (
            "agent.enforce_cgroups",
            a.enforce_cgroups != b.enforce_cgroups,
        ),
        (
            "agent.trusted_filesystems",
            a.trusted_filesystems != b.trusted_filesystems,
        ),
        ("agent.libraries", a.libraries != b.libraries),
        ("agent.exec_memory", a.exec_memory != b.exec_memory),
        ("agent.cgroup_poll", a.cgroup_poll != b.cgroup_poll),
        ("agent.sweep_interval", a.sweep_interval != b.sweep_interval),
        ("agent.tamper_check", a.tamper_check != b.tamper_check),
        ("audit.allowed", running.audit.allowed != new.audit.allowed),
        (
            "audit.rotate_bytes",
            running.audit.rotate_bytes != new.audit.rotate_bytes,
        ),
        (
            "audit.checkpoint_interval",
            running.audit.checkpoint_interval != new.audit.checkpoint_interval,
        ),
        ("agent.host_labels", labels_changed),
        ("trust", trust_changed),
    ] {
        if changed {
            result.applied.push(key);
        }
    }
    if a.mode != b.mode {
        if persisted.is_none() {
            result.applied.push("agent.mode");
        } else {
            result.overridden.push((
                "agent.mode",
                "a mode set with `authz-agent mode` persists and wins over the config",
            ));
        }
    }
    match log_level {
        Some(true) => result.applied.push("log.level"),
        Some(false) => result
            .overridden
            .push(("log.level", "--log or AUTHZ_LOG chose the log filter")),
        None => {}
    }
    result.live_permits.1 = live(agent);
    *running = new;
    Ok(result)
}

/// Puts the kernel settings of `before` back, all of them, after a failed
/// reload wrote some of the new ones.
fn restore_kernel(before: &KernelSettings, agent: &mut Agent) {
    if let Err(e) = before.write(None, agent) {
        tracing::error!(error = %crate::error_chain(&e), "cannot put the previous kernel settings back; the integrity check retries");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(
            std::path::Path::new("agent.toml"),
            &format!("{extra}\n[trust]\nversion = 1\n"),
        )
        .unwrap()
    }

    #[test]
    fn restart_only_settings_are_named_and_keep_running() {
        let old = config("[agent]\nsocket = \"/run/a.sock\"\nmax_permits = 10\n");
        let new = config(
            "[agent]\nsocket = \"/run/b.sock\"\nmax_permits = 20\nsweep_interval = \"5s\"\n",
        );
        assert_eq!(
            restart_only(&old, &new),
            vec!["agent.socket", "agent.max_permits"]
        );
        let e = effective(&old, new);
        assert_eq!(e.agent.socket, old.agent.socket);
        assert_eq!(e.agent.max_permits, 10);
        assert_eq!(e.agent.sweep_interval, std::time::Duration::from_secs(5));
        assert!(restart_only(&old, &e).is_empty());
    }

    #[test]
    fn a_persisted_mode_wins_over_the_config() {
        let c = config("[agent]\nmode = \"enforce\"\n");
        assert_eq!(KernelSettings::of(&c, None).mode, Some(Mode::Enforce));
        assert_eq!(KernelSettings::of(&c, Some(Mode::Audit)).mode, None);
    }

    #[test]
    fn summaries_say_what_applied_and_what_waits() {
        let a = Applied {
            applied: vec!["trust", "agent.mode"],
            needs_restart: vec!["agent.socket"],
            ..Applied::default()
        };
        assert_eq!(
            a.summary(),
            "applied trust, agent.mode; needs a restart: agent.socket"
        );
        assert_eq!(Applied::default().summary(), "nothing changed");
    }
}
