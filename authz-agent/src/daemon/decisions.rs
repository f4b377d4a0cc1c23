//! From what the kernel decided to the decision log: each event becomes one
//! record (with the provenance of the permits it names), refusals are made
//! durable at once, the kernel's numbering is accounted for (numbers that
//! never reached the log get an `events-missing` record), events the kernel
//! dropped get an `events-dropped` record, and refusals feed the rollout
//! report.
use std::{
    collections::HashMap,
    time::{Instant, SystemTime},
};

use serde_json::{json, Value};

use super::{
    dropped::Ledger,
    report::WouldDeny,
    sequence::{Admit, Sequence, GAP_GRACE},
};
use crate::{
    artifact::ArtifactId,
    audit::{
        record::rfc3339_nanos,
        schema::{self, KernelNumber, PolicyRef},
        AuditLog,
    },
    cgroup::Hierarchy,
    enforcer::{clock::BootClock, Decision, DecisionEvent},
    trust::Verified,
};

/// The decision log and what the daemon keeps to write it.
pub struct Decisions {
    audit: AuditLog,
    policy: PolicyRef,
    /// Provenance of every artifact accepted in this run, for decision records
    /// about permits since expired or revoked.
    known: HashMap<ArtifactId, Value>,
    cgroup_names: HashMap<u64, String>,
    cgroup_names_refreshed: Option<Instant>,
    /// How much of the kernel's dropped-event counter the log has reported.
    dropped_logged: u64,
    dropped_ledger: Option<Ledger>,
    /// Which kernel event numbers the log holds (set once the epoch is known).
    sequence: Option<Sequence>,
    /// A refusal was written since the log was last made durable.
    sync_due: bool,
    report: WouldDeny,
    /// Events received in this run.
    events: u64,
}

impl Decisions {
    pub fn new(audit: AuditLog, policy: PolicyRef) -> Self {
        Self {
            audit,
            policy,
            known: HashMap::new(),
            cgroup_names: HashMap::new(),
            cgroup_names_refreshed: None,
            dropped_logged: 0,
            dropped_ledger: None,
            sequence: None,
            sync_due: false,
            report: WouldDeny::default(),
            events: 0,
        }
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn policy(&self) -> &PolicyRef {
        &self.policy
    }

    /// The trust policy later records name (a reload changed it).
    pub fn set_policy(&mut self, policy: PolicyRef) {
        self.policy = policy;
    }

    pub fn audit_mut(&mut self) -> &mut AuditLog {
        &mut self.audit
    }

    pub fn events_received(&self) -> u64 {
        self.events
    }

    pub fn report(&self) -> &WouldDeny {
        &self.report
    }

    /// Remembers an accepted artifact's provenance for later records.
    pub fn remember(&mut self, v: &Verified) {
        self.known.insert(v.id, schema::permit_info(v));
    }

    /// Records an administrative event.
    pub fn admin(&mut self, event: &str, detail: Value) {
        let body = schema::admin_body(event, detail, &self.policy);
        if let Err(e) = self.audit.append("admin", SystemTime::now(), body) {
            tracing::error!(error = %e, "cannot write the decision log");
        }
    }

    /// Starts accounting for the kernel's numbering of `epoch` from what the
    /// log already holds (`fresh`: the maps, and so the numbering, are new).
    pub fn start_sequence(&mut self, epoch: u64, fresh: bool) {
        let seen = crate::audit::kernel_seen(self.audit.path(), epoch).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read back the log's event numbers");
            Vec::new()
        });
        let sequence = Sequence::recover(epoch, fresh, &seen);
        if let Some(low) = sequence.low() {
            self.audit.set_kernel_events(epoch, low);
        }
        self.sequence = Some(sequence);
    }

    /// A kernel decision arrived: logged (the kernel already sampled allowed
    /// ones), aggregated for the report. One the log already holds (read again
    /// after a restart) is skipped.
    pub fn on_event(&mut self, ev: DecisionEvent, hierarchy: &Hierarchy) {
        let mut number = None;
        if let Some(sequence) = self.sequence.as_mut() {
            let unknown_start = sequence.low().is_none() && ev.seq != 0;
            if sequence.admit(ev.seq, ev.boot_ns, Instant::now()) == Admit::Duplicate {
                return;
            }
            let epoch = sequence.epoch();
            if ev.seq != 0 {
                number = Some(KernelNumber { seq: ev.seq, epoch });
            }
            if unknown_start {
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
        let cgroup = self.cgroup_name(ev.cgroup_id, hierarchy);
        let permit = self.provenance(&ev.permit_id);
        let parent = self.provenance(&ev.parent_permit_id);
        let body = schema::exec_body(&ev, cgroup, permit, parent, number, &self.policy);
        let time = BootClock::now().wall(ev.boot_ns);
        if let Err(e) = self.audit.exec(time, body) {
            tracing::error!(error = %e, "cannot write the decision log");
        }
        match ev.decision {
            Decision::Allow => {
                tracing::debug!(path = %ev.path, reason = %ev.reason, "exec allowed")
            }
            _ => {
                self.sync_due = true;
                tracing::info!(
                    decision = %ev.decision, reason = %ev.reason, path = %ev.path, pid = ev.pid,
                    uid = ev.uid, cgroup_id = ev.cgroup_id, digest = ev.digest.as_deref().unwrap_or("-"),
                    "exec refused"
                );
                self.report.record(&ev);
            }
        }
    }

    fn provenance(&self, id: &Option<String>) -> Value {
        match id {
            None => Value::Null,
            Some(hex_id) => hex_id
                .parse::<ArtifactId>()
                .ok()
                .and_then(|a| self.known.get(&a))
                .cloned()
                .unwrap_or_else(|| schema::unknown_permit(hex_id)),
        }
    }

    /// A cgroup's path for logs (the hierarchy is re-read at most once a second
    /// when an id is unknown).
    fn cgroup_name(&mut self, id: u64, hierarchy: &Hierarchy) -> Option<String> {
        if let Some(n) = self.cgroup_names.get(&id) {
            return Some(n.clone());
        }
        if self
            .cgroup_names_refreshed
            .is_none_or(|t| t.elapsed().as_secs() >= 1)
        {
            self.cgroup_names = hierarchy.names().into_iter().collect();
            self.cgroup_names_refreshed = Some(Instant::now());
        }
        self.cgroup_names.get(&id).cloned()
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

    /// Periodic: numbers that never reached the log, drops the kernel counted
    /// (`dropped_total`: its counter now), then flush and checkpoint.
    pub fn tick(&mut self, dropped_total: Option<u64>) {
        self.account_sequence();
        let total = dropped_total.unwrap_or(self.dropped_logged);
        self.report_dropped(total, "while running");
        if let Err(e) = self.audit.tick() {
            tracing::error!(error = %e, "cannot flush the decision log");
        }
    }

    /// Signs the chain head (on stop and rotation).
    pub fn checkpoint(&mut self, why: &str) {
        if let Err(e) = self.audit.checkpoint(why) {
            tracing::error!(error = %e, "cannot checkpoint the decision log");
        }
    }

    /// Starts accounting for dropped events: reports what the kernel dropped
    /// since the last run's report (while no agent was running, the ring
    /// fills), then keeps `ledger` up to date after each report.
    pub fn account_dropped_while_down(&mut self, ledger: Ledger, adopted: bool, total: u64) {
        self.dropped_logged = ledger.reported(adopted, total);
        self.dropped_ledger = Some(ledger);
        self.report_dropped(total, "before this agent started");
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

    /// Reports event numbers that never reached the log (a crash between
    /// taking them off the ring and writing them), and tells checkpoints how
    /// far the numbering is accounted for.
    fn account_sequence(&mut self) {
        let Some(sequence) = self.sequence.as_mut() else {
            return;
        };
        let epoch = sequence.epoch();
        let mut gaps = Vec::new();
        while let Some(gap) = sequence.overdue(Instant::now(), GAP_GRACE) {
            gaps.push(gap);
        }
        let low = sequence.low();
        let clock = BootClock::now();
        for gap in gaps {
            tracing::warn!(
                missing = gap.count(),
                from = gap.from,
                to = gap.to,
                "kernel decisions never reached the decision log"
            );
            let when = |ns: u64| rfc3339_nanos(clock.wall(ns));
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
}
