//! The trust policy the targets verify against: the worked example's root key
//! (secret seed 32 bytes of 0x01) trusted for /jobs.slice, 7 days, so that the
//! seed permits are valid and the fuzzer reaches every check.
use std::{sync::OnceLock, time::SystemTime};

use authz_agent::{
    artifact::{CgroupPath, Timestamp},
    trust::{policy::RootKey, TrustPolicy, Verifier},
};

pub fn policy() -> &'static TrustPolicy {
    static POLICY: OnceLock<TrustPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let root = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        let jobs = CgroupPath::normalize("/jobs.slice").expect("valid");
        TrustPolicy::new(1, vec![RootKey::new(Some("example root".into()), root, vec![jobs], 7 * 86_400)])
    })
}

#[allow(dead_code)] // the delegation target does not use it
pub fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| Verifier::new(policy().clone()))
}

/// 2025-01-02T01:00:00Z: inside the seed permit's window.
pub fn now() -> SystemTime {
    "2025-01-02T01:00:00Z"
        .parse::<Timestamp>()
        .expect("valid")
        .to_system_time()
}
