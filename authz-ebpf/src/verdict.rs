//! Finding a live permit: the same lookup for an exec (the permit map) and
//! for a file mapped executable (the permit map, then the mapping map).
use authz_common::{reason, Digest, Permit, PermitKey, ARTIFACT_ID_LEN, MAX_CGROUP_DEPTH};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_ktime_get_boot_ns},
    maps::HashMap,
};

use crate::maps;

/// What the lookup found.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: u32,
    /// cgroup the permit was granted to (0 when none was found).
    pub permit_cgroup_id: u64,
    /// Expiry of the permit slot that decided (0 when none).
    pub expires_boot_ns: u64,
    /// Artifact behind that slot.
    pub artifact_id: [u8; ARTIFACT_ID_LEN],
}

impl Verdict {
    pub const fn refused(reason: u32) -> Self {
        Self {
            allowed: false,
            reason,
            permit_cgroup_id: 0,
            expires_boot_ns: 0,
            artifact_id: [0; ARTIFACT_ID_LEN],
        }
    }

    pub const fn allowed(
        reason: u32,
        cgroup_id: u64,
        expires_boot_ns: u64,
        artifact_id: [u8; ARTIFACT_ID_LEN],
    ) -> Self {
        Self {
            allowed: true,
            reason,
            permit_cgroup_id: cgroup_id,
            expires_boot_ns,
            artifact_id,
        }
    }
}

/// Finds a live permit for `digest` in `cgroup_id` or, flagged "descendants", in
/// one of its ancestors. Expiry is checked here, against the boot clock, so an
/// expired permit refuses whether or not the agent has removed it yet.
#[inline(always)]
pub fn lookup(map: &HashMap<PermitKey, Permit>, digest: &Digest, cgroup_id: u64) -> Verdict {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut key = PermitKey {
        digest: *digest,
        cgroup_id,
    };
    let mut expired = false;

    // SAFETY: the map value is copied out before the next helper call.
    if let Some(permit) = unsafe { map.get(&key) }.copied() {
        // Own cgroup: either slot covers it.
        if permit.expires_boot_ns > now {
            return Verdict::allowed(
                reason::PERMIT,
                cgroup_id,
                permit.expires_boot_ns,
                permit.artifact_id,
            );
        }
        if permit.descendants_expires_boot_ns > now {
            return Verdict::allowed(
                reason::PERMIT,
                cgroup_id,
                permit.descendants_expires_boot_ns,
                permit.descendants_artifact_id,
            );
        }
        expired = true;
    }

    // Level 0 is the root cgroup; the walk stops at the caller's own level.
    let mut level: u32 = 0;
    while level < MAX_CGROUP_DEPTH {
        // SAFETY: helper taking a plain integer.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == 0 || ancestor == cgroup_id {
            break;
        }
        key.cgroup_id = ancestor;
        // SAFETY: as above.
        if let Some(permit) = unsafe { map.get(&key) }.copied() {
            // An ancestor's permit counts only in its descendants slot.
            if permit.descendants_expires_boot_ns > now {
                return Verdict::allowed(
                    reason::PERMIT_INHERITED,
                    ancestor,
                    permit.descendants_expires_boot_ns,
                    permit.descendants_artifact_id,
                );
            }
            if permit.descendants_expires_boot_ns != 0 {
                expired = true;
            }
        }
        level += 1;
    }

    if expired {
        Verdict::refused(reason::EXPIRED)
    // SAFETY: only tests for presence.
    } else if unsafe { maps::DIGESTS.get(digest) }.is_some() {
        Verdict::refused(reason::WRONG_CGROUP)
    } else {
        Verdict::refused(reason::NO_PERMIT)
    }
}
