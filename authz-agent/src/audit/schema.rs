//! What the daemon's records say: the fields of an `exec` record (a kernel
//! decision) and of an `admin` record (an operator or daemon action). One
//! place, so the log's schema is written once.
use serde_json::{json, Map, Value};

use crate::{artifact::time::Timestamp, enforcer::DecisionEvent, trust::Verified};

/// The trust policy every record names (what the decision was taken under).
#[derive(Clone, Debug)]
pub struct PolicyRef {
    pub version: u32,
    pub digest: String,
}

impl PolicyRef {
    fn stamp(&self, m: &mut Map<String, Value>) {
        m.insert("policy_version".into(), json!(self.version));
        m.insert("policy_digest".into(), json!(self.digest));
    }
}

/// What a decision record says about a permit: its full provenance, copied
/// in so the record stays readable after the permit expired or was revoked.
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

/// A permit this agent run knows nothing about (accepted by an earlier run
/// and gone since).
pub fn unknown_permit(hex_id: &str) -> Value {
    json!({ "id": hex_id, "provenance": "unknown to this agent run" })
}

/// The kernel's numbering of a decision event.
#[derive(Clone, Copy, Debug)]
pub struct KernelNumber {
    pub seq: u64,
    pub epoch: u64,
}

/// The fields of an `exec` record for a kernel decision.
pub fn exec_body(
    ev: &DecisionEvent,
    cgroup: Option<String>,
    permit: Value,
    parent_permit: Value,
    number: Option<KernelNumber>,
    policy: &PolicyRef,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("decision".into(), json!(ev.decision));
    m.insert("hook".into(), json!(ev.hook));
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
    m.insert("parent_permit".into(), parent_permit);
    policy.stamp(&mut m);
    if let Some(n) = number {
        m.insert("kseq".into(), json!(n.seq));
        m.insert("kepoch".into(), json!(format!("{:016x}", n.epoch)));
    }
    m
}

/// The fields of an `admin` record.
pub fn admin_body(event: &str, detail: Value, policy: &PolicyRef) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event".into(), json!(event));
    m.insert("detail".into(), detail);
    policy.stamp(&mut m);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_records_carry_the_kernel_number_only_when_known() {
        let ev = crate::enforcer::DecisionEvent::from_raw(&authz_common::ExecEvent::zeroed());
        let policy = PolicyRef {
            version: 3,
            digest: "ab".into(),
        };
        let numbered = exec_body(
            &ev,
            Some("/x".into()),
            Value::Null,
            Value::Null,
            Some(KernelNumber {
                seq: 7,
                epoch: 0x2a,
            }),
            &policy,
        );
        assert_eq!(numbered["kseq"], 7);
        assert_eq!(numbered["kepoch"], "000000000000002a");
        assert_eq!(numbered["policy_version"], 3);
        assert_eq!(numbered["actor"]["cgroup"], "/x");
        let unnumbered = exec_body(&ev, None, Value::Null, Value::Null, None, &policy);
        assert!(unnumbered.get("kseq").is_none());
        let admin = admin_body("start", json!({"a": 1}), &policy);
        assert_eq!(admin["event"], "start");
        assert_eq!(admin["policy_digest"], "ab");
    }
}
