//! What the agent answers about its state: `list`, `status`, `report`.
use std::{collections::BTreeMap, time::SystemTime};

use super::agent::Agent;
use crate::{
    artifact::time::Timestamp,
    control::protocol::{KernelInfo, ListResult, PermitEntry, ReportResult, StatusResult, Window},
    enforcer::Mode,
};

impl Agent {
    /// `list`.
    pub fn list(&self, now: SystemTime) -> ListResult {
        let ts = |t: SystemTime| Timestamp::from_system_time(t).to_string();
        let permits = self
            .permits
            .iter()
            .map(|(id, h)| {
                let v = &h.verified;
                PermitEntry {
                    id: id.to_string(),
                    state: self.permits.state(h, now),
                    digest: hex::encode(v.digest),
                    cgroup: v.cgroup.clone(),
                    cgroup_id: self.permits.cgroup_id(&v.cgroup),
                    descendants: v.descendants,
                    not_before: ts(v.not_before),
                    expires: ts(v.expires),
                    permit_validity: Window {
                        not_before: ts(v.permit_not_before),
                        expires: ts(v.permit_expires),
                    },
                    issuer: v.issuer.to_string(),
                    chain: v.chain.iter().map(|k| k.to_string()).collect(),
                    policy_version: v.policy_version,
                    requested_by: v.requested_by.clone(),
                    on_behalf_of: v.on_behalf_of.clone(),
                    reason: v.reason.clone(),
                    subject_path: v.subject_path.clone(),
                    subject_name: v.subject_name.clone(),
                    libraries: v.libraries.iter().map(hex::encode).collect(),
                    exec_memory: v.exec_memory,
                }
            })
            .collect();
        ListResult {
            permits,
            revoked: self.revocations.len(),
            inbox: self.inbox.as_ref().map(|l| l.status()),
        }
    }

    /// `status`.
    pub fn status(&self, now: SystemTime) -> StatusResult {
        let counters = self.enforcer.counters().ok().map(|c| {
            c.into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<BTreeMap<String, u64>>()
        });
        let config = self.enforcer.config();
        let kernel = self.enforcer.kernel();
        let policy = self.log.policy();
        // What the kernel really holds, not what this agent last wrote.
        let kernel_config = self.enforcer.kernel_config().ok();
        let config = kernel_config.unwrap_or(config);
        StatusResult {
            mode: Mode::from_raw(config.mode),
            libraries: Mode::from_raw(config.libraries),
            exec_memory: match Mode::from_raw(config.exec_memory) {
                Mode::Off => "allow",
                Mode::Audit => "audit",
                Mode::Enforce => "deny",
            }
            .into(),
            scope: if config.scope == authz_common::scope::SUBTREES {
                "subtrees"
            } else {
                "host"
            }
            .into(),
            enforced_cgroups: self.enforcer.scope_paths().to_vec(),
            permits: self.permits.states(now),
            kernel_permit_entries: self.enforcer.permits().len(),
            lockdown: config.lockdown == 1,
            revoked: self.revocations.len(),
            events_dropped: counters
                .as_ref()
                .and_then(|c| c.get("events_dropped").copied()),
            counters,
            events_received: self.log.events_received(),
            kernel: KernelInfo {
                release: kernel.release.clone(),
                active_lsms: kernel.active_lsms.clone(),
                ima: kernel.ima.clone(),
            },
            bpf_lsm: "attached".into(),
            pinned_state_adopted: self.enforcer.adopted(),
            policy_version: policy.version,
            policy_digest: policy.digest.clone(),
            audit_log: self.log.audit().path().to_owned(),
            audit_key_id: self.log.audit().key_id().to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// `report`.
    pub fn report(&self) -> ReportResult {
        self.log.report().result(&self.hierarchy)
    }
}
