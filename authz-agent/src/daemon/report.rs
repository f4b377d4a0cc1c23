//! The rollout report: which execs were refused, or in audit mode would have
//! been, grouped by binary, cgroup and reason. Run `mode audit` first, read
//! `authz-agent report`, issue the permits it shows are missing, then
//! `mode enforce` — without locking anyone out.
use std::collections::BTreeMap;

use crate::{
    cgroup::Hierarchy,
    control::protocol::{ReportResult, ReportRow},
    enforcer::DecisionEvent,
};

/// Distinct (binary, cgroup, reason) rows kept; later ones are counted only.
const MAX_ROWS: usize = 10_000;

#[derive(Clone, Debug)]
struct Row {
    path: String,
    comm: String,
    uid: u32,
    decision: &'static str,
    count: u64,
    first_boot_ns: u64,
    last_boot_ns: u64,
}

/// Aggregated refusals since the agent started.
#[derive(Debug, Default)]
pub struct WouldDeny {
    rows: BTreeMap<(String, u64, &'static str), Row>,
    overflow: u64,
}

impl WouldDeny {
    pub fn record(&mut self, ev: &DecisionEvent) {
        let binary = ev
            .digest
            .clone()
            .unwrap_or_else(|| format!("path:{}", ev.path));
        let key = (binary, ev.cgroup_id, ev.reason.as_str());
        if let Some(row) = self.rows.get_mut(&key) {
            row.count += 1;
            row.last_boot_ns = ev.boot_ns;
            row.decision = ev.decision.as_str();
            return;
        }
        if self.rows.len() >= MAX_ROWS {
            self.overflow += 1;
            return;
        }
        self.rows.insert(
            key,
            Row {
                path: ev.path.clone(),
                comm: ev.comm.clone(),
                uid: ev.uid,
                decision: ev.decision.as_str(),
                count: 1,
                first_boot_ns: ev.boot_ns,
                last_boot_ns: ev.boot_ns,
            },
        );
    }

    pub fn result(&self, hierarchy: &Hierarchy) -> ReportResult {
        let names = hierarchy.names();
        let clock = crate::enforcer::clock::BootClock::now();
        let wall = |ns: u64| Some(crate::audit::record::rfc3339_nanos(clock.wall(ns)));
        let mut rows: Vec<ReportRow> = self
            .rows
            .iter()
            .map(|((binary, cgroup_id, reason), r)| ReportRow {
                digest: binary
                    .strip_prefix("path:")
                    .is_none()
                    .then(|| binary.clone()),
                path: r.path.clone(),
                comm: r.comm.clone(),
                uid: r.uid,
                cgroup_id: *cgroup_id,
                cgroup: names.get(cgroup_id).cloned(),
                reason: (*reason).to_owned(),
                decision: r.decision.to_owned(),
                count: r.count,
                first_boot_ns: r.first_boot_ns,
                last_boot_ns: r.last_boot_ns,
                first_time: wall(r.first_boot_ns),
                last_time: wall(r.last_boot_ns),
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.count));
        ReportResult {
            rows,
            not_shown: self.overflow,
            since: None,
            records_read: None,
        }
    }
}
