//! What the kernel program is told about *where* it enforces and *what* it
//! trusts: the scope trie of enforced cgroup paths, and the filesystem policy.
//!
//! **Scope is a set of paths, matched by the kernel at every exec.** A cgroup's
//! id changes when it is removed and created again (systemd removes empty
//! slices, container runtimes re-create pod cgroups), so a scope resolved to
//! ids once would silently stop covering it. Instead the kernel reads the
//! caller's cgroup path (`task->cgroups->dfl_cgrp->ancestors[]->kn->name`) and
//! walks this trie from the root: a listed path that does not exist yet, or
//! was re-created a moment ago, is enforced the instant a process runs in it,
//! with no agent in the loop. (cgroup v2 directories cannot be renamed, so a
//! path cannot be left by renaming either.)
//!
//! Trie nodes are keyed by (parent token, directory name). A node's token is
//! derived from its whole path, so the same prefix gets the same token in
//! every configuration, and a scope change only adds and removes nodes: a
//! concurrent exec never walks a half-renumbered trie.
use std::collections::{BTreeMap, BTreeSet};

use authz_common::{
    fs_flags, scope_flags, ScopeKey, ScopeNode, FILESYSTEMS, MAX_SCOPE_NODES, SCOPE_ROOT,
};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("{0:?} is not an absolute cgroup path without `.` or `..` components")]
    BadPath(String),
    #[error("{0} cgroup path components are more than the scope can hold ({MAX_SCOPE_NODES})")]
    TooMany(usize),
}

/// The scope trie to write into the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trie {
    host: bool,
    nodes: BTreeMap<ScopeKeyOrd, ScopeNode>,
}

/// `ScopeKey` ordered by its bytes (for a deterministic map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ScopeKeyOrd(u32, [u8; authz_common::SCOPE_NAME_LEN]);

impl From<&ScopeKey> for ScopeKeyOrd {
    fn from(k: &ScopeKey) -> Self {
        Self(k.parent, k.name)
    }
}

impl Trie {
    /// The trie for `paths` (each `/a/b`); no paths, or `/` among them, means
    /// the whole host.
    pub fn build(paths: &[String]) -> Result<Self, ScopeError> {
        let mut trie = Self {
            host: paths.is_empty(),
            nodes: BTreeMap::new(),
        };
        let mut tokens: BTreeSet<u32> = BTreeSet::from([0, SCOPE_ROOT]);
        let mut by_prefix: BTreeMap<Vec<String>, u32> = BTreeMap::new();
        for path in paths {
            let parts = components(path)?;
            if parts.is_empty() {
                trie.host = true;
                continue;
            }
            let mut parent = SCOPE_ROOT;
            for depth in 1..=parts.len() {
                let prefix = parts[..depth].to_vec();
                let key = ScopeKey::new(parent, prefix[depth - 1].as_bytes());
                let token = match by_prefix.get(&prefix) {
                    Some(t) => *t,
                    None => {
                        let t = token_for(&prefix, &tokens);
                        tokens.insert(t);
                        by_prefix.insert(prefix.clone(), t);
                        t
                    }
                };
                let node = trie
                    .nodes
                    .entry(ScopeKeyOrd::from(&key))
                    .or_insert(ScopeNode { token, flags: 0 });
                if depth == parts.len() {
                    node.flags |= scope_flags::ENFORCED;
                }
                parent = node.token;
            }
        }
        if trie.nodes.len() > MAX_SCOPE_NODES as usize {
            return Err(ScopeError::TooMany(trie.nodes.len()));
        }
        if trie.host {
            trie.nodes.clear();
        }
        Ok(trie)
    }

    /// Whether the scope is the whole host (no trie needed).
    pub fn is_host(&self) -> bool {
        self.host
    }

    /// Every node, as the kernel map holds it.
    pub fn nodes(&self) -> Vec<(ScopeKey, ScopeNode)> {
        self.nodes
            .iter()
            .map(|(k, v)| {
                (
                    ScopeKey {
                        parent: k.0,
                        _reserved: 0,
                        name: k.1,
                    },
                    *v,
                )
            })
            .collect()
    }

    pub fn contains(&self, key: &ScopeKey) -> bool {
        self.nodes.contains_key(&ScopeKeyOrd::from(key))
    }

    /// Whether the kernel would enforce in the cgroup at `path`: the same walk
    /// the kernel program does, for reports and tests.
    pub fn enforces(&self, path: &str) -> bool {
        if self.host {
            return true;
        }
        let Ok(parts) = components(path) else {
            return true;
        };
        let mut parent = SCOPE_ROOT;
        for part in parts {
            let key = ScopeKey::new(parent, part.as_bytes());
            match self.nodes.get(&ScopeKeyOrd::from(&key)) {
                None => return false,
                Some(node) if node.flags & scope_flags::ENFORCED != 0 => return true,
                Some(node) => parent = node.token,
            }
        }
        false
    }
}

/// The directory names of a cgroup path, root first.
fn components(path: &str) -> Result<Vec<String>, ScopeError> {
    let rel = crate::cgroup::normalize(path).map_err(|_| ScopeError::BadPath(path.to_owned()))?;
    rel.components()
        .map(|c| {
            c.as_os_str()
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| ScopeError::BadPath(path.to_owned()))
        })
        .collect()
}

/// A token for `prefix` derived from the path itself, unique among `taken`.
fn token_for(prefix: &[String], taken: &BTreeSet<u32>) -> u32 {
    let mut round: u32 = 0;
    loop {
        let mut h = Sha256::new();
        h.update(b"authz-scope\0");
        h.update(round.to_le_bytes());
        for part in prefix {
            h.update(b"/");
            h.update(part.as_bytes());
        }
        let d = h.finalize();
        let t = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        if !taken.contains(&t) {
            return t;
        }
        round += 1;
    }
}

/// The filesystem policy: every filesystem authz knows with its default
/// flags, plus `trusted` magics allowed to exec (never cached: only the
/// built-in, VM-tested filesystems are).
pub fn filesystem_policy(trusted: &[u64]) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    for fs in FILESYSTEMS.iter().filter(|f| f.flags != 0) {
        out.insert(fs.magic, fs.flags);
    }
    for magic in trusted {
        *out.entry(*magic).or_insert(0) |= fs_flags::EXEC;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trie(paths: &[&str]) -> Trie {
        Trie::build(&paths.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn no_paths_or_the_root_mean_the_whole_host() {
        assert!(trie(&[]).is_host());
        assert!(trie(&["/a", "/"]).is_host());
        assert!(trie(&["/"]).nodes().is_empty());
    }

    #[test]
    fn paths_and_everything_below_them_are_enforced_nothing_else() {
        let t = trie(&["/jobs.slice/team-a", "/batch"]);
        assert!(!t.is_host());
        for yes in [
            "/jobs.slice/team-a",
            "/jobs.slice/team-a/x/y",
            "/batch",
            "/batch/z",
        ] {
            assert!(t.enforces(yes), "{yes}");
        }
        for no in [
            "/",
            "/jobs.slice",
            "/jobs.slice/team-b",
            "/jobs.slice/team-ab",
            "/batc",
        ] {
            assert!(!t.enforces(no), "{no}");
        }
        // Three nodes: jobs.slice (a prefix), team-a and batch (enforced).
        assert_eq!(t.nodes().len(), 3);
    }

    #[test]
    fn tokens_depend_on_the_path_not_on_the_other_paths() {
        let a = trie(&["/x/y"]);
        let b = trie(&["/q", "/x/y", "/x/z/w"]);
        for (key, node) in a.nodes() {
            let other = b.nodes().into_iter().find(|(k, _)| *k == key);
            assert_eq!(other.map(|(_, n)| n.token), Some(node.token));
        }
    }

    #[test]
    fn long_names_are_compared_on_the_bytes_the_kernel_reads() {
        let long = format!("/{}", "n".repeat(200));
        let t = trie(&[&long]);
        let similar = format!("/{}{}", "n".repeat(63), "other");
        // Widening only: a name sharing the first 63 bytes is enforced too.
        assert!(t.enforces(&similar));
        assert!(!t.enforces(&format!("/{}", "n".repeat(62))));
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["relative", "/a/../b"] {
            assert!(Trie::build(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn built_in_filesystems_and_trusted_extras() {
        let nfs = authz_common::filesystem("nfs").unwrap().magic;
        let tmpfs = authz_common::TMPFS_MAGIC;
        let p = filesystem_policy(&[]);
        assert_eq!(p.get(&tmpfs), Some(&(fs_flags::EXEC | fs_flags::CACHE)));
        assert_eq!(p.get(&nfs), None, "untrusted by default");
        let p = filesystem_policy(&[nfs]);
        assert_eq!(p.get(&nfs), Some(&fs_flags::EXEC), "trusted, never cached");
    }

    proptest! {
        /// The kernel's walk agrees with "some listed path is a prefix".
        #[test]
        fn enforcement_is_exactly_prefix_membership(
            listed in prop::collection::vec(prop::collection::vec("[a-c]{1,2}", 1..4), 1..5),
            probe in prop::collection::vec("[a-c]{1,2}", 0..5),
        ) {
            let paths: Vec<String> = listed.iter().map(|p| format!("/{}", p.join("/"))).collect();
            let t = Trie::build(&paths).unwrap();
            let expected = listed.iter().any(|l| probe.len() >= l.len() && probe[..l.len()] == l[..]);
            let probe_path = format!("/{}", probe.join("/"));
            prop_assert_eq!(t.enforces(&probe_path), expected);
        }
    }
}
