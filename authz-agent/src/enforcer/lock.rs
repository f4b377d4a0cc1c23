//! The kernel side of lockdown as the agent drives it: entering and leaving
//! it, admitting a start against a locked kernel, agent code, and the
//! revocations kept where only the agent can change them. The policy (what a
//! statement must be, which configuration is admitted) is
//! [`crate::lockdown`]'s.
use authz_common::{agent_code, Digest, Guard, ARTIFACT_ID_LEN};

use super::{map_err, maps, pin, Enforcer, EnforcerError, LoadOptions, INODE_PERMISSION};
use crate::{
    lockdown::{self, LockError, OwnCode},
    vocab::{
        statement::{Action, Statement},
        time::Timestamp,
    },
};

/// A start that ended lockdown with a signed statement.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Unlocked {
    pub statement_id: String,
    pub issuer: String,
}

/// Whether loading failed because the kernel refused this process the pinned
/// objects (EPERM somewhere in the chain): lockdown holding out a non-agent.
pub(super) fn refused_by_lockdown(e: &aya::EbpfError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::EPERM) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Whether the kernel refuses this process the pinned objects under
/// `pin_dir` (lockdown, and this process is not agent code): their paths
/// answer EPERM. The kernel then also refuses it every LSM program load, so
/// this is the reason to give for a failed probe.
pub fn locked_out(pin_dir: &std::path::Path) -> bool {
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(err) => return err.raw_os_error() == Some(libc::EPERM),
    };
    entries.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("maps-")
            && matches!(
                std::fs::symlink_metadata(e.path().join(maps::CONFIG)),
                Err(err) if err.raw_os_error() == Some(libc::EPERM)
            )
    })
}

/// The refusal of a start by code lockdown does not know.
pub fn not_an_agent() -> EnforcerError {
    let digest = lockdown::own_code()
        .ok()
        .and_then(|code| code.into_iter().find(|c| c.kind == agent_code::BINARY))
        .map_or_else(|| "unknown".to_owned(), |c| hex::encode(c.digest));
    EnforcerError::NotAnAgent { digest }
}

impl Enforcer {
    /// A start against a locked kernel: admitted only with the configuration
    /// lockdown began with, or with a valid unlock statement (which then ends
    /// lockdown). Runs before this start writes anything.
    pub(super) fn admit(&mut self, opts: &LoadOptions) -> Result<(), EnforcerError> {
        let guard = self.guard_state()?;
        let Some(adm) = &opts.admission else {
            return Err(LockError::Locked("a start without a configuration").into());
        };
        let same = lockdown::admit_config(&guard, &adm.config_path, &adm.config_digest);
        match (&adm.unlock, same) {
            (None, Ok(())) => Ok(()),
            (None, Err(e)) => Err(e.into()),
            (Some(statement), _) => {
                lockdown::check_statement(statement, Action::Unlock, &guard, Timestamp::now())?;
                tracing::warn!(
                    statement = %statement.claim().id,
                    issuer = %statement.issuer(),
                    "lockdown ended by a signed statement at start"
                );
                self.unlocked = Some(Unlocked {
                    statement_id: statement.claim().id.to_string(),
                    issuer: statement.issuer().to_string(),
                });
                self.config.lockdown = 0;
                self.write_config()
            }
        }
    }

    /// The unlock statement this start ended lockdown with, if any.
    pub fn unlocked_at_start(&self) -> Option<&Unlocked> {
        self.unlocked.as_ref()
    }

    /// The state lockdown began with, as the kernel holds it.
    pub fn guard_state(&self) -> Result<Guard, EnforcerError> {
        self.guard.get(&0, 0).map_err(map_err(maps::GUARD))
    }

    /// Whether the kernel is in lockdown now (read from the kernel).
    pub fn lockdown(&self) -> bool {
        self.kernel_config().is_ok_and(|c| c.lockdown == 1)
    }

    /// Begins lockdown: records `guard` and this agent's code, then turns it
    /// on. The path guard must be attached already (`LoadOptions::lockdown`).
    /// From here on, only a process exec'd from recorded agent code can
    /// obtain authz's objects: this process re-execs itself next.
    #[tracing::instrument(skip_all)]
    pub fn enter_lockdown(&mut self, guard: Guard, code: &[OwnCode]) -> Result<(), EnforcerError> {
        if !self.programs.contains(&INODE_PERMISSION) {
            return Err(LockError::Locked("lockdown without its path guard attached").into());
        }
        for c in code {
            self.add_agent(c.digest, c.kind)?;
        }
        self.guard.set(0, guard, 0).map_err(map_err(maps::GUARD))?;
        self.config.lockdown = 1;
        self.write_config()
    }

    /// Ends lockdown (the caller checked the statement) and detaches the path
    /// guard, which costs every path lookup on the host.
    #[tracing::instrument(skip_all)]
    pub fn leave_lockdown(&mut self) -> Result<(), EnforcerError> {
        self.config.lockdown = 0;
        self.write_config()?;
        self.held_links
            .retain(|(name, _)| *name != INODE_PERMISSION);
        self.programs.retain(|name| *name != INODE_PERMISSION);
        if let Some(dir) = &self.pin_dir {
            pin::remove_stale_links(dir, &self.programs);
        }
        Ok(())
    }

    /// Checks an adopt-agent statement against the locked state and
    /// authorizes the code it names. Returns how many files it names.
    pub fn adopt(&mut self, statement: &Statement, now: Timestamp) -> Result<usize, EnforcerError> {
        if !self.lockdown() {
            return Err(LockError::NotLocked.into());
        }
        let guard = self.guard_state()?;
        lockdown::check_statement(statement, Action::AdoptAgent, &guard, now)?;
        for a in &statement.claim().agents {
            let kind = if a.binary {
                agent_code::BINARY
            } else {
                agent_code::LIBRARY
            };
            self.add_agent(a.sha256, kind)?;
        }
        Ok(statement.claim().agents.len())
    }

    /// Authorizes agent code by its digest (`authz_common::agent_code`). A
    /// binary entry is never turned into a library one.
    pub fn add_agent(&mut self, digest: Digest, kind: u32) -> Result<(), EnforcerError> {
        if self.agents.get(&digest, 0).ok() == Some(agent_code::BINARY) {
            return Ok(());
        }
        self.agents
            .insert(digest, kind, 0)
            .map_err(map_err(maps::AGENTS))
    }

    /// The authorized agent code: digest and kind.
    pub fn agents(&self) -> Vec<(Digest, u32)> {
        self.agents.iter().filter_map(Result::ok).collect()
    }

    /// Keeps a revocation in the kernel too (until `until`, Unix seconds; 0:
    /// for good), where only the agent can remove it under lockdown.
    pub fn mirror_revocation(
        &mut self,
        id: [u8; ARTIFACT_ID_LEN],
        until: u64,
    ) -> Result<(), EnforcerError> {
        self.revoked
            .insert(id, until, 0)
            .map_err(map_err(maps::REVOKED))
    }

    /// The revocations the kernel keeps.
    pub fn kernel_revocations(&self) -> Vec<([u8; ARTIFACT_ID_LEN], u64)> {
        self.revoked.iter().filter_map(Result::ok).collect()
    }

    /// Drops a kept revocation (compacted: what it revoked expired anyway).
    pub fn forget_revocation(&mut self, id: &[u8; ARTIFACT_ID_LEN]) {
        let _ = self.revoked.remove(id);
    }
}

/// Whether the state pinned under `pin_dir` (by any layout) is locked down,
/// and if so the state lockdown began with. For `unload`, which runs without
/// a loaded object. `Ok(None)`: nothing pinned, or pinned and not locked.
/// A pinned configuration this process cannot read counts as locked (the
/// kernel refuses pinned objects to anything but agent code only under
/// lockdown): the caller must not remove what it cannot judge.
pub fn pinned_lockdown(pin_dir: &std::path::Path) -> Result<Option<Guard>, EnforcerError> {
    use aya::maps::{Array, Map, MapData};
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(None);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("maps-") {
            continue;
        }
        let config_path = dir.join(maps::CONFIG);
        if !config_path.exists() {
            continue;
        }
        let open = |name: &'static str| {
            MapData::from_pin(dir.join(name))
                .and_then(Map::from_map_data)
                .map_err(map_err(name))
        };
        let config: Array<MapData, authz_common::Config> =
            Array::try_from(open(maps::CONFIG)?).map_err(map_err(maps::CONFIG))?;
        let c = config.get(&0, 0).map_err(map_err(maps::CONFIG))?;
        if c.lockdown == 0 {
            continue;
        }
        let guard: Array<MapData, Guard> =
            Array::try_from(open(maps::GUARD)?).map_err(map_err(maps::GUARD))?;
        return Ok(Some(guard.get(&0, 0).map_err(map_err(maps::GUARD))?));
    }
    Ok(None)
}
