//! cgroup v2 paths and ids.
//!
//! A cgroup's id, as `bpf_get_current_cgroup_id()` reports it, is the inode
//! number of its directory in cgroupfs.
use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

/// cgroup2 superblock magic (`CGROUP2_SUPER_MAGIC`, include/uapi/linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{0} is not a cgroup v2 mount (authz needs the unified hierarchy)")]
    NotCgroup2(PathBuf),
    #[error("cgroup path {0:?} must be absolute and must not contain `..`")]
    BadPath(String),
    #[error("cgroup {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cgroup {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A cgroup v2 hierarchy mounted at `root`.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    root: PathBuf,
}

impl Hierarchy {
    /// Opens the hierarchy at `root`, checking that it is cgroup2.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, CgroupError> {
        let root = root.into();
        let stat = nix::sys::statfs::statfs(&root).map_err(|e| CgroupError::Io {
            path: root.clone(),
            source: e.into(),
        })?;
        if stat.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
            return Err(CgroupError::NotCgroup2(root));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the cgroup named `cgroup` (a path such as `/jobs.slice/a`).
    pub fn dir(&self, cgroup: &str) -> Result<PathBuf, CgroupError> {
        let rel = normalize(cgroup)?;
        Ok(self.root.join(rel))
    }

    /// The id of the cgroup named `cgroup`.
    pub fn id(&self, cgroup: &str) -> Result<u64, CgroupError> {
        let dir = self.dir(cgroup)?;
        id_of_dir(&dir)
    }

    /// Creates the cgroup (and parents) if needed; returns its id.
    pub fn create(&self, cgroup: &str) -> Result<u64, CgroupError> {
        let dir = self.dir(cgroup)?;
        fs::create_dir_all(&dir).map_err(|source| CgroupError::Io {
            path: dir.clone(),
            source,
        })?;
        id_of_dir(&dir)
    }

    /// Removes an empty cgroup; a missing one is not an error.
    pub fn remove(&self, cgroup: &str) -> Result<(), CgroupError> {
        let dir = self.dir(cgroup)?;
        match fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CgroupError::Io { path: dir, source }),
        }
    }

    /// Opens `cgroup.procs` of `cgroup` for writing (to move a process in).
    pub fn procs_file(&self, cgroup: &str) -> Result<fs::File, CgroupError> {
        let path = self.dir(cgroup)?.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| CgroupError::Io { path, source })
    }

    /// Every cgroup's id -> path, by walking the hierarchy (bounded: 16 levels,
    /// 100,000 cgroups). For reports and logs, not for decisions.
    pub fn names(&self) -> std::collections::BTreeMap<u64, String> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if let Ok(meta) = fs::metadata(&dir) {
                let rel = dir
                    .strip_prefix(&self.root)
                    .map(|p| format!("/{}", p.display()))
                    .unwrap_or_default();
                out.insert(meta.ino(), rel);
            }
            if depth >= 16 || out.len() > 100_000 {
                continue;
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
        }
        out
    }

    /// Moves process `pid` into `cgroup`.
    pub fn move_process(&self, cgroup: &str, pid: u32) -> Result<(), CgroupError> {
        use std::io::Write as _;
        let path = self.dir(cgroup)?.join("cgroup.procs");
        let mut f = self.procs_file(cgroup)?;
        f.write_all(pid.to_string().as_bytes())
            .map_err(|source| CgroupError::Io { path, source })
    }
}

/// The cgroup path of the calling process (from /proc/self/cgroup).
pub fn current() -> io::Result<String> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("no cgroup v2 entry in /proc/self/cgroup"))
}

fn id_of_dir(dir: &Path) -> Result<u64, CgroupError> {
    match fs::metadata(dir) {
        Ok(m) => Ok(m.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CgroupError::Missing {
            path: dir.to_owned(),
        }),
        Err(source) => Err(CgroupError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Validates a cgroup path (`/`, `/a/b`) and returns it relative to the root.
pub fn normalize(cgroup: &str) -> Result<PathBuf, CgroupError> {
    let path = Path::new(cgroup);
    if !path.is_absolute() {
        return Err(CgroupError::BadPath(cgroup.to_owned()));
    }
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => rel.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::BadPath(cgroup.to_owned()))
            }
        }
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_cgroup_paths() {
        assert_eq!(normalize("/").unwrap(), PathBuf::new());
        assert_eq!(normalize("/a/b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(normalize("/a/./b").unwrap(), PathBuf::from("a/b"));
        assert!(matches!(normalize("a/b"), Err(CgroupError::BadPath(_))));
        assert!(matches!(normalize("/a/../b"), Err(CgroupError::BadPath(_))));
    }
}
