//! The agent's state and every operation on it. One task owns it (the daemon's
//! main loop), so operations never interleave: the store, the in-memory index
//! and the kernel's maps change together, in a fixed order that keeps them
//! consistent across crashes:
//!
//! - accept: verify, write the artifact to the store (durable), then install it
//!   in the kernel, then answer;
//! - revoke: write the revocation list (durable), then remove from the kernel,
//!   then remove the artifact file, then answer.
//!
//! On start, the store is re-verified and the kernel's permit map reconciled
//! with it, so a crash between any two steps is repaired.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant, SystemTime},
};

use authz_common::{Permit, PermitKey};
use serde::Serialize;
use serde_json::{json, Value};

use super::{report::WouldDeny, sequence::Admit};
use crate::{
    artifact::{time::Timestamp, Artifact, ArtifactId},
    audit::AuditLog,
    cgroup::Hierarchy,
    enforcer::{Decision, DecisionEvent, Enforcer, EnforcerError, Mode},
    store::{ObservedClock, Revocation, Store},
    trust::{effective_window, Verified, Verifier, VerifyError},
};

/// How often the real time observed for the revocation list is written to
/// disk when nothing else rewrites it (a crash loses at most this much, which
/// only delays compaction).
const OBSERVED_SAVE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// A refused request: a stable kind and one clear sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The machine-readable kind of a verification failure.
pub fn verify_kind(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::UnknownIssuer { .. } => "unknown-issuer",
        VerifyError::RetiredKey { .. } => "retired-key",
        VerifyError::BrokenChain { .. } => "broken-chain",
        VerifyError::BadSignature { .. } => "bad-signature",
        VerifyError::NotYetValid { .. } => "not-yet-valid",
        VerifyError::Expired { .. } => "expired",
        VerifyError::LifetimeOverLimit { .. } => "lifetime-over-limit",
        VerifyError::OutlivesDelegation { .. } => "outlives-delegation",
        VerifyError::CgroupOutsideScope { .. } => "cgroup-outside-scope",
        VerifyError::DelegationWidens { .. } => "delegation-widens",
        VerifyError::ChainTooLong { .. } => "chain-too-long",
        VerifyError::PolicyVersionMismatch { .. } => "policy-version-mismatch",
        VerifyError::Revoked { .. } => "revoked",
    }
}

/// Where an accepted artifact stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PermitState {
    /// In the kernel's map.
    Live,
    /// Valid, but its cgroup does not exist (yet).
    WaitingForCgroup,
    /// Valid from `not_before`, which has not come.
    Scheduled,
    /// Past its expiry; the sweeper removes it.
    Expired,
}

/// An accepted artifact.
#[derive(Clone, Debug)]
pub struct Held {
    pub verified: Verified,
    pub text: String,
    /// Where it is installed in the kernel now.
    pub key: Option<PermitKey>,
}

/// Everything the daemon knows.
pub struct Agent {
    pub(super) enforcer: Enforcer,
    store: Store,
    verifier: Verifier,
    hierarchy: Hierarchy,
    held: BTreeMap<ArtifactId, Held>,
    /// Artifacts behind each kernel map entry.
    keys: HashMap<PermitKey, BTreeSet<ArtifactId>>,
    /// cgroup path -> id (None: does not exist now).
    cgroups: HashMap<String, Option<u64>>,
    revoked: BTreeMap<ArtifactId, Revocation>,
    /// Real time passing, for the revocation list's compaction rule.
    observed: ObservedClock,
    /// When the revocation list was last written.
    revocations_saved: Instant,
    report: WouldDeny,
    started: Instant,
    events: u64,
    /// wall-clock minus boot-clock when kernel expiries were last computed.
    clock_offset_ns: i128,
    audit: AuditLog,
    policy_digest: String,
    /// Provenance of every artifact accepted in this run, for decision records
    /// about permits since expired or revoked.
    known: HashMap<ArtifactId, Value>,
    cgroup_names: HashMap<u64, String>,
    cgroup_names_refreshed: Option<Instant>,
    dropped_logged: u64,
    dropped_ledger: Option<super::dropped::Ledger>,
    /// Which kernel event numbers the log holds (set once the epoch is known).
    sequence: Option<super::sequence::Sequence>,
    /// A refusal was written since the log was last made durable.
    sync_due: bool,
}

impl Agent {
    pub fn new(
        enforcer: Enforcer,
        store: Store,
        verifier: Verifier,
        hierarchy: Hierarchy,
        revoked: BTreeMap<ArtifactId, Revocation>,
        audit: AuditLog,
    ) -> Self {
        let policy_digest = crate::audit::policy_digest(verifier.policy());
        Self {
            audit,
            policy_digest,
            known: HashMap::new(),
            cgroup_names: HashMap::new(),
            cgroup_names_refreshed: None,
            dropped_logged: 0,
            dropped_ledger: None,
            sequence: None,
            sync_due: false,
            enforcer,
            store,
            verifier,
            hierarchy,
            held: BTreeMap::new(),
            keys: HashMap::new(),
            cgroups: HashMap::new(),
            revoked,
            observed: ObservedClock::starting_at(crate::enforcer::boot_time_ns()),
            revocations_saved: Instant::now(),
            report: WouldDeny::default(),
            started: Instant::now(),
            events: 0,
            clock_offset_ns: clock_offset_ns(),
        }
    }

    /// Verifies `artifact` now; one that is valid only later is verified at the
    /// instant it becomes valid (so it can be accepted ahead of time).
    fn verify(&self, artifact: &Artifact, now: SystemTime) -> Result<Verified, VerifyError> {
        verify_ahead(&self.verifier, &self.revoked, artifact, now)
    }

    /// Loads every stored artifact on start: re-verified, invalid ones
    /// reported and skipped (never fatal), expired ones removed.
    #[tracing::instrument(skip_all)]
    pub fn load_store(&mut self, now: SystemTime) -> Result<(), crate::store::StoreError> {
        let stored: Vec<_> = self
            .store
            .artifacts()?
            .into_iter()
            .filter_map(|item| match item {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable stored artifact");
                    None
                }
            })
            .collect();
        // Parsing and signature checks dominate start-up with many artifacts:
        // spread them over every core (the verifier is shared and thread-safe).
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 16);
        let chunk = stored.len().div_ceil(threads).max(1);
        let (verifier, revoked) = (&self.verifier, &self.revoked);
        let results: Vec<Result<Verified, (String, bool)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = stored
                .chunks(chunk)
                .map(|part| scope.spawn(move || verify_stored(verifier, revoked, part, now)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut accepted = 0;
        for (stored, result) in stored.into_iter().zip(results) {
            match result {
                Ok(verified) => {
                    self.known.insert(stored.id, permit_info(&verified));
                    self.held.insert(
                        stored.id,
                        Held {
                            verified,
                            text: stored.text,
                            key: None,
                        },
                    );
                    accepted += 1;
                }
                Err((_, true)) => {
                    tracing::info!(id = %stored.id, "stored artifact expired; removing it");
                    let _ = self.store.remove_artifact(&stored.id);
                }
                Err((why, false)) => {
                    tracing::warn!(id = %stored.id, path = %stored.path.display(), error = %why, "stored artifact no longer verifies; skipped (kept on disk)");
                }
            }
        }
        tracing::info!(accepted, revoked = self.revoked.len(), "store loaded");
        Ok(())
    }

    /// Makes the kernel's permit map exactly what the held artifacts say:
    /// installs what is missing, removes what no valid artifact backs.
    #[tracing::instrument(skip_all)]
    pub fn reconcile(&mut self, now: SystemTime) -> Result<(), EnforcerError> {
        for path in self.permitted_cgroups() {
            let id = self.hierarchy.id(&path).ok();
            self.cgroups.insert(path, id);
        }
        self.keys.clear();
        let ids: Vec<ArtifactId> = self.held.keys().copied().collect();
        for id in &ids {
            if let Some(h) = self.held.get_mut(id) {
                h.key = None;
            }
        }
        for id in &ids {
            if let Some(key) = self.desired_key(id, now) {
                self.keys.entry(key).or_default().insert(*id);
                if let Some(h) = self.held.get_mut(id) {
                    h.key = Some(key);
                }
            }
        }
        let wanted: Vec<PermitKey> = self.keys.keys().copied().collect();
        for key in &wanted {
            self.write_key(key)?;
        }
        let mut removed = 0;
        for (key, _) in self.enforcer.permits() {
            if !self.keys.contains_key(&key) {
                self.enforcer.revoke(&key)?;
                removed += 1;
            }
        }
        self.clock_offset_ns = clock_offset_ns();
        tracing::info!(
            installed = wanted.len(),
            removed_stale = removed,
            "kernel permits reconciled"
        );
        Ok(())
    }

    pub fn state_of(&self, h: &Held, now: SystemTime) -> PermitState {
        if now >= h.verified.expires {
            PermitState::Expired
        } else if now < h.verified.not_before {
            PermitState::Scheduled
        } else if matches!(self.cgroups.get(&h.verified.cgroup), Some(Some(_))) {
            PermitState::Live
        } else {
            PermitState::WaitingForCgroup
        }
    }

    fn desired_key(&self, id: &ArtifactId, now: SystemTime) -> Option<PermitKey> {
        let h = self.held.get(id)?;
        if self.state_of(h, now) != PermitState::Live {
            return None;
        }
        let cgroup_id = self.cgroups.get(&h.verified.cgroup).copied().flatten()?;
        Some(PermitKey {
            digest: h.verified.digest,
            cgroup_id,
        })
    }

    /// Moves `id` to where it belongs in the kernel now.
    fn place(&mut self, id: &ArtifactId, now: SystemTime) -> Result<(), EnforcerError> {
        let want = self.desired_key(id, now);
        let have = self.held.get(id).and_then(|h| h.key);
        if want == have {
            return Ok(());
        }
        if let Some(old) = have {
            self.detach_from_key(id, &old)?;
        }
        if let Some(new) = want {
            self.keys.entry(new).or_default().insert(*id);
            if let Some(h) = self.held.get_mut(id) {
                h.key = Some(new);
            }
            if let Err(e) = self.write_key(&new) {
                self.detach_from_key(id, &new)?;
                return Err(e);
            }
        }
        Ok(())
    }

    fn detach_from_key(&mut self, id: &ArtifactId, key: &PermitKey) -> Result<(), EnforcerError> {
        if let Some(ids) = self.keys.get_mut(key) {
            ids.remove(id);
        }
        if let Some(h) = self.held.get_mut(id) {
            h.key = None;
        }
        self.write_key(key)
    }

    /// Writes the kernel entry for `key` from the artifacts behind it (or
    /// removes it when none is left). The exact slot takes the latest expiry of
    /// all of them; the descendants slot the latest of those including
    /// descendants.
    fn write_key(&mut self, key: &PermitKey) -> Result<(), EnforcerError> {
        let Some(ids) = self.keys.get(key).filter(|ids| !ids.is_empty()) else {
            self.keys.remove(key);
            self.enforcer.revoke(key)?;
            return Ok(());
        };
        let mut permit = Permit::default();
        let clock = BootClock::now();
        for id in ids {
            let Some(h) = self.held.get(id) else { continue };
            let expires = clock.boot_ns(h.verified.expires);
            if expires > permit.expires_boot_ns {
                permit.expires_boot_ns = expires;
                permit.artifact_id = id.0;
            }
            if h.verified.descendants && expires > permit.descendants_expires_boot_ns {
                permit.descendants_expires_boot_ns = expires;
                permit.descendants_artifact_id = id.0;
            }
        }
        self.enforcer.grant(*key, permit)
    }

    /// `submit`.
    #[tracing::instrument(skip_all, fields(id))]
    pub fn submit(&mut self, text: &str, now: SystemTime) -> Result<Value, Refusal> {
        let artifact =
            Artifact::parse(text).map_err(|e| Refusal::new("malformed", e.to_string()))?;
        let id = artifact.id;
        tracing::Span::current().record("id", tracing::field::display(id));
        if let Some(r) = self.revoked.get(&id) {
            return Err(Refusal::new(
                "revoked",
                format!("artifact {id} was revoked at {}; a revoked artifact can never be submitted again", r.revoked_at),
            ));
        }
        if let Some(h) = self.held.get(&id) {
            if h.text == text {
                let state = self.state_of(h, now);
                return Ok(
                    json!({ "id": id.to_string(), "state": state, "already_accepted": true }),
                );
            }
        }
        let verified = self
            .verify(&artifact, now)
            .map_err(|e| Refusal::new(verify_kind(&e), e.to_string()))?;
        if self.held.contains_key(&id) {
            // Validly signed, same id, different content: ids must be unique.
            return Err(Refusal::new(
                "conflict",
                format!("a different artifact with id {id} is already accepted"),
            ));
        }
        self.store
            .save_artifact(&id, text)
            .map_err(|e| Refusal::new("internal", format!("cannot store the artifact: {e}")))?;
        let cgroup = verified.cgroup.clone();
        if !self.cgroups.contains_key(&cgroup) {
            let cg_id = self.hierarchy.id(&cgroup).ok();
            self.cgroups.insert(cgroup.clone(), cg_id);
        }
        self.known.insert(id, permit_info(&verified));
        self.held.insert(
            id,
            Held {
                verified,
                text: text.to_owned(),
                key: None,
            },
        );
        if let Err(e) = self.place(&id, now) {
            self.held.remove(&id);
            let _ = self.store.remove_artifact(&id);
            return Err(match e {
                EnforcerError::PermitsFull(n) => Refusal::new(
                    "full",
                    format!("the kernel permit map is full ({n} entries); raise agent.max_permits"),
                ),
                other => Refusal::new(
                    "internal",
                    format!("cannot install the permit: {}", crate::error_chain(&other)),
                ),
            });
        }
        let h = &self.held[&id];
        let state = self.state_of(h, now);
        tracing::info!(%id, state = ?state, cgroup = %h.verified.cgroup, "artifact accepted");
        Ok(json!({
            "id": id.to_string(),
            "state": state,
            "cgroup": h.verified.cgroup,
            "cgroup_id": self.cgroups.get(&h.verified.cgroup).copied().flatten(),
            "not_before": Timestamp::from_system_time(h.verified.not_before).to_string(),
            "expires": Timestamp::from_system_time(h.verified.expires).to_string(),
        }))
    }

    /// `revoke ID`: the artifact, or every artifact issued under the
    /// delegation with that id.
    #[tracing::instrument(skip_all, fields(id = id_text))]
    pub fn revoke(
        &mut self,
        id_text: &str,
        reason: Option<String>,
        now: SystemTime,
    ) -> Result<Value, Refusal> {
        let id: ArtifactId =
            id_text
                .parse()
                .map_err(|e: crate::artifact::fields::BadArtifactId| {
                    Refusal::new("malformed", e.to_string())
                })?;
        if self.revoked.contains_key(&id) {
            return Ok(json!({ "id": id.to_string(), "already_revoked": true, "removed": 0 }));
        }
        let affected: Vec<ArtifactId> = self
            .held
            .iter()
            .filter(|(aid, h)| **aid == id || h.verified.delegation_ids.contains(&id))
            .map(|(aid, _)| *aid)
            .collect();
        let until = revocation_until(self.held.values().map(|h| &h.verified), &id);
        let stamp = Timestamp::from_system_time(now);
        self.start_revoking();
        self.revoked.insert(
            id,
            Revocation::new(
                &id,
                stamp,
                until.map(Timestamp::from_system_time),
                reason.clone(),
            ),
        );
        if let Err(e) = self.save_revocations(stamp) {
            self.revoked.remove(&id);
            return Err(Refusal::new(
                "internal",
                format!("cannot record the revocation: {e}"),
            ));
        }
        for a in &affected {
            self.forget(a)
                .map_err(|e| Refusal::new("internal", crate::error_chain(&e)))?;
        }
        tracing::warn!(%id, removed = affected.len(), reason = reason.as_deref().unwrap_or(""), "revoked");
        Ok(
            json!({ "id": id.to_string(), "removed": affected.len(), "known": !affected.is_empty() }),
        )
    }

    /// Credits every revocation with the real time observed since the last
    /// reading of the boot clock.
    fn observe_revocations(&mut self) {
        let seconds = self
            .observed
            .elapsed_seconds(crate::enforcer::boot_time_ns());
        if seconds > 0 {
            for r in self.revoked.values_mut() {
                r.observe(seconds);
            }
        }
    }

    /// Before adding revocations: the existing ones get the time observed so
    /// far, and the new ones none of it.
    fn start_revoking(&mut self) {
        self.observe_revocations();
        self.observed.drop_fraction();
    }

    /// Writes the revocation list (dropping what may be compacted at `now`).
    fn save_revocations(&mut self, now: Timestamp) -> Result<(), crate::store::StoreError> {
        self.store.save_revocations(&self.revoked, now)?;
        self.revocations_saved = Instant::now();
        Ok(())
    }

    /// Records the real time observed for the revocation list (on stop, and
    /// from the sweep every [`OBSERVED_SAVE_INTERVAL`]).
    pub fn save_observed_time(&mut self, now: SystemTime) {
        self.observe_revocations();
        if self.revoked.is_empty() {
            return;
        }
        if let Err(e) = self.save_revocations(Timestamp::from_system_time(now)) {
            tracing::warn!(error = %e, "cannot record the time observed for the revocation list");
        }
    }

    /// Removes an artifact from the kernel, memory and store.
    fn forget(&mut self, id: &ArtifactId) -> Result<(), EnforcerError> {
        if let Some(key) = self.held.get(id).and_then(|h| h.key) {
            self.detach_from_key(id, &key)?;
        }
        self.held.remove(id);
        if let Err(e) = self.store.remove_artifact(id) {
            tracing::warn!(%id, error = %e, "cannot remove the artifact file (it no longer verifies: revoked)");
        }
        Ok(())
    }

    /// `revoke --all`: every accepted artifact revoked, the kernel map flushed.
    #[tracing::instrument(skip_all)]
    pub fn revoke_all(
        &mut self,
        reason: Option<String>,
        now: SystemTime,
    ) -> Result<Value, Refusal> {
        let ids: Vec<ArtifactId> = self.held.keys().copied().collect();
        let stamp = Timestamp::from_system_time(now);
        self.start_revoking();
        for id in &ids {
            let until = Timestamp::from_system_time(self.held[id].verified.expires);
            self.revoked
                .insert(*id, Revocation::new(id, stamp, Some(until), reason.clone()));
        }
        let saved = self.save_revocations(stamp);
        // Flush the kernel first either way: incident response must not wait on a disk.
        let flushed = self
            .enforcer
            .flush()
            .map_err(|e| Refusal::new("internal", crate::error_chain(&e)))?;
        self.keys.clear();
        for id in &ids {
            self.held.remove(id);
            let _ = self.store.remove_artifact(id);
        }
        tracing::warn!(revoked = ids.len(), flushed, "revoked every permit");
        saved.map_err(|e| {
            Refusal::new(
                "internal",
                format!(
                    "the kernel map is flushed, but the revocation list could not be written: {e}"
                ),
            )
        })?;
        Ok(json!({ "revoked": ids.len(), "flushed": flushed }))
    }

    /// `mode`.
    pub fn set_mode(&mut self, mode: Mode) -> Result<Value, Refusal> {
        let previous = self.enforcer.mode();
        self.store
            .save_mode(mode)
            .map_err(|e| Refusal::new("internal", format!("cannot persist the mode: {e}")))?;
        self.enforcer
            .set_mode(mode)
            .map_err(|e| Refusal::new("internal", crate::error_chain(&e)))?;
        tracing::warn!(%previous, %mode, "mode changed");
        Ok(json!({ "mode": mode, "previous": previous }))
    }

    /// The cgroups accepted artifacts name, each once.
    pub fn permitted_cgroups(&self) -> Vec<String> {
        let cgroups: BTreeSet<&String> = self.held.values().map(|h| &h.verified.cgroup).collect();
        cgroups.into_iter().cloned().collect()
    }

    /// `list`.
    pub fn list(&self, now: SystemTime) -> Value {
        let permits: Vec<Value> = self
            .held
            .iter()
            .map(|(id, h)| {
                let v = &h.verified;
                json!({
                    "id": id.to_string(),
                    "state": self.state_of(h, now),
                    "digest": hex::encode(v.digest),
                    "cgroup": v.cgroup,
                    "cgroup_id": self.cgroups.get(&v.cgroup).copied().flatten(),
                    "descendants": v.descendants,
                    "not_before": Timestamp::from_system_time(v.not_before).to_string(),
                    "expires": Timestamp::from_system_time(v.expires).to_string(),
                    "permit_validity": {
                        "not_before": Timestamp::from_system_time(v.permit_not_before).to_string(),
                        "expires": Timestamp::from_system_time(v.permit_expires).to_string(),
                    },
                    "issuer": v.issuer.to_string(),
                    "chain": v.chain.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                    "policy_version": v.policy_version,
                    "requested_by": v.requested_by,
                    "on_behalf_of": v.on_behalf_of,
                    "reason": v.reason,
                    "subject_path": v.subject_path,
                    "subject_name": v.subject_name,
                })
            })
            .collect();
        json!({ "permits": permits, "revoked": self.revoked.len() })
    }

    /// `status`.
    pub fn status(&self, now: SystemTime) -> Value {
        let mut states: BTreeMap<&str, usize> = BTreeMap::new();
        for h in self.held.values() {
            let s = match self.state_of(h, now) {
                PermitState::Live => "live",
                PermitState::WaitingForCgroup => "waiting-for-cgroup",
                PermitState::Scheduled => "scheduled",
                PermitState::Expired => "expired",
            };
            *states.entry(s).or_default() += 1;
        }
        let counters = self.enforcer.counters().ok();
        let config = self.enforcer.config();
        json!({
            "mode": self.enforcer.mode(),
            "scope": if config.scope == authz_common::scope::SUBTREES { "subtrees" } else { "host" },
            "enforced_cgroups": self.enforcer.scope_paths(),
            "permits": states,
            "kernel_permit_entries": self.keys.len(),
            "revoked": self.revoked.len(),
            "counters": counters,
            "events_dropped": counters.as_ref().and_then(|c| c.get("events_dropped").copied()),
            "events_received": self.events,
            "kernel": self.enforcer.kernel(),
            "bpf_lsm": "attached",
            "pinned_state_adopted": self.enforcer.adopted(),
            "policy_version": self.verifier.policy().version,
            "policy_digest": self.policy_digest,
            "audit_log": self.audit.path(),
            "audit_key_id": self.audit.key_id().to_string(),
            "uptime_seconds": self.started.elapsed().as_secs(),
        })
    }

    /// `report`.
    pub fn report(&self) -> Value {
        self.report.to_json(&self.hierarchy)
    }

    /// Starts accounting for the kernel's event numbers of the current epoch,
    /// from what the log already holds.
    pub fn start_sequence(&mut self) {
        let epoch = self.enforcer.epoch();
        let seen = crate::audit::kernel_seen(self.audit.path(), epoch).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read back the log's event numbers");
            Vec::new()
        });
        let sequence = super::sequence::Sequence::recover(epoch, !self.enforcer.adopted(), &seen);
        if let Some(low) = sequence.low() {
            self.audit.set_kernel_events(epoch, low);
        }
        self.sequence = Some(sequence);
    }

    /// A kernel decision arrived: logged (the kernel already sampled allowed
    /// ones), aggregated for the report. One the log already holds (read again
    /// after a restart) is skipped.
    pub fn on_event(&mut self, ev: DecisionEvent) {
        if let Some(sequence) = self.sequence.as_mut() {
            let unknown_start = sequence.low().is_none() && ev.seq != 0;
            if sequence.admit(ev.seq, ev.boot_ns, Instant::now()) == Admit::Duplicate {
                return;
            }
            if unknown_start {
                let epoch = sequence.epoch();
                self.admin(
                    "event-numbering",
                    json!({
                        "epoch": format!("{epoch:016x}"),
                        "first_seq": ev.seq,
                        "note": "the log holds no earlier event numbers of this epoch: decisions numbered below first_seq cannot be accounted for",
                    }),
                );
            }
        }
        self.events += 1;
        let refusal = ev.decision != Decision::Allow;
        let time = wall_time_of(ev.boot_ns);
        let mut body = self.exec_record(&ev);
        if ev.seq != 0 {
            body.insert("kseq".into(), json!(ev.seq));
            body.insert(
                "kepoch".into(),
                json!(format!("{:016x}", self.enforcer.epoch())),
            );
        }
        if let Err(e) = self.audit.exec(time, body) {
            tracing::error!(error = %e, "cannot write the decision log");
        }
        self.sync_due |= refusal;
        match ev.decision {
            Decision::Deny | Decision::AuditDeny => {
                tracing::info!(
                    decision = %ev.decision, reason = %ev.reason, path = %ev.path, pid = ev.pid,
                    uid = ev.uid, cgroup_id = ev.cgroup_id, digest = ev.digest.as_deref().unwrap_or("-"),
                    "exec refused"
                );
                self.report.record(&ev);
            }
            _ => tracing::debug!(path = %ev.path, reason = %ev.reason, "exec allowed"),
        }
    }

    /// A batch of events was taken off the ring: write the records to the
    /// file, and force them to stable storage when the batch held a refusal.
    pub fn events_written(&mut self) {
        let result = if std::mem::take(&mut self.sync_due) {
            self.audit.sync()
        } else {
            self.audit.flush()
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the decision log");
        }
    }

    /// Reports event numbers that never reached the log (a crash between
    /// taking them off the ring and writing them), and tells checkpoints how
    /// far the numbering is accounted for.
    fn account_sequence(&mut self) {
        let Some(sequence) = self.sequence.as_mut() else {
            return;
        };
        let epoch = sequence.epoch();
        let mut gaps = Vec::new();
        while let Some(gap) = sequence.overdue(Instant::now(), super::sequence::GAP_GRACE) {
            gaps.push(gap);
        }
        let low = sequence.low();
        for gap in gaps {
            tracing::warn!(
                missing = gap.count(),
                from = gap.from,
                to = gap.to,
                "kernel decisions never reached the decision log"
            );
            let when = |ns: u64| crate::audit::record::rfc3339_nanos(wall_time_of(ns));
            self.admin(
                "events-missing",
                json!({
                    "epoch": format!("{epoch:016x}"),
                    "from_seq": gap.from,
                    "to_seq": gap.to,
                    "missing": gap.count(),
                    "after": gap.after_boot_ns.map(when),
                    "before": when(gap.before_boot_ns),
                    "why": "the kernel queued these decisions, but no record of them reached the log (the agent stopped after taking them off the ring and before writing them)",
                }),
            );
        }
        if let Some(low) = low {
            self.audit.set_kernel_events(epoch, low);
        }
    }

    /// The decision record's fields for a kernel event.
    fn exec_record(&mut self, ev: &DecisionEvent) -> serde_json::Map<String, Value> {
        let cgroup = self.cgroup_name(ev.cgroup_id);
        let lookup = |id: &Option<String>| -> Value {
            match id {
                None => Value::Null,
                Some(hex_id) => match hex_id
                    .parse::<ArtifactId>()
                    .ok()
                    .and_then(|a| self.known.get(&a))
                {
                    Some(info) => info.clone(),
                    None => json!({ "id": hex_id, "provenance": "unknown to this agent run" }),
                },
            }
        };
        let permit = lookup(&ev.permit_id);
        let parent = lookup(&ev.parent_permit_id);
        let mut m = serde_json::Map::new();
        m.insert("decision".into(), json!(ev.decision));
        m.insert("reason".into(), json!(ev.reason));
        m.insert("mode".into(), json!(ev.mode));
        m.insert(
            "actor".into(),
            json!({
                "pid": ev.tgid, "tid": ev.pid, "ppid": ev.ppid, "uid": ev.uid, "gid": ev.gid,
                "comm": ev.comm, "cgroup": cgroup, "cgroup_id": ev.cgroup_id,
                "exe": ev.path, "filename": ev.filename,
            }),
        );
        m.insert("digest".into(), json!(ev.digest));
        m.insert("digest_cached".into(), json!(ev.digest_cached));
        m.insert("permit".into(), permit);
        m.insert("parent_permit".into(), parent);
        m.insert(
            "policy_version".into(),
            json!(self.verifier.policy().version),
        );
        m.insert("policy_digest".into(), json!(self.policy_digest));
        m
    }

    /// A cgroup's path for logs (the hierarchy is re-read at most once a second
    /// when an id is unknown).
    fn cgroup_name(&mut self, id: u64) -> Option<String> {
        if let Some(n) = self.cgroup_names.get(&id) {
            return Some(n.clone());
        }
        if self
            .cgroup_names_refreshed
            .is_none_or(|t| t.elapsed().as_secs() >= 1)
        {
            self.cgroup_names = self.hierarchy.names().into_iter().collect();
            self.cgroup_names_refreshed = Some(Instant::now());
        }
        self.cgroup_names.get(&id).cloned()
    }

    /// Records an administrative event in the decision log.
    pub fn admin(&mut self, event: &str, detail: Value) {
        let mut m = serde_json::Map::new();
        m.insert("event".into(), json!(event));
        m.insert("detail".into(), detail);
        m.insert(
            "policy_version".into(),
            json!(self.verifier.policy().version),
        );
        m.insert("policy_digest".into(), json!(self.policy_digest));
        if let Err(e) = self.audit.append("admin", SystemTime::now(), m) {
            tracing::error!(error = %e, "cannot write the decision log");
        }
    }

    /// Periodic: flush and checkpoint the log; record events the kernel
    /// dropped and numbers that never reached the log.
    pub fn audit_tick(&mut self) {
        self.account_sequence();
        let total = self.dropped_total();
        self.report_dropped(total, "while running");
        if let Err(e) = self.audit.tick() {
            tracing::error!(error = %e, "cannot flush the decision log");
        }
    }

    /// Signs the chain head (on stop and rotation).
    pub fn audit_checkpoint(&mut self, why: &str) {
        if let Err(e) = self.audit.checkpoint(why) {
            tracing::error!(error = %e, "cannot checkpoint the decision log");
        }
    }

    /// Starts accounting for dropped events: reports what the kernel dropped
    /// since the last run's report (while no agent was running, the ring
    /// fills), then keeps `ledger` up to date after each report.
    pub fn account_dropped_while_down(&mut self, ledger: super::dropped::Ledger) {
        let total = self.dropped_total();
        self.dropped_logged = ledger.reported(self.enforcer.adopted(), total);
        self.dropped_ledger = Some(ledger);
        self.report_dropped(total, "before this agent started");
    }

    fn dropped_total(&self) -> u64 {
        self.enforcer.events_dropped().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the dropped-event counter");
            self.dropped_logged
        })
    }

    /// Logs the drops not yet reported, then records that they were (a crash
    /// in between reports them twice rather than never).
    fn report_dropped(&mut self, total: u64, when: &str) {
        if total <= self.dropped_logged {
            return;
        }
        let delta = total - self.dropped_logged;
        tracing::warn!(
            dropped = delta,
            when,
            "the kernel dropped decision events (ring buffer full)"
        );
        self.admin(
            "events-dropped",
            json!({ "dropped": delta, "total": total, "when": when }),
        );
        self.dropped_logged = total;
        if let Some(ledger) = &self.dropped_ledger {
            if let Err(e) = ledger.save(total) {
                tracing::error!(error = %e, "cannot record which dropped events were reported");
            }
        }
    }

    /// Periodic: cgroups that appeared, vanished or were re-created.
    pub fn poll_cgroups(&mut self, now: SystemTime) {
        let mut changed: Vec<String> = Vec::new();
        for (path, id) in self.cgroups.iter_mut() {
            let current = self.hierarchy.id(path).ok();
            if current != *id {
                tracing::info!(cgroup = %path, old = ?id, new = ?current, "cgroup changed");
                *id = current;
                changed.push(path.clone());
            }
        }
        if changed.is_empty() {
            return;
        }
        let ids: Vec<ArtifactId> = self
            .held
            .iter()
            .filter(|(_, h)| changed.contains(&h.verified.cgroup))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Err(e) = self.place(&id, now) {
                tracing::error!(%id, error = %crate::error_chain(&e), "cannot update a permit for its cgroup");
            }
        }
    }

    /// Periodic: expired artifacts leave the kernel and the store; scheduled
    /// ones whose time came are installed; kernel expiries follow wall-clock
    /// steps; revocations are credited with the real time observed and
    /// compacted by the rule in [`crate::store`].
    pub fn sweep(&mut self, now: SystemTime) {
        let offset = clock_offset_ns();
        if (offset - self.clock_offset_ns).abs() > 1_000_000_000 {
            tracing::info!("wall clock stepped; recomputing kernel expiries");
            let keys: Vec<PermitKey> = self.keys.keys().copied().collect();
            for key in keys {
                let _ = self.write_key(&key);
            }
            self.clock_offset_ns = offset;
        }
        let ids: Vec<ArtifactId> = self.held.keys().copied().collect();
        for id in ids {
            let state = self.state_of(&self.held[&id], now);
            let result = if state == PermitState::Expired {
                tracing::info!(%id, "permit expired; removing");
                self.forget(&id)
            } else {
                self.place(&id, now)
            };
            if let Err(e) = result {
                tracing::error!(%id, error = %crate::error_chain(&e), "sweep failed for a permit");
            }
        }
        self.observe_revocations();
        let stamp = Timestamp::from_system_time(now);
        if self.revoked.values().any(|r| r.compactable(stamp)) {
            let before = self.revoked.len();
            self.revoked.retain(|_, r| !r.compactable(stamp));
            tracing::info!(
                dropped = before - self.revoked.len(),
                "revocations past their end compacted"
            );
            if let Err(e) = self.save_revocations(stamp) {
                tracing::warn!(error = %e, "cannot compact the revocation list");
            }
        } else if self.revocations_saved.elapsed() >= OBSERVED_SAVE_INTERVAL {
            self.save_observed_time(now);
        }
    }
}

/// Parses and verifies stored artifacts with batch signature verification
/// (about twice the single-check rate); those valid only later are verified
/// again at the instant they become valid. One result per input, in order:
/// `Err((why, expired))`.
fn verify_stored(
    verifier: &Verifier,
    revoked: &BTreeMap<ArtifactId, Revocation>,
    stored: &[crate::store::StoredArtifact],
    now: SystemTime,
) -> Vec<Result<Verified, (String, bool)>> {
    let parsed: Vec<Result<Artifact, String>> = stored
        .iter()
        .map(|s| match Artifact::parse(&s.text) {
            Ok(a) if a.id == s.id => Ok(a),
            Ok(a) => Err(format!("its id {} does not match its file name", a.id)),
            Err(e) => Err(format!("malformed: {e}")),
        })
        .collect();
    let is_revoked = |id: &ArtifactId| revoked.contains_key(id);
    let good: Vec<&Artifact> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
    let mut batch = verifier
        .verify_batch(good.iter().copied(), &is_revoked, now)
        .into_iter();
    parsed
        .iter()
        .map(|p| match p {
            Err(why) => Err((why.clone(), false)),
            Ok(a) => match batch.next() {
                Some(Err(VerifyError::NotYetValid { .. })) => {
                    verify_ahead(verifier, revoked, a, now)
                }
                Some(other) => other,
                None => verify_ahead(verifier, revoked, a, now),
            }
            .map_err(|e| {
                let expired = matches!(e, VerifyError::Expired { .. });
                (e.to_string(), expired)
            }),
        })
        .collect()
}

/// Verifies `artifact` at `now`; one valid only later is verified at the
/// instant its effective window opens (the latest `not_before` of the permit
/// and its links), so it can be accepted ahead of time and scheduled. One
/// whose windows never overlap gets the reason it is not valid now.
fn verify_ahead(
    verifier: &Verifier,
    revoked: &BTreeMap<ArtifactId, Revocation>,
    artifact: &Artifact,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let is_revoked = |id: &ArtifactId| revoked.contains_key(id);
    let window = effective_window(artifact);
    let at = if window.is_empty() {
        now
    } else {
        now.max(window.not_before.to_system_time())
    };
    verifier.verify(artifact, &is_revoked, at)
}

/// Until when anything `id` names could still verify, as far as the held
/// permits tell: a held permit's effective expiry, or the own `expires` of a
/// delegation link in a held permit's chain, which bounds every permit ever
/// issued under that link (not only the ones held now). None when no held
/// permit knows `id`: then the revocation must last for good.
fn revocation_until<'a>(
    held: impl IntoIterator<Item = &'a Verified>,
    id: &ArtifactId,
) -> Option<SystemTime> {
    held.into_iter()
        .flat_map(|v| {
            let permit = (v.id == *id).then_some(v.expires);
            let links = v
                .delegation_ids
                .iter()
                .zip(&v.delegation_expires)
                .filter(|(link, _)| *link == id)
                .map(|(_, expires)| *expires);
            permit.into_iter().chain(links)
        })
        .max()
}

/// What a decision record says about a permit: its full provenance.
pub fn permit_info(v: &Verified) -> Value {
    json!({
        "id": v.id.to_string(),
        "issuer": v.issuer.to_string(),
        "chain": v.chain.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        "delegation_ids": v.delegation_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "requested_by": v.requested_by,
        "on_behalf_of": v.on_behalf_of,
        "reason": v.reason,
        "cgroup": v.cgroup,
        "descendants": v.descendants,
        "not_before": Timestamp::from_system_time(v.not_before).to_string(),
        "expires": Timestamp::from_system_time(v.expires).to_string(),
        "policy_version": v.policy_version,
        "subject_path": v.subject_path,
    })
}

/// The wall-clock instant of a kernel `CLOCK_BOOTTIME` reading.
fn wall_time_of(boot_ns: u64) -> SystemTime {
    let offset = clock_offset_ns();
    let wall_ns = (i128::from(boot_ns) + offset).max(0) as u128;
    SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(wall_ns.min(u64::MAX as u128) as u64)
}

/// One reading of both clocks, to convert many wall-clock instants to
/// `CLOCK_BOOTTIME` nanoseconds consistently.
struct BootClock {
    offset_ns: i128,
}

impl BootClock {
    fn now() -> Self {
        Self {
            offset_ns: clock_offset_ns(),
        }
    }

    /// `when` on the boot clock (0 when before boot: already expired).
    fn boot_ns(&self, when: SystemTime) -> u64 {
        let wall = match when.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(_) => 0,
        };
        (wall - self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }
}

/// wall clock minus boot clock, in nanoseconds.
fn clock_offset_ns() -> i128 {
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    wall - crate::enforcer::boot_time_ns() as i128
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::testkit::{Kit, DAY, HOUR};

    fn verifier(kit: &Kit) -> Verifier {
        Verifier::new(kit.policy.clone())
    }

    #[test]
    fn a_permit_is_scheduled_until_its_delegation_starts() {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.not_before = kit.at(60));
        let a = kit.team_permit(&d, |_| {});
        let v = verify_ahead(&verifier(&kit), &BTreeMap::new(), &a, kit.system_now()).unwrap();
        assert_eq!(v.not_before, kit.at(60).to_system_time());
        assert_eq!(v.permit_not_before, kit.system_now());
        // What state_of compares: not live before the delegation starts.
        assert!(kit.system_now() < v.not_before);
    }

    #[test]
    fn a_permit_never_in_force_is_refused_with_the_reason_it_is_not_valid_now() {
        let kit = Kit::new();
        let d = kit.delegation(|g| g.not_before = kit.at(2 * HOUR as i64));
        let a = kit.team_permit(&d, |_| {});
        let e = verify_ahead(&verifier(&kit), &BTreeMap::new(), &a, kit.system_now()).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::NotYetValid {
                    part: crate::trust::Part::Delegation { .. },
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn revoking_a_delegation_lasts_until_the_delegation_expires_not_its_permits() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let link = d.links()[0].grant().id;
        let held = kit.verify(&kit.team_permit(&d, |_| {})).unwrap();
        assert_eq!(held.expires, kit.at(HOUR as i64).to_system_time());
        assert_eq!(
            revocation_until([&held], &link),
            Some(kit.at(30 * DAY as i64).to_system_time()),
            "the delegation's own expiry, not its permit's"
        );
        assert_eq!(revocation_until([&held], &held.id), Some(held.expires));
        assert_eq!(revocation_until([&held], &ArtifactId::random()), None);
    }

    #[test]
    fn a_delegation_revoked_while_nothing_under_it_is_held_blocks_later_permits() {
        let kit = Kit::new();
        let d = kit.delegation(|_| {});
        let link = d.links()[0].grant().id;
        let until = revocation_until([], &link);
        assert_eq!(until, None, "nothing held tells its expiry");
        let mut revoked = BTreeMap::new();
        revoked.insert(
            link,
            Revocation {
                observed_seconds: Some(u64::MAX),
                ..Revocation::new(&link, kit.now, until.map(Timestamp::from_system_time), None)
            },
        );
        assert!(!revoked[&link].compactable(kit.at(10 * 365 * DAY as i64)));
        let later = kit.team_permit(&d, |_| {});
        let e = verify_ahead(&verifier(&kit), &revoked, &later, kit.system_now()).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Revoked {
                    part: crate::trust::Part::Delegation { .. }
                }
            ),
            "{e}"
        );
    }
}
