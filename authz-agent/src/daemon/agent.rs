//! The agent's state and the operations on it. One task owns it (the daemon's
//! main loop), so operations never interleave: the store, the permit table
//! and the kernel's maps change together, in a fixed order that keeps them
//! consistent across crashes:
//!
//! - accept: verify, write the artifact to the store (durable), then install it
//!   in the kernel, then answer;
//! - revoke: write the revocation list (durable), then remove from the kernel,
//!   then remove the artifact file, then answer.
//!
//! On start, the store is re-verified and the kernel's permit map reconciled
//! with it, so a crash between any two steps is repaired. Which rows the
//! kernel should hold is the [`PermitTable`]'s business; this module writes
//! them.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Instant, SystemTime},
};

use serde_json::Value;

use super::{
    decisions::Decisions,
    dropped::Ledger,
    loader::{self, NotLoaded},
    permits::{plan, Held, PermitTable, RowChange, RowKey},
    revocations::{revocation_until, Revocations},
};
use crate::{
    artifact::{time::Timestamp, Artifact, ArtifactId},
    audit::{schema::PolicyRef, AuditLog},
    cgroup::Hierarchy,
    control::protocol::{
        ErrorBody, ModeResult, RefusalKind, RevokeAllResult, RevokeResult, SubmitResult,
    },
    enforcer::{clock::BootClock, DecisionEvent, Enforcer, EnforcerError, Mode},
    store::{Revocation, Store},
    trust::Verifier,
};

/// A refused request: its kind and one clear sentence.
pub type Refusal = ErrorBody;

/// How far the wall clock may move against the boot clock before kernel
/// expiries are recomputed (a step, not drift).
const CLOCK_STEP_NS: i128 = 1_000_000_000;

/// Everything the daemon knows.
pub struct Agent {
    pub(super) enforcer: Enforcer,
    pub(super) store: Store,
    pub(super) verifier: Verifier,
    pub(super) hierarchy: Hierarchy,
    pub(super) permits: PermitTable,
    pub(super) revocations: Revocations,
    pub(super) log: Decisions,
    pub(super) started: Instant,
    /// Metrics this agent keeps (the kernel's are read when rendered).
    pub(super) metrics: super::metrics::Metrics,
    /// Permits revoked or expired in this run, for `why`.
    pub(super) gone: super::why::GoneIndex,
    /// What became of each file in the inbox directory, when there is one.
    pub(super) inbox: Option<super::inbox::Ledger>,
    /// The clocks kernel expiries were last computed with.
    clock: BootClock,
    /// The verified index kept in the state directory (cold start).
    pub(super) index: Option<super::index::IndexState>,
}

/// An artifact parsed and verified ahead of its turn ([`Agent::submit_many`]).
struct Checked {
    artifact: Artifact,
    verified: Result<crate::trust::Verified, crate::trust::VerifyError>,
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(RefusalKind::Internal, e.to_string())
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
        let policy = PolicyRef {
            version: verifier.policy().version,
            digest: crate::audit::policy_digest(verifier.policy()),
        };
        Self {
            log: Decisions::new(audit, policy),
            enforcer,
            store,
            verifier,
            hierarchy,
            permits: PermitTable::new(),
            revocations: Revocations::new(revoked),
            started: Instant::now(),
            metrics: super::metrics::Metrics::new(),
            gone: super::why::GoneIndex::default(),
            inbox: None,
            clock: BootClock::now(),
            index: None,
        }
    }

    /// Records an administrative event in the decision log.
    pub fn admin(&mut self, event: &str, detail: Value) {
        self.log.admin(event, detail);
    }

    fn is_revoked(&self) -> impl Fn(&ArtifactId) -> bool + Sync + '_ {
        |id| self.revocations.contains(id)
    }

    /// Loads every stored artifact on start: those the verified index lists
    /// with the same bytes checked for time and revocations only, the others
    /// re-verified; invalid ones reported and skipped (never fatal), expired
    /// ones removed. The index is rewritten if it was behind.
    #[tracing::instrument(skip_all)]
    pub fn load_store(&mut self, now: SystemTime) -> Result<(), crate::store::StoreError> {
        let mut laps = super::laps::Laps::start();
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
        laps.lap("read");
        let index = self.read_index();
        laps.lap("index");
        let mut indexed = match &index {
            Some(index) => loader::check_indexed(index, &self.is_revoked(), &stored, now),
            None => Vec::new(),
        };
        laps.lap("indexed");
        indexed.resize_with(stored.len(), || None);
        let full: Vec<_> = stored
            .iter()
            .zip(&indexed)
            .filter(|(_, r)| r.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        let mut verified =
            loader::verify_store(&self.verifier, &self.is_revoked(), &full, now).into_iter();
        laps.lap("verified");
        let from_index = stored.len() - full.len();
        let unchanged = full.is_empty() && index.is_some_and(|i| i.len() == stored.len());
        let mut accepted = 0;
        for (stored, result) in stored.into_iter().zip(indexed) {
            let result = result
                .or_else(|| verified.next())
                .unwrap_or_else(|| Err(NotLoaded::Invalid("it was not verified".into())));
            match result {
                Ok(verified) => {
                    self.log.remember(&verified);
                    self.permits
                        .insert(stored.id, Held::new(verified, stored.text), now);
                    accepted += 1;
                }
                Err(NotLoaded::Expired(_)) => {
                    tracing::info!(id = %stored.id, "stored artifact expired; removing it");
                    let _ = self.store.remove_artifact(&stored.id);
                }
                Err(NotLoaded::Invalid(why)) => {
                    tracing::warn!(id = %stored.id, path = %stored.path.display(), error = %why, "stored artifact no longer verifies; skipped (kept on disk)");
                }
            }
        }
        laps.lap("held");
        self.index_changed(!unchanged || accepted != from_index);
        self.save_index(true);
        laps.lap("saved");
        tracing::info!(
            accepted,
            from_index,
            verified_in_full = full.len(),
            revoked = self.revocations.len(),
            ms = %laps,
            "store loaded"
        );
        Ok(())
    }

    /// Makes the kernel's permit map exactly what the held artifacts say:
    /// installs what is missing, removes what no valid artifact backs.
    #[tracing::instrument(skip_all)]
    pub fn reconcile(&mut self, now: SystemTime) -> Result<(), EnforcerError> {
        for path in self.permits.cgroup_paths() {
            let id = self.hierarchy.id(&path).ok();
            self.permits.set_cgroup(&path, id);
        }
        self.permits.replace_all(now);
        self.clock = BootClock::now();
        let current: BTreeMap<RowKey, authz_common::Permit> = self
            .enforcer
            .permits()
            .into_iter()
            .map(|(use_, key, p)| (RowKey { use_, key }, p))
            .collect();
        let changes = plan(&current, &self.permits.rows(&self.clock));
        let mut puts = Vec::new();
        let mut removed = 0;
        for change in changes {
            match change {
                RowChange::Put(row, permit) => {
                    let new = !current.contains_key(&row);
                    puts.push((row.use_, row.key, permit, new));
                }
                RowChange::Delete(row) => {
                    self.enforcer.revoke(row.use_, &row.key)?;
                    removed += 1;
                }
            }
        }
        // Every row in a few calls: a start with many permits would
        // otherwise spend most of its time in bpf(2).
        self.enforcer.grant_many(&puts)?;
        let installed = puts.len();
        tracing::info!(
            installed,
            removed_stale = removed,
            "kernel permits reconciled"
        );
        Ok(())
    }

    /// Writes the kernel rows `rows` as the permit table has them now.
    fn write_rows(&mut self, rows: impl IntoIterator<Item = RowKey>) -> Result<(), EnforcerError> {
        for row in rows {
            match self.permits.row(&row, &self.clock) {
                Some(permit) => self.enforcer.grant(row.use_, row.key, permit)?,
                None => {
                    self.enforcer.revoke(row.use_, &row.key)?;
                }
            }
        }
        Ok(())
    }

    /// Learns the id of a cgroup the table has not been told about yet.
    fn learn_cgroup(&mut self, path: &str) {
        if !self.permits.knows_cgroup(path) {
            let id = self.hierarchy.id(path).ok();
            self.permits.set_cgroup(path, id);
        }
    }

    /// `submit`.
    pub fn submit(&mut self, text: &str, now: SystemTime) -> Result<SubmitResult, Refusal> {
        self.submit_checked(text, None, now)
    }

    /// `submit` of many texts at once (a burst into the inbox): each gets
    /// exactly what `submit` would give it, in order, but the signatures of
    /// all are checked first, on every core, with batch verification (the
    /// bulk of a submit's time). Texts that `submit` would turn away before
    /// verifying (malformed, revoked, held already, a second text with the
    /// same id) go through `submit` itself.
    #[tracing::instrument(skip_all, fields(n = texts.len()))]
    pub fn submit_many(
        &mut self,
        texts: &[&str],
        now: SystemTime,
    ) -> Vec<Result<SubmitResult, Refusal>> {
        let mut ids = std::collections::HashSet::new();
        let mut ahead: Vec<(usize, Artifact)> = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let Ok(a) = Artifact::parse(text) else {
                continue;
            };
            if self.revocations.get(&a.id).is_none()
                && !self.permits.contains(&a.id)
                && ids.insert(a.id)
            {
                ahead.push((i, a));
            }
        }
        let artifacts: Vec<&Artifact> = ahead.iter().map(|(_, a)| a).collect();
        let results = loader::verify_many(&self.verifier, &self.is_revoked(), &artifacts, now);
        let mut checked: Vec<Option<Checked>> = texts.iter().map(|_| None).collect();
        for ((i, artifact), verified) in ahead.into_iter().zip(results) {
            checked[i] = Some(Checked { artifact, verified });
        }
        texts
            .iter()
            .zip(checked)
            .map(|(text, checked)| self.submit_checked(text, checked, now))
            .collect()
    }

    /// `submit`, with the artifact parsed and verified already when
    /// `checked` (by [`Agent::submit_many`]); every other check runs here.
    #[tracing::instrument(skip_all, fields(id))]
    fn submit_checked(
        &mut self,
        text: &str,
        checked: Option<Checked>,
        now: SystemTime,
    ) -> Result<SubmitResult, Refusal> {
        // Where a submit's time goes, logged with each acceptance (the
        // benchmark reads it back): parse, verify, store, kernel (parse and
        // verify are near zero for a submit checked in a batch).
        let mut phases = super::laps::Laps::start();
        let (artifact, mut verified_ahead) = match checked {
            Some(c) => (c.artifact, Some(c.verified)),
            None => (
                Artifact::parse(text)
                    .map_err(|e| Refusal::new(RefusalKind::Malformed, e.to_string()))?,
                None,
            ),
        };
        phases.lap("parse");
        let id = artifact.id;
        tracing::Span::current().record("id", tracing::field::display(id));
        if let Some(r) = self.revocations.get(&id) {
            return Err(Refusal::new(
                RefusalKind::Revoked,
                format!("artifact {id} was revoked at {}; a revoked artifact can never be submitted again", r.revoked_at),
            ));
        }
        if let Some(h) = self.permits.get(&id) {
            if h.text == text {
                return Ok(SubmitResult {
                    id: id.to_string(),
                    state: self.permits.state(h, now),
                    already_accepted: true,
                    cgroup: None,
                    cgroup_id: None,
                    not_before: None,
                    expires: None,
                });
            }
        }
        let verified = match verified_ahead.take() {
            Some(result) => result,
            None => loader::verify_ahead(&self.verifier, &self.is_revoked(), &artifact, now),
        }
        .map_err(|e| Refusal::new(RefusalKind::of_verify(&e), e.to_string()))?;
        phases.lap("verify");
        if self.permits.contains(&id) {
            // Validly signed, same id, different content: ids must be unique.
            return Err(Refusal::new(
                RefusalKind::Conflict,
                format!("a different artifact with id {id} is already accepted"),
            ));
        }
        self.store
            .save_artifact(&id, text)
            .map_err(|e| internal(format!("cannot store the artifact: {e}")))?;
        phases.lap("store");
        self.learn_cgroup(&verified.cgroup);
        self.log.remember(&verified);
        let touched = self
            .permits
            .insert(id, Held::new(verified, text.to_owned()), now);
        if let Err(e) = self.write_rows(touched) {
            let (_, touched) = self.permits.remove(&id);
            let _ = self.write_rows(touched);
            let _ = self.store.remove_artifact(&id);
            return Err(match e {
                EnforcerError::PermitsFull(n) => Refusal::new(
                    RefusalKind::Full,
                    format!("the kernel permit map is full ({n} entries); raise agent.max_permits"),
                ),
                other => internal(format!(
                    "cannot install the permit: {}",
                    crate::error_chain(&other)
                )),
            });
        }
        phases.lap("kernel");
        self.index_changed(true);
        let h = self.permits.get(&id).expect("just inserted");
        let v = &h.verified;
        let state = self.permits.state(h, now);
        let (parse_us, verify_us, store_us, kernel_us) = (
            phases.micros("parse"),
            phases.micros("verify"),
            phases.micros("store"),
            phases.micros("kernel"),
        );
        tracing::info!(%id, state = ?state, cgroup = %v.cgroup, parse_us, verify_us, store_us, kernel_us, "artifact accepted");
        Ok(SubmitResult {
            id: id.to_string(),
            state,
            already_accepted: false,
            cgroup: Some(v.cgroup.clone()),
            cgroup_id: self.permits.cgroup_id(&v.cgroup),
            not_before: Some(Timestamp::from_system_time(v.not_before).to_string()),
            expires: Some(Timestamp::from_system_time(v.expires).to_string()),
        })
    }

    /// `revoke ID`: the artifact, or every artifact issued under the
    /// delegation with that id.
    #[tracing::instrument(skip_all, fields(id = id_text))]
    pub fn revoke(
        &mut self,
        id_text: &str,
        reason: Option<String>,
        now: SystemTime,
    ) -> Result<RevokeResult, Refusal> {
        let id: ArtifactId =
            id_text
                .parse()
                .map_err(|e: crate::artifact::fields::BadArtifactId| {
                    Refusal::new(RefusalKind::Malformed, e.to_string())
                })?;
        if self.revocations.contains(&id) {
            return Ok(RevokeResult {
                id: id.to_string(),
                removed: 0,
                already_revoked: true,
                known: false,
            });
        }
        let affected = self.permits.named_by(&id);
        let until = revocation_until(self.permits.iter().map(|(_, h)| &h.verified), &id);
        let stamp = Timestamp::from_system_time(now);
        let added = self.revocations.add([Revocation::new(
            &id,
            stamp,
            until.map(Timestamp::from_system_time),
            reason.clone(),
        )]);
        if let Err(e) = self.revocations.save(&self.store, now) {
            self.revocations.undo(&added);
            return Err(internal(format!("cannot record the revocation: {e}")));
        }
        self.mirror_revocations();
        for a in &affected {
            self.forget(a)
                .map_err(|e| internal(crate::error_chain(&e)))?;
        }
        tracing::warn!(%id, removed = affected.len(), reason = reason.as_deref().unwrap_or(""), "revoked");
        Ok(RevokeResult {
            id: id.to_string(),
            removed: affected.len(),
            already_revoked: false,
            known: !affected.is_empty(),
        })
    }

    /// Records the real time observed for the revocation list (on stop).
    pub fn save_observed_time(&mut self, now: SystemTime) {
        self.revocations.save_observed_time(&self.store, now);
    }

    /// Removes an artifact from the kernel, memory and store.
    pub(super) fn forget(&mut self, id: &ArtifactId) -> Result<(), EnforcerError> {
        let (held, touched) = self.permits.remove(id);
        self.index_changed(held.is_some());
        if let Some(h) = held {
            let why = if self.revocations.contains(id) {
                super::why::GoneWhy::Revoked
            } else {
                super::why::GoneWhy::Expired
            };
            self.gone.record(&h.verified, why, SystemTime::now());
        }
        self.write_rows(touched)?;
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
    ) -> Result<RevokeAllResult, Refusal> {
        let stamp = Timestamp::from_system_time(now);
        let entries: Vec<Revocation> = self
            .permits
            .iter()
            .map(|(id, h)| {
                let until = Timestamp::from_system_time(h.verified.expires);
                Revocation::new(id, stamp, Some(until), reason.clone())
            })
            .collect();
        self.revocations.add(entries);
        let saved = self.revocations.save(&self.store, now);
        self.mirror_revocations();
        // Flush the kernel first either way: incident response must not wait on a disk.
        let flushed = self
            .enforcer
            .flush()
            .map_err(|e| internal(crate::error_chain(&e)))?;
        for (_, h) in self.permits.iter() {
            self.gone
                .record(&h.verified, super::why::GoneWhy::Revoked, now);
        }
        let ids = self.permits.clear();
        self.index_changed(true);
        for id in &ids {
            let _ = self.store.remove_artifact(id);
        }
        tracing::warn!(revoked = ids.len(), flushed, "revoked every permit");
        saved.map_err(|e| {
            internal(format!(
                "the kernel map is flushed, but the revocation list could not be written: {e}"
            ))
        })?;
        Ok(RevokeAllResult {
            revoked: ids.len(),
            flushed,
        })
    }

    /// `mode`.
    pub fn set_mode(&mut self, mode: Mode) -> Result<ModeResult, Refusal> {
        let previous = self.enforcer.mode();
        self.store
            .save_mode(mode)
            .map_err(|e| internal(format!("cannot persist the mode: {e}")))?;
        self.enforcer
            .set_mode(mode)
            .map_err(|e| internal(crate::error_chain(&e)))?;
        tracing::warn!(%previous, %mode, "mode changed");
        Ok(ModeResult { mode, previous })
    }

    /// The cgroups accepted artifacts name, each once.
    pub fn permitted_cgroups(&self) -> Vec<String> {
        self.permits.cgroup_paths().into_iter().collect()
    }

    /// Starts accounting for the kernel's event numbers of the current epoch.
    pub fn start_sequence(&mut self) {
        let fresh = !self.enforcer.adopted();
        self.log.start_sequence(self.enforcer.epoch(), fresh);
    }

    /// A kernel decision arrived.
    pub fn on_event(&mut self, ev: DecisionEvent) {
        self.metrics.on_event(&ev);
        self.log.on_event(ev, &self.hierarchy);
    }

    /// A batch of events was taken off the ring.
    pub fn events_written(&mut self) {
        self.log.events_written();
    }

    fn dropped_total(&self) -> Option<u64> {
        self.enforcer
            .events_dropped()
            .inspect_err(|e| tracing::error!(error = %e, "cannot read the dropped-event counter"))
            .ok()
    }

    /// Periodic: the decision log's bookkeeping.
    pub fn audit_tick(&mut self) {
        let total = self.dropped_total();
        self.log.tick(total);
    }

    /// Signs the chain head (on stop and rotation).
    pub fn audit_checkpoint(&mut self, why: &str) {
        self.log.checkpoint(why);
    }

    /// Reports what the kernel dropped since the last run's report, then
    /// keeps `ledger` up to date.
    pub fn account_dropped_while_down(&mut self, ledger: Ledger) {
        let total = self.dropped_total().unwrap_or(0);
        self.log
            .account_dropped_while_down(ledger, self.enforcer.adopted(), total);
    }

    /// Periodic: cgroups that appeared, vanished or were re-created.
    pub fn poll_cgroups(&mut self, now: SystemTime) {
        let mut changed = false;
        for (path, old) in self.permits.cgroups() {
            let current = self.hierarchy.id(&path).ok();
            if self.permits.set_cgroup(&path, current) {
                tracing::info!(cgroup = %path, old = ?old, new = ?current, "cgroup changed");
                changed = true;
            }
        }
        if changed {
            let touched = self.permits.replace_all(now);
            if let Err(e) = self.write_rows(touched) {
                tracing::error!(error = %crate::error_chain(&e), "cannot update permits for their cgroups");
            }
        }
    }

    /// Compares what the kernel enforces with what this agent holds (its
    /// configuration, scope, filesystem policy, role, pins, and every permit
    /// row), puts back whatever differs, and writes a `tamper` record for
    /// each difference. Periodic, and before every `status`.
    pub fn check_integrity(&mut self) -> Vec<crate::enforcer::Tamper> {
        let mut found = self.enforcer.repair();
        let kernel: BTreeMap<RowKey, authz_common::Permit> = self
            .enforcer
            .permits()
            .into_iter()
            .map(|(use_, key, p)| (RowKey { use_, key }, p))
            .collect();
        let changes = plan(&kernel, &self.permits.rows(&self.clock));
        if !changes.is_empty() {
            let (mut extra, mut missing) = (0, 0);
            for change in &changes {
                let result = match *change {
                    RowChange::Put(row, permit) => {
                        missing += 1;
                        self.enforcer.grant(row.use_, row.key, permit)
                    }
                    RowChange::Delete(row) => {
                        extra += 1;
                        self.enforcer.revoke(row.use_, &row.key).map(|_| ())
                    }
                };
                if let Err(e) = result {
                    tracing::error!(error = %crate::error_chain(&e), "cannot restore a permit row");
                }
            }
            found.push(crate::enforcer::Tamper::new(
                "permits",
                format!("{extra} rows nobody granted, {missing} rows changed or missing"),
                "the rows the accepted artifacts call for".into(),
            ));
        }
        for t in &found {
            self.log.admin("tamper", serde_json::json!(t));
        }
        found
    }

    /// When the next scheduled artifact's window opens.
    pub fn next_start(&self, now: SystemTime) -> Option<SystemTime> {
        self.permits.next_start(now)
    }

    /// Installs the artifacts whose window has opened: at that instant (the
    /// daemon wakes for it) and before any answer that reports states, so
    /// `live` in `list` always means the kernel has the rows.
    pub fn activate_due(&mut self, now: SystemTime) {
        let mut touched = BTreeSet::new();
        for id in self.permits.due(now) {
            touched.extend(self.permits.place(&id, now));
        }
        if touched.is_empty() {
            return;
        }
        if let Err(e) = self.write_rows(touched) {
            tracing::error!(error = %crate::error_chain(&e), "cannot install permits whose time came");
        }
    }

    /// Periodic: kernel expiries follow wall-clock steps; expired artifacts
    /// leave the kernel and the store; scheduled ones whose time came are
    /// installed; revocations are credited with the real time observed and
    /// compacted by the rule in [`crate::store`].
    pub fn sweep(&mut self, now: SystemTime) {
        let clock = BootClock::now();
        if (clock.offset_ns() - self.clock.offset_ns()).abs() > CLOCK_STEP_NS {
            tracing::info!("wall clock stepped; recomputing kernel expiries");
            self.clock = clock;
            let rows: BTreeSet<RowKey> = self.permits.rows(&self.clock).into_keys().collect();
            if let Err(e) = self.write_rows(rows) {
                tracing::error!(error = %crate::error_chain(&e), "cannot rewrite kernel expiries");
            }
        }
        for id in self.permits.expired(now) {
            tracing::info!(%id, "permit expired; removing");
            if let Err(e) = self.forget(&id) {
                tracing::error!(%id, error = %crate::error_chain(&e), "sweep failed for a permit");
            }
        }
        let touched = self.permits.replace_all(now);
        if let Err(e) = self.write_rows(touched) {
            tracing::error!(error = %crate::error_chain(&e), "sweep failed to place permits");
        }
        self.revocations.sweep(&self.store, now);
        self.mirror_revocations();
        self.save_index(false);
    }
}
