//! The tamper-evident decision log.
//!
//! One JSON object per line (`decisions.jsonl`). Every record carries:
//!
//! - `seq`: its position in the chain, consecutive across files and restarts;
//! - `prev`: the SHA-256 (hex) of the previous record's line, exactly as
//!   written (without the newline); the very first record has 64 zeros.
//!
//! Editing, deleting, inserting or reordering a record breaks the link from the
//! next record. An attacker who rewrites the whole tail can recompute the
//! hashes, so the daemon also writes **checkpoints**: records whose ed25519
//! signature (by the daemon's own key, `state_dir/audit.key`) covers the
//! position and the hash of the record before it. `authz-agent audit verify`
//! recomputes the chain, checks every checkpoint signature with the public key
//! (`state_dir/audit.pub`) and reports the first broken link. Records written
//! after the last checkpoint are protected by the chain only: the daemon
//! checkpoints periodically, on rotation and when it stops.
//!
//! Rotation renames the file to `decisions-<first seq>.jsonl` after a
//! checkpoint; the new file's first record links to that checkpoint, so the
//! chain continues: verify the files in order.
pub mod explain;
pub mod history;
pub mod record;
pub mod schema;
pub mod verify;
pub mod writer;

pub use record::{hash_line, Record, GENESIS};
pub use verify::{verify_files, Broken, VerifyReport};
pub use writer::{kernel_seen, AuditConfig, AuditLog, KernelSeen, Sampling};

/// Domain separation for checkpoint signatures.
pub const CHECKPOINT_DOMAIN: &str = "authz-audit-checkpoint v1";

/// The bytes a checkpoint signs: the domain, then the checkpoint record
/// itself serialized without its `signature` field (so its position, the
/// chain head it follows and its counts are all covered).
pub fn checkpoint_message(unsigned: &Record) -> Vec<u8> {
    let mut msg = format!("{CHECKPOINT_DOMAIN}\n").into_bytes();
    msg.extend_from_slice(
        serde_json::to_string(unsigned)
            .unwrap_or_default()
            .as_bytes(),
    );
    msg
}

/// A stable digest of a trust policy: which policy decided, recorded with every
/// decision. Order-independent in the retired list; roots in file order.
pub fn policy_digest(policy: &crate::trust::TrustPolicy) -> String {
    use sha2::{Digest as _, Sha256};
    let mut retired: Vec<String> = policy.retired.iter().map(|k| k.to_string()).collect();
    retired.sort();
    let roots: Vec<serde_json::Value> = policy
        .roots
        .iter()
        .map(|r| {
            serde_json::json!({
                "key_id": r.key_id.to_string(),
                "cgroup_prefixes": r.cgroup_prefixes.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>(),
                "max_ttl_seconds": r.max_ttl_seconds,
            })
        })
        .collect();
    let canonical = serde_json::json!({
        "version": policy.version,
        "min_version": policy.min_version,
        "max_chain_length": policy.max_chain_length,
        "retired": retired,
        "roots": roots,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}
