//! What `delegate` and `artifact issue` share: the trust policy to check
//! against, their time arguments, and the one path from a freshly signed file
//! to disk ([`check_and_write`]).
use std::{io::Write as _, path::Path, path::PathBuf, time::SystemTime};

use anyhow::{bail, Context as _};
use clap::Args;

use crate::{
    artifact::Artifact,
    trust::{
        verify::{chain_window, effective_window, Limits, Part},
        verify_delegation_on, verify_on, HostCheck, TrustPolicy, VerifyError,
    },
    vocab::{
        delegation::Delegation,
        hosts::{HostBinding, HostLabel, MachineId},
        text,
        time::{self, Timestamp},
    },
};

/// Which hosts a permit or delegation is bound to (`[hosts]`): none given,
/// any host.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// Live only on the host with this machine id (its /etc/machine-id);
    /// repeatable. A host matching any --host-machine-id or --host-label is
    /// one of the bound hosts.
    #[arg(long = "host-machine-id", value_name = "ID")]
    pub machine_ids: Vec<MachineId>,
    /// Live only on hosts whose config declares this label
    /// (`host_labels`); repeatable.
    #[arg(long = "host-label", value_name = "LABEL")]
    pub labels: Vec<HostLabel>,
}

impl HostArgs {
    /// The binding, or None when no host was named.
    pub(super) fn binding(&self) -> anyhow::Result<Option<HostBinding>> {
        if self.machine_ids.is_empty() && self.labels.is_empty() {
            return Ok(None);
        }
        Ok(Some(HostBinding::new(
            self.machine_ids.clone(),
            self.labels.clone(),
        )?))
    }
}

/// Which trust-policy version to issue under: given, or read from the config.
#[derive(Debug, Args)]
pub struct PolicySource {
    /// The agent config whose `[trust]` table to check the result against (and
    /// take the policy version from).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Trust-policy version to issue under (default: the config's version).
    #[arg(long, value_name = "N")]
    pub policy_version: Option<u32>,
}

impl PolicySource {
    /// The policy (when a config was given) and the version to issue under.
    pub(super) fn load(&self) -> anyhow::Result<(Option<TrustPolicy>, u32)> {
        let policy = self
            .config
            .as_deref()
            .map(TrustPolicy::from_config_file)
            .transpose()?;
        let version = match (self.policy_version, &policy) {
            (Some(v), _) => v,
            (None, Some(p)) => p.version,
            (None, None) => bail!(
                "say which trust-policy version this is issued under: --policy-version N, or \
                 --config agent.toml to take it from the agent's config"
            ),
        };
        Ok((policy, version))
    }
}

/// Parses `--expires`: an absolute time, or a duration after `start`.
pub(super) fn parse_until(s: &str, start: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let secs = time::parse_duration(s).map_err(|_| {
        anyhow::anyhow!(
            "{s:?} is neither an RFC 3339 UTC time (2025-01-31T12:00:00Z) nor a duration (90d)"
        )
    })?;
    start
        .checked_add(secs)
        .with_context(|| format!("{s} from now is after year 9999"))
}

/// Parses an optional `--not-before`, defaulting to `now`.
pub(super) fn parse_start(s: Option<&str>, now: Timestamp) -> anyhow::Result<Timestamp> {
    s.map_or(Ok(now), |s| Ok(s.parse::<Timestamp>()?))
}

/// A file the CLI has just signed: a delegation or a permit.
pub(super) trait NewlySigned {
    /// What it is called in messages.
    const WHAT: &'static str;

    /// Refuses what could never be honoured, whatever the policy: more than
    /// the authority it was signed under holds, or a window that never opens.
    /// Returns the first instant it can be in force.
    fn check_alone(&self) -> anyhow::Result<Timestamp>;

    /// Verifies it under `policy` at `at`, as the agent would (no
    /// revocations), on any host: a host binding says where it is enforced,
    /// not where it is signed.
    fn verify(&self, policy: &TrustPolicy, at: SystemTime) -> Result<(), VerifyError>;

    fn to_toml(&self) -> String;
}

/// The one path from a freshly signed file to disk: check it on its own, then
/// (when a config was given) under its trust policy at the first instant it
/// is in force, then write it to `out` (never overwriting; `-` is standard
/// output). Nothing is written when a check fails.
pub(super) fn check_and_write<T: NewlySigned>(
    signed: &T,
    policy: Option<&TrustPolicy>,
    out: &Path,
) -> anyhow::Result<()> {
    check(signed, policy)?;
    write_output(out, 0o644, &signed.to_toml())
}

/// The checks of [`check_and_write`], without writing.
pub(super) fn check<T: NewlySigned>(
    signed: &T,
    policy: Option<&TrustPolicy>,
) -> anyhow::Result<()> {
    let from = signed.check_alone()?;
    if let Some(policy) = policy {
        let at = SystemTime::max(SystemTime::now(), from.to_system_time());
        signed.verify(policy, at).with_context(|| {
            format!(
                "the new {} would not be valid under the given config",
                T::WHAT
            )
        })?;
    }
    Ok(())
}

/// Writes `contents` to `out` (refusing to overwrite), or to stdout for `-`.
pub(super) fn write_output(out: &Path, mode: u32, contents: &str) -> anyhow::Result<()> {
    if out == Path::new("-") {
        std::io::stdout()
            .write_all(contents.as_bytes())
            .context("cannot write to standard output")?;
        return Ok(());
    }
    text::write_new(out, mode, contents)?;
    Ok(())
}

impl NewlySigned for Delegation {
    const WHAT: &'static str = "delegation";

    /// The new (last) link must narrow the link before it.
    fn check_alone(&self) -> anyhow::Result<Timestamp> {
        let links = self.links();
        let n = links.len();
        let new = links[n - 1].grant();
        if n >= 2 {
            let part = Part::Delegation {
                index: n,
                of: n,
                id: new.id,
            };
            Limits::link(n - 2, n - 1, &links[n - 2]).check_narrows(new, &part)?;
        }
        Ok(new.not_before)
    }

    fn verify(&self, policy: &TrustPolicy, at: SystemTime) -> Result<(), VerifyError> {
        verify_delegation_on(self, policy, HostCheck::Anywhere, &|_| false, at).map(|_| ())
    }

    fn to_toml(&self) -> String {
        Delegation::to_toml(self)
    }
}

impl NewlySigned for Artifact {
    const WHAT: &'static str = "permit";

    /// The permit must fit the authority of its chain's last link, and its
    /// window must overlap every link's.
    fn check_alone(&self) -> anyhow::Result<Timestamp> {
        if let Some(last) = self.chain.last() {
            let n = self.chain.len();
            Limits::link(n - 1, n, last).check_permit(self)?;
        }
        let window = effective_window(self);
        if window.is_empty() {
            let chain = chain_window(&self.chain).map_or_else(
                || "never".to_owned(),
                |c| format!("from {} until {}", c.not_before, c.expires),
            );
            bail!(
                "the permit would never be valid: its own window, from {} until {}, does not overlap its delegation chain's ({chain})",
                self.validity.not_before,
                self.validity.expires
            );
        }
        Ok(window.not_before)
    }

    fn verify(&self, policy: &TrustPolicy, at: SystemTime) -> Result<(), VerifyError> {
        verify_on(self, policy, HostCheck::Anywhere, &|_| false, at).map(|_| ())
    }

    fn to_toml(&self) -> String {
        Artifact::to_toml(self)
    }
}
