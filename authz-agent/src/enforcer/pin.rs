//! Enforcement that outlives the daemon: maps and links pinned in bpffs.
//!
//! ```text
//! /sys/fs/bpf/authz/
//!   link-bprm_check_security   the attached programs (a pinned link keeps its
//!   link-file_open              program attached with no process holding it)
//!   maps-<layout>/PERMITS ...  the maps, in a directory named for their layout
//! ```
//!
//! A restart loads the programs again, reusing the maps of the same layout (so
//! permits, mode, counters, the digest cache and undelivered events carry over),
//! attaches them, and only then swaps each link pin with `rename(2)`, which
//! replaces the old pin atomically: at every instant at least one copy of the
//! program is attached. A new layout (a different permit capacity, or an agent
//! whose map types changed) gets fresh maps, which the daemon fills from its
//! store before attaching; the old maps are removed once nothing uses them.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use authz_common::{
    CacheEntry, Config, Digest, ExecEvent, Permit, PermitKey, ScopeKey, ScopeNode, MAX_FILESYSTEMS,
    MAX_SCOPE_NODES,
};

use super::maps;
use aya::programs::links::FdLink;
use sha2::{Digest as _, Sha256};

/// Every map of the object that outlives a run, by name. (`authz_role` is
/// not here: each loaded copy has its own, see `authz_common::role`.)
pub const MAPS: [&str; 16] = [
    maps::CONFIG,
    maps::OWN,
    maps::AGENTS,
    maps::GUARD,
    maps::REVOKED,
    maps::PERMITS,
    maps::MAPPINGS,
    maps::JIT,
    maps::DIGESTS,
    maps::SCOPE,
    maps::FILESYSTEMS,
    maps::SEQ,
    maps::COUNTERS,
    maps::EVENTS,
    maps::DIGEST_CACHE,
    maps::TASK_LABELS,
];

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("bpffs is not mounted at /sys/fs/bpf and mounting it failed")]
    Bpffs(#[source] io::Error),
    #[error("{0}")]
    Io(PathBuf, #[source] io::Error),
    #[error("cannot pin the {0} link")]
    PinLink(&'static str, #[source] aya::pin::PinError),
}

/// Identifies the maps' shape: names, key/value sizes, capacities. Two agents
/// share pinned maps only if their layouts are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout(String);

impl Layout {
    pub fn new(max_permits: u32, ring_bytes: u32) -> Self {
        use std::mem::size_of;
        let description = format!(
            "v5 own:{}:{} agents:{} guard:{} revoked:{} {}:4:{}:1 {}:{}:{}:{max_permits} {}:{}:{}:{max_permits}:noprealloc {}:{}:{}:{max_permits}:noprealloc {}:{}:4:{max_permits} \
             {}:{}:{}:{MAX_SCOPE_NODES} {}:8:4:{MAX_FILESYSTEMS} {}:4:8:{} {}:4:8:{} \
             {}:{ring_bytes}:{} {}:{} {}:{}",
            size_of::<authz_common::OwnKey>(),
            authz_common::MAX_OWN,
            authz_common::MAX_AGENTS,
            size_of::<authz_common::Guard>(),
            authz_common::MAX_REVOKED,
            maps::CONFIG,
            size_of::<Config>(),
            maps::PERMITS,
            size_of::<PermitKey>(),
            size_of::<Permit>(),
            maps::MAPPINGS,
            size_of::<PermitKey>(),
            size_of::<Permit>(),
            maps::JIT,
            size_of::<PermitKey>(),
            size_of::<Permit>(),
            maps::DIGESTS,
            size_of::<Digest>(),
            maps::SCOPE,
            size_of::<ScopeKey>(),
            size_of::<ScopeNode>(),
            maps::FILESYSTEMS,
            maps::SEQ,
            authz_common::seq::SLOTS,
            maps::COUNTERS,
            authz_common::counter::COUNT,
            maps::EVENTS,
            size_of::<ExecEvent>(),
            maps::DIGEST_CACHE,
            size_of::<CacheEntry>(),
            maps::TASK_LABELS,
            size_of::<authz_common::TaskLabel>(),
        );
        let digest = Sha256::digest(description.as_bytes());
        Self(hex::encode(&digest[..6]))
    }

    pub fn maps_dir(&self, pin_dir: &Path) -> PathBuf {
        pin_dir.join(format!("maps-{}", self.0))
    }
}

fn link_path(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join(format!("link-{program}"))
}

/// Pins `link` as the program's link, replacing an earlier pin atomically.
/// Returns the link again: the agent keeps its descriptor, so removing the
/// pin detaches nothing while it runs (and it can pin it again).
pub fn pin_link(pin_dir: &Path, program: &'static str, link: FdLink) -> Result<FdLink, PinError> {
    let final_path = link_path(pin_dir, program);
    // No dots: bpffs refuses names containing '.' with EPERM.
    let temp = pin_dir.join(format!("new-link-{program}"));
    let _ = fs::remove_file(&temp);
    let pinned = link.pin(&temp).map_err(|e| PinError::PinLink(program, e))?;
    // rename(2) over the old pin: the old link loses its last reference and
    // detaches only after the new one is in place.
    fs::rename(&temp, &final_path).map_err(|e| PinError::Io(final_path.clone(), e))?;
    tracing::debug!(path = %final_path.display(), "link pinned");
    Ok(FdLink::from(pinned))
}

/// Where the link of `program` is pinned.
pub fn link_pin(pin_dir: &Path, program: &str) -> PathBuf {
    link_path(pin_dir, program)
}

/// Removes the link pins of programs this agent does not attach (the path
/// guard after lockdown ended, a setattr variant of another kernel).
pub fn remove_stale_links(pin_dir: &Path, attached: &[&str]) {
    for program in super::ALL_PROGRAMS {
        if attached.contains(&program) {
            continue;
        }
        let path = link_path(pin_dir, program);
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed the pin of a program no longer attached")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale link pin")
            }
        }
    }
}

/// Removes map directories of other layouts (their programs were detached by
/// the link swap, so nothing uses them any more).
pub fn remove_stale_maps(pin_dir: &Path, current: &Layout) {
    let keep = current.maps_dir(pin_dir);
    let Ok(entries) = fs::read_dir(pin_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_maps = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("maps-"));
        if is_maps && path != keep {
            match fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed maps of an older layout"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove stale maps")
                }
            }
        }
    }
}

/// Whether pinned enforcement exists under `pin_dir`.
pub fn is_pinned(pin_dir: &Path) -> bool {
    super::ALL_PROGRAMS
        .iter()
        .any(|p| link_path(pin_dir, p).exists())
}

/// Detaches pinned enforcement and removes every pin (`authz-agent unload`).
/// Returns whether anything was pinned.
pub fn unload(pin_dir: &Path) -> Result<bool, PinError> {
    let mut found = false;
    for program in super::ALL_PROGRAMS {
        let path = link_path(pin_dir, program);
        match fs::remove_file(&path) {
            Ok(()) => found = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(PinError::Io(path, e)),
        }
    }
    if let Ok(entries) = fs::read_dir(pin_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(|e| PinError::Io(path.clone(), e))?;
            found = true;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_depends_on_capacity_and_is_stable() {
        let a = Layout::new(1000, 1 << 20);
        assert_eq!(a, Layout::new(1000, 1 << 20));
        assert_ne!(a, Layout::new(2000, 1 << 20));
        assert_ne!(a, Layout::new(1000, 1 << 21));
        let dir = a.maps_dir(Path::new("/sys/fs/bpf/authz"));
        assert!(dir.to_string_lossy().starts_with("/sys/fs/bpf/authz/maps-"));
    }
}
