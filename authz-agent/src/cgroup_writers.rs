//! Delegated cgroups: who besides root can move processes where authz cares.
//!
//! On cgroup v2 a non-root process may move a process from cgroup S to D when
//! it can write `cgroup.procs` of D and of the common ancestor of S and D
//! (`cgroup_procs_write_permission`); there is no check of whose process it
//! is. And whoever can write a cgroup's directory can create cgroups in it,
//! owning their `cgroup.procs`, and remove empty ones. Systemd user delegation
//! and container runtimes hand out exactly that, so such a user can:
//! - move processes *out of an enforced subtree* through a writable ancestor;
//! - remove an empty enforced cgroup and create it again: the agent enforces
//!   the cgroup ids it found at start, so the new one is not enforced;
//! - move processes *into a permitted cgroup*, where they run with its permits,
//!   or (re)create a permitted cgroup owning it (a permit follows its cgroup).
//!
//! [`audit`] names every such cgroup, from mode bits (cgroupfs has no POSIX
//! ACLs). Moves within an enforced subtree stay enforced and are not findings.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Who, besides root, may write a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Writer {
    Uid(u32),
    Gid(u32),
    Everyone,
}

/// What is writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Object {
    /// The cgroup's `cgroup.procs`: processes can be moved in (and, for a
    /// common ancestor, between the cgroups below).
    Procs,
    /// The cgroup's directory: cgroups can be created and removed in it.
    Directory,
}

/// Why a cgroup matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Enforced,
    Permitted,
}

/// One cgroup a non-root writer can use against enforcement.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Finding {
    /// The cgroup whose file is writable (`/a/b`).
    pub cgroup: String,
    pub object: Object,
    pub writer: Writer,
    /// The enforced subtree or permitted cgroup it affects.
    pub target: String,
    pub kind: Target,
    /// Who can do what, in one sentence.
    pub sentence: String,
}

/// Every cgroup on the paths to `enforced` subtrees and `permitted` cgroups
/// (ancestors included) whose `cgroup.procs` or directory a non-root uid or
/// gid can write, in the hierarchy mounted at `root`. Paths that are not valid
/// cgroup paths, and files that cannot be read, are skipped.
pub fn audit(root: &Path, enforced: &[String], permitted: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (kind, targets) in [(Target::Enforced, enforced), (Target::Permitted, permitted)] {
        for target in targets {
            if let Some(chain) = CgroupChain::of(root, target) {
                chain.findings(kind, &mut out);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The existing cgroups from the root down to a target.
struct CgroupChain {
    target: String,
    /// (cgroup path, directory), root first; the target last when it exists.
    existing: Vec<(String, PathBuf)>,
    target_exists: bool,
}

impl CgroupChain {
    fn of(root: &Path, target: &str) -> Option<Self> {
        let rel = crate::cgroup::normalize(target).ok()?;
        let mut existing = vec![("/".to_owned(), root.to_owned())];
        let mut name = String::new();
        let mut dir = root.to_owned();
        let mut target_exists = true;
        for part in rel.iter() {
            name.push('/');
            name.push_str(&part.to_string_lossy());
            dir.push(part);
            if !dir.is_dir() {
                target_exists = false;
                break;
            }
            existing.push((name.clone(), dir.clone()));
        }
        let target = format!("/{}", rel.display());
        Some(Self {
            target,
            existing,
            target_exists,
        })
    }

    fn findings(&self, kind: Target, out: &mut Vec<Finding>) {
        let last = self.existing.len() - 1;
        let target_procs = if self.target_exists {
            writers(&self.existing[last].1.join("cgroup.procs"))
        } else {
            Vec::new()
        };
        for (i, (cgroup, dir)) in self.existing.iter().enumerate() {
            let is_target = self.target_exists && i == last;
            let is_parent = self.target_exists && i + 1 == last;
            let deepest_of_missing = !self.target_exists && i == last;
            for (object, path) in [
                (Object::Procs, dir.join("cgroup.procs")),
                (Object::Directory, dir.clone()),
            ] {
                for writer in writers(&path) {
                    let place = Place {
                        cgroup,
                        target: &self.target,
                        object,
                        writer,
                    };
                    let can = match (kind, object) {
                        (Target::Enforced, _) if !self.target_exists || is_target => None,
                        (Target::Enforced, Object::Procs) => Some(Can::MoveOutOfEnforced),
                        (Target::Enforced, Object::Directory) if is_parent => {
                            Some(Can::CreateBesideEnforced)
                        }
                        (Target::Enforced, Object::Directory) => Some(Can::CreateOutsideEnforced),
                        (Target::Permitted, Object::Procs) if is_target => {
                            Some(Can::MoveIntoPermitted)
                        }
                        // An ancestor's cgroup.procs is the other half of a
                        // move into the permitted cgroup, for the same writer.
                        (Target::Permitted, Object::Procs) => target_procs
                            .contains(&writer)
                            .then_some(Can::MoveFromUnderIntoPermitted),
                        (Target::Permitted, Object::Directory) if is_target => {
                            Some(Can::CreateUnderPermitted)
                        }
                        (Target::Permitted, Object::Directory) if is_parent => {
                            Some(Can::RecreatePermitted)
                        }
                        (Target::Permitted, Object::Directory) if deepest_of_missing => {
                            Some(Can::CreatePermitted)
                        }
                        (Target::Permitted, Object::Directory) => None,
                    };
                    if let Some(can) = can {
                        out.push(Finding {
                            cgroup: cgroup.clone(),
                            object,
                            writer,
                            target: self.target.clone(),
                            kind,
                            sentence: place.says(can),
                        });
                    }
                }
            }
        }
    }
}

/// A writable file on the way to a target, for wording its finding.
struct Place<'a> {
    cgroup: &'a str,
    target: &'a str,
    object: Object,
    writer: Writer,
}

/// What a writer can do from a [`Place`].
#[derive(Clone, Copy)]
enum Can {
    MoveOutOfEnforced,
    CreateBesideEnforced,
    CreateOutsideEnforced,
    MoveIntoPermitted,
    MoveFromUnderIntoPermitted,
    CreateUnderPermitted,
    RecreatePermitted,
    CreatePermitted,
}

impl Place<'_> {
    /// One sentence: who can write what, and what that lets them do.
    fn says(&self, can: Can) -> String {
        let (c, t) = (self.cgroup, self.target);
        let file = match self.object {
            Object::Procs => format!("{}/cgroup.procs", c.trim_end_matches('/')),
            Object::Directory => format!("the directory of {c}"),
        };
        let who = match self.writer {
            Writer::Uid(uid) => format!("uid {uid} owns {file}: it"),
            Writer::Gid(gid) => format!("group {gid} can write {file}: its members"),
            Writer::Everyone => format!("every user can write {file}: anyone"),
        };
        let what = match can {
            Can::MoveOutOfEnforced => format!("move processes out of the enforced subtree {t} into {c} or any cgroup under it with a writable cgroup.procs"),
            Can::CreateBesideEnforced => format!("create cgroups beside the enforced subtree {t}, outside it, to move processes into"),
            Can::CreateOutsideEnforced => format!("create cgroups under {c}, outside the enforced subtree {t}, to move processes into"),
            Can::MoveIntoPermitted => format!("move processes into the permitted cgroup {t} (from under any ancestor whose cgroup.procs it can write too), where they run with its permits"),
            Can::MoveFromUnderIntoPermitted => format!("move processes from anywhere under {c} into the permitted cgroup {t}, where they run with its permits"),
            Can::CreateUnderPermitted => format!("create cgroups under the permitted cgroup {t}, owning their cgroup.procs, and a permit that covers descendants covers them"),
            Can::RecreatePermitted => format!("remove the permitted cgroup {t} when it is empty and create it again owning it, and the permit follows the new cgroup"),
            Can::CreatePermitted => format!("create the permitted cgroup {t}, which does not exist yet, owning it, and the permit takes effect there"),
        };
        format!("{who} can {what}")
    }
}

/// Who besides root may write `path`, from its owner, group and mode.
fn writers(path: &Path) -> Vec<Writer> {
    let Ok(meta) = fs::metadata(path) else {
        return Vec::new();
    };
    let mode = meta.mode();
    let mut out = Vec::new();
    if meta.uid() != 0 && mode & 0o200 != 0 {
        out.push(Writer::Uid(meta.uid()));
    }
    if meta.gid() != 0 && mode & 0o020 != 0 {
        out.push(Writer::Gid(meta.gid()));
    }
    if mode & 0o002 != 0 {
        out.push(Writer::Everyone);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A fake cgroup tree: directories with a `cgroup.procs` each, all
    /// root-owned 0755/0644 unless a test changes them.
    struct Tree {
        root: PathBuf,
    }

    impl Tree {
        /// The tree, or `None` (and a note) when not root: chown needs it.
        fn new(name: &str, cgroups: &[&str]) -> Option<Self> {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipped: needs root to chown the fake cgroup tree");
                return None;
            }
            let root =
                std::env::temp_dir().join(format!("authz-writers-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            let tree = Self { root };
            for cg in cgroups {
                tree.add(cg);
            }
            Some(tree)
        }

        fn dir(&self, cgroup: &str) -> PathBuf {
            self.root.join(cgroup.trim_start_matches('/'))
        }

        /// Adds `cgroup` and any missing ancestor, each with its cgroup.procs.
        fn add(&self, cgroup: &str) {
            let mut dir = self.root.clone();
            let parts = cgroup.split('/').filter(|p| !p.is_empty());
            for part in std::iter::once("").chain(parts) {
                dir.push(part);
                let procs = dir.join("cgroup.procs");
                if procs.exists() {
                    continue;
                }
                fs::create_dir_all(&dir).unwrap();
                chmod(&dir, 0o755);
                fs::write(&procs, b"").unwrap();
                chmod(&procs, 0o644);
                chown(&dir, 0, 0);
                chown(&procs, 0, 0);
            }
        }

        fn procs(&self, cgroup: &str) -> PathBuf {
            self.dir(cgroup).join("cgroup.procs")
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn chown(path: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_root_only_tree_has_no_findings() {
        let Some(t) = Tree::new("clean", &["/jobs.slice/a", "/jobs.slice/b"]) else {
            return;
        };
        let found = audit(&t.root, &s(&["/jobs.slice/a"]), &s(&["/jobs.slice/b"]));
        assert_eq!(found, vec![]);
    }

    #[test]
    fn a_writable_ancestor_of_an_enforced_subtree_is_named_with_its_owner() {
        let Some(t) = Tree::new("ancestor", &["/user.slice/user-1000.slice/job/inner"]) else {
            return;
        };
        chown(&t.procs("/user.slice/user-1000.slice"), 1000, 1000);
        // Inside the enforced subtree: moves there stay enforced.
        chown(
            &t.procs("/user.slice/user-1000.slice/job/inner"),
            1000,
            1000,
        );
        let found = audit(&t.root, &s(&["/user.slice/user-1000.slice/job"]), &[]);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.cgroup, "/user.slice/user-1000.slice");
        assert_eq!(
            (f.object, f.writer, f.kind),
            (Object::Procs, Writer::Uid(1000), Target::Enforced)
        );
        assert_eq!(
            f.sentence,
            "uid 1000 owns /user.slice/user-1000.slice/cgroup.procs: it can move processes out of the enforced subtree /user.slice/user-1000.slice/job into /user.slice/user-1000.slice or any cgroup under it with a writable cgroup.procs"
        );
    }

    #[test]
    fn group_and_world_writable_files_and_directories_are_named() {
        let Some(t) = Tree::new("modes", &["/a/b/enforced"]) else {
            return;
        };
        // Group-writable procs two levels up; a world-writable parent directory.
        chown(&t.procs("/a"), 0, 2000);
        chmod(&t.procs("/a"), 0o664);
        chmod(&t.dir("/a/b"), 0o777);
        // Group 0 and a non-writable owner are not findings.
        chmod(&t.procs("/a/b"), 0o664);
        chown(&t.dir("/a"), 1000, 0);
        chmod(&t.dir("/a"), 0o555);
        let found = audit(&t.root, &s(&["/a/b/enforced"]), &[]);
        let got: Vec<(&str, Object, Writer)> = found
            .iter()
            .map(|f| (f.cgroup.as_str(), f.object, f.writer))
            .collect();
        assert_eq!(
            got,
            [
                ("/a", Object::Procs, Writer::Gid(2000)),
                ("/a/b", Object::Directory, Writer::Everyone),
            ]
        );
        assert!(
            found[1].sentence.starts_with("every user can write the directory of /a/b: anyone can create cgroups beside the enforced subtree /a/b/enforced, outside it"),
            "{}",
            found[1].sentence
        );
    }

    #[test]
    fn writers_into_a_permitted_cgroup_are_named() {
        let Some(t) = Tree::new("permitted", &["/svc/web", "/svc/other"]) else {
            return;
        };
        chown(&t.procs("/svc/web"), 1000, 1000);
        chown(&t.procs("/svc"), 1000, 1000);
        // Another uid's ancestor is no use for moving into /svc/web.
        chown(&t.procs("/"), 1001, 1001);
        chown(&t.dir("/svc"), 1002, 1002);
        let found = audit(&t.root, &[], &s(&["/svc/web", "/svc/missing/job"]));
        let got: Vec<(&str, Object, Writer, &str)> = found
            .iter()
            .map(|f| (f.cgroup.as_str(), f.object, f.writer, f.target.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/svc", Object::Procs, Writer::Uid(1000), "/svc/web"),
                (
                    "/svc",
                    Object::Directory,
                    Writer::Uid(1002),
                    "/svc/missing/job"
                ),
                ("/svc", Object::Directory, Writer::Uid(1002), "/svc/web"),
                ("/svc/web", Object::Procs, Writer::Uid(1000), "/svc/web"),
            ],
            "{found:#?}"
        );
        let sentences: Vec<&str> = found.iter().map(|f| f.sentence.as_str()).collect();
        assert!(
            sentences[1].contains(
                "can create the permitted cgroup /svc/missing/job, which does not exist yet"
            ),
            "{}",
            sentences[1]
        );
        assert!(
            sentences[2].contains("can remove the permitted cgroup /svc/web when it is empty"),
            "{}",
            sentences[2]
        );
        assert!(sentences[3].starts_with("uid 1000 owns /svc/web/cgroup.procs: it can move processes into the permitted cgroup /svc/web"), "{}", sentences[3]);
    }

    #[test]
    fn invalid_and_missing_paths_are_skipped_and_root_is_a_cgroup() {
        let Some(t) = Tree::new("odd", &["/a"]) else {
            return;
        };
        chown(&t.procs("/"), 1000, 1000);
        let found = audit(&t.root, &s(&["relative", "/a/../b", "/missing"]), &[]);
        assert_eq!(found, vec![], "a missing enforced cgroup is not audited");
        let found = audit(&t.root, &s(&["/a"]), &[]);
        assert_eq!(found.len(), 1);
        assert!(found[0].sentence.starts_with("uid 1000 owns /cgroup.procs: it can move processes out of the enforced subtree /a into /"), "{}", found[0].sentence);
    }
}
