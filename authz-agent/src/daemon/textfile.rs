//! The node_exporter textfile: the agent's metrics rewritten every
//! `[metrics] interval`, atomically, so the collector never reads half a
//! file and the unit needs no listening socket (its sandbox stays
//! `AF_UNIX`-only).
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// The textfile's mode: node_exporter runs as its own user and must read it.
const TEXTFILE_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    #[error("{0} has no directory or no file name")]
    BadPath(PathBuf),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Replaces `path` with `text`: written to a temporary file in the same
/// directory, flushed to disk, renamed over `path`, and the directory
/// flushed, so a reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), TextfileError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(TextfileError::BadPath(path.to_owned()));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // A name node_exporter ignores (it reads `*.prom` only).
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let err = |source| TextfileError::Write {
        path: path.to_owned(),
        source,
    };
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(TEXTFILE_MODE)
            .open(&temp)?;
        // The umask may have narrowed the mode.
        f.set_permissions(fs::Permissions::from_mode(TEXTFILE_MODE))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_no_temporary_is_left() {
        let dir = std::env::temp_dir().join(format!("authz-textfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("authz.prom");
        write_atomic(&path, "a 1\n").unwrap();
        let first = fs::metadata(&path).unwrap();
        write_atomic(&path, "a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        // A new inode: renamed over, not rewritten in place.
        assert_ne!(fs::metadata(&path).unwrap().ino(), first.ino());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            TEXTFILE_MODE
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["authz.prom"]);
        // A directory that does not exist: an error, nothing written.
        let e = write_atomic(&dir.join("missing/authz.prom"), "x").unwrap_err();
        assert!(e.to_string().contains("missing/authz.prom"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
