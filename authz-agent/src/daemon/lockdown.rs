//! The daemon's side of lockdown (see [`crate::lockdown`]): beginning it at
//! start, the signed `unlock` and `adopt-agent` requests, and the revocation
//! list kept in the kernel as well as on disk.
use std::{collections::BTreeMap, path::Path, time::SystemTime};

use super::{agent::Agent, Refusal};
use crate::{
    artifact::{time::Timestamp, ArtifactId},
    config::Config,
    control::protocol::{AdoptResult, RefusalKind, UnlockResult},
    enforcer::{Enforcer, EnforcerError, Mode},
    lockdown::{self, LockError},
    store::Revocation,
    vocab::{
        statement::{Action, Statement},
        text::{self, Kind},
    },
};

/// Reads a statement file (`run --unlock`).
pub fn read_statement(path: &Path) -> anyhow::Result<Statement> {
    let text = text::read_file(path, Kind::Statement)?;
    Statement::parse(&text).map_err(|source| {
        anyhow::Error::new(text::FileError::Invalid {
            path: path.to_owned(),
            source,
        })
    })
}

/// Revocations the kernel keeps that the state directory's list lost (it was
/// deleted, rolled back, replaced) come back: added to `list`, which the
/// caller saves. Returns how many.
pub fn restore_kernel_revocations(
    enforcer: &Enforcer,
    list: &mut BTreeMap<ArtifactId, Revocation>,
    now: SystemTime,
) -> usize {
    let stamp = Timestamp::from_system_time(now);
    let mut restored = 0;
    for (id, until) in enforcer.kernel_revocations() {
        let id = ArtifactId(id);
        if list.contains_key(&id) {
            continue;
        }
        let until = (until != 0).then(|| Timestamp::from_unix(until)).flatten();
        list.insert(
            id,
            Revocation::new(
                &id,
                stamp,
                until,
                Some("kept by the kernel; the state directory's list had lost it".into()),
            ),
        );
        restored += 1;
    }
    restored
}

/// Until when the kernel keeps a revocation (Unix seconds; 0: for good).
fn kept_until(r: &Revocation) -> u64 {
    r.until
        .as_deref()
        .and_then(|u| u.parse::<Timestamp>().ok())
        .map_or(0, Timestamp::unix)
}

/// Whether `to` would enforce less than `from`.
pub fn weaker(from: Mode, to: Mode) -> bool {
    let rank = |m: Mode| match m {
        Mode::Off => 0,
        Mode::Audit => 1,
        Mode::Enforce => 2,
    };
    rank(to) < rank(from)
}

impl Agent {
    /// Makes the kernel's copy of the revocation list equal to the agent's.
    pub fn mirror_revocations(&mut self) {
        let kernel: BTreeMap<[u8; 16], u64> =
            self.enforcer.kernel_revocations().into_iter().collect();
        let mut failed = 0;
        for (id, r) in self.revocations.iter() {
            let until = kept_until(r);
            if kernel.get(&id.0) != Some(&until)
                && self.enforcer.mirror_revocation(id.0, until).is_err()
            {
                failed += 1;
            }
        }
        for id in kernel.keys() {
            if !self.revocations.contains(&ArtifactId(*id)) {
                self.enforcer.forget_revocation(id);
            }
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                "revocations not kept in the kernel (its map is full): they hold from the state directory only"
            );
        }
    }

    /// Refuses what lockdown forbids without a signed unlock: lowering the
    /// mode.
    pub fn check_mode_change(&self, mode: Mode) -> Result<(), Refusal> {
        if self.enforcer.lockdown() && weaker(self.enforcer.mode(), mode) {
            return Err(locked(LockError::Locked("lowering the mode")));
        }
        Ok(())
    }

    /// `lockdown unlock`: a statement signed by a trust root ends lockdown
    /// until the agent next starts with `lockdown = true`.
    pub fn unlock(
        &mut self,
        statement_text: &str,
        now: SystemTime,
    ) -> Result<UnlockResult, Refusal> {
        let statement = parse(statement_text)?;
        if !self.enforcer.lockdown() {
            return Err(Refusal::new(
                RefusalKind::NotLocked,
                "the kernel is not locked down".to_owned(),
            ));
        }
        let guard = self.enforcer.guard_state().map_err(internal)?;
        lockdown::check_statement(
            &statement,
            Action::Unlock,
            &guard,
            Timestamp::from_system_time(now),
        )
        .map_err(locked)?;
        self.enforcer.leave_lockdown().map_err(internal)?;
        tracing::warn!(statement = %statement.claim().id, issuer = %statement.issuer(), "lockdown ended by a signed statement");
        Ok(UnlockResult {
            lockdown: false,
            statement_id: statement.claim().id.to_string(),
            issuer: statement.issuer().to_string(),
        })
    }

    /// `lockdown adopt`: a statement signed by a trust root authorizes new
    /// agent code (an upgrade) to adopt the pinned state.
    pub fn adopt(&mut self, statement_text: &str, now: SystemTime) -> Result<AdoptResult, Refusal> {
        let statement = parse(statement_text)?;
        let files = self
            .enforcer
            .adopt(&statement, Timestamp::from_system_time(now))
            .map_err(|e| match e {
                EnforcerError::Lock(LockError::NotLocked) => Refusal::new(
                    RefusalKind::NotLocked,
                    "the kernel is not locked down: any agent binary may start".to_owned(),
                ),
                EnforcerError::Lock(l) => locked(l),
                other => internal(other),
            })?;
        Ok(AdoptResult {
            files,
            statement_id: statement.claim().id.to_string(),
            digests: statement
                .claim()
                .agents
                .iter()
                .map(|a| hex::encode(a.sha256))
                .collect(),
        })
    }
}

/// Begins lockdown if the config asks for it and the kernel is not locked:
/// records the state and this agent's code, then re-execs this binary so
/// the kernel knows the new process as an agent. Returns only if nothing
/// was to be done; an error leaves lockdown off.
pub fn begin_if_wanted(agent: &mut Agent, config: &Config) -> anyhow::Result<()> {
    if !config.agent.lockdown || agent.enforcer.lockdown() {
        return Ok(());
    }
    let machine_id = lockdown::machine_id(Path::new(lockdown::MACHINE_ID))?;
    let roots: Vec<_> = config.trust.roots.iter().map(|r| r.key_id).collect();
    let guard = lockdown::begin(config.digest, &machine_id, &roots, Timestamp::now())?;
    let code = lockdown::own_code()?;
    agent.enforcer.enter_lockdown(guard, &code)?;
    agent.admin(
        "lockdown-begin",
        serde_json::json!({
            "config_sha256": hex::encode(config.digest),
            "machine_id": machine_id,
            "roots": roots.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "agent_code": code.iter().map(|c| serde_json::json!({
                "sha256": hex::encode(c.digest),
                "path": c.path,
                "kind": if c.kind == authz_common::agent_code::BINARY { "binary" } else { "library" },
            })).collect::<Vec<_>>(),
        }),
    );
    agent.audit_checkpoint("lockdown");
    tracing::warn!("lockdown on; restarting this agent so the kernel knows it as one");
    let err = reexec(&config.path);
    // Still this process (which the kernel does not know as an agent): take
    // lockdown back off through the descriptors it holds.
    if let Err(e) = agent.enforcer.leave_lockdown() {
        tracing::error!(error = %crate::error_chain(&e), "cannot take lockdown back off");
    }
    Err(err)
}

/// Replaces this process with a fresh start of this binary (same config, no
/// statement). Returns only on failure.
fn reexec(config: &Path) -> anyhow::Error {
    use std::os::unix::ffi::OsStrExt as _;
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "authz-agent".into());
    let args: Vec<std::ffi::CString> = [
        argv0.as_bytes(),
        b"run".as_slice(),
        b"--config".as_slice(),
        config.as_os_str().as_bytes(),
    ]
    .iter()
    .filter_map(|a| std::ffi::CString::new(*a).ok())
    .collect();
    match nix::unistd::execv(c"/proc/self/exe", &args) {
        Err(e) => anyhow::anyhow!("cannot restart this agent after turning lockdown on: {e}"),
        Ok(never) => match never {},
    }
}

fn parse(text: &str) -> Result<Statement, Refusal> {
    Statement::parse(text).map_err(|e| Refusal::new(RefusalKind::Malformed, e.to_string()))
}

fn locked(e: LockError) -> Refusal {
    Refusal::new(RefusalKind::Locked, e.to_string())
}

fn internal(e: EnforcerError) -> Refusal {
    Refusal::new(RefusalKind::Internal, crate::error_chain(&e))
}
