//! What a dynamically linked program loads: its interpreter (the dynamic
//! loader the kernel maps at exec) and its shared-library closure, resolved
//! by that very loader (`ld.so --list`, which loads nothing and runs nothing
//! of the program), so the answer is what the loader will really map.
use std::{
    fs,
    io::{self, Read as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

/// `PT_INTERP` (elf.h).
const PT_INTERP: u32 = 3;
/// Longest interpreter path read.
const MAX_INTERP: u64 = 4096;
/// Permission bits that let group or others write a file.
const GROUP_OTHER_WRITE: u32 = 0o022;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("{0} is not a 64-bit little-endian ELF file")]
    NotElf(PathBuf),
    #[error("{path}: its interpreter {interp} could not list its libraries: {message}")]
    Loader {
        path: PathBuf,
        interp: PathBuf,
        message: String,
    },
    #[error("{path}: its loader finds no file for {}", .names.join(", "))]
    Missing { path: PathBuf, names: Vec<String> },
    #[error(
        "{path}: its interpreter {interp} is not a root-owned file only root may write; \
         refusing to run it to list the libraries"
    )]
    UntrustedInterpreter { path: PathBuf, interp: PathBuf },
}

/// The files a program maps executable besides itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Closure {
    /// The dynamic loader (`PT_INTERP`), when the program is dynamically linked.
    pub interpreter: Option<PathBuf>,
    /// The shared libraries, in the loader's order, duplicates removed.
    pub libraries: Vec<PathBuf>,
}

impl Closure {
    /// Every file: the interpreter first.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.interpreter.iter().chain(self.libraries.iter())
    }
}

/// The interpreter of the ELF program at `path` (None: statically linked).
pub fn interpreter(path: &Path) -> Result<Option<PathBuf>, ElfError> {
    let read_err = |e| ElfError::Read(path.to_owned(), e);
    let mut f = fs::File::open(path).map_err(read_err)?;
    let mut header = [0u8; 64];
    f.read_exact(&mut header).map_err(read_err)?;
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err(ElfError::NotElf(path.to_owned()));
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let phoff = u64_at(&header, 0x20);
    let phentsize = u64::from(u16_at(&header, 0x36));
    let phnum = u64::from(u16_at(&header, 0x38));
    if phentsize < 56 {
        return Err(ElfError::NotElf(path.to_owned()));
    }
    let data = fs::read(path).map_err(read_err)?;
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        let Some(ph) = data.get(at..at + 56) else {
            return Err(ElfError::NotElf(path.to_owned()));
        };
        if u32_at(ph, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(ph, 8), u64_at(ph, 32).min(MAX_INTERP));
        let Some(raw) = data.get(offset as usize..(offset + size) as usize) else {
            return Err(ElfError::NotElf(path.to_owned()));
        };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = String::from_utf8_lossy(&raw[..end]).into_owned();
        return Ok(Some(PathBuf::from(text)));
    }
    Ok(None)
}

/// The interpreter and libraries the program at `path` maps, as its own
/// loader resolves them (a clean environment: no `LD_PRELOAD`, no
/// `LD_LIBRARY_PATH`).
///
/// The interpreter is a path the program names: it is run only when it is a
/// root-owned file that neither group nor others may write (and its
/// directories likewise), so a program cannot make this run code of its
/// choosing. A library the loader cannot find is an error, not a gap.
pub fn closure(path: &Path) -> Result<Closure, ElfError> {
    let Some(interp) = interpreter(path)? else {
        return Ok(Closure::default());
    };
    if !root_controlled(&interp) {
        return Err(ElfError::UntrustedInterpreter {
            path: path.to_owned(),
            interp,
        });
    }
    let out = Command::new(&interp)
        .arg("--list")
        .arg(path)
        .env_clear()
        .output()
        .map_err(|e| ElfError::Loader {
            path: path.to_owned(),
            interp: interp.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ElfError::Loader {
            path: path.to_owned(),
            interp: interp.clone(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let mut libraries = Vec::new();
    let mut missing = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = missing_library(line) {
            missing.push(name.to_owned());
        } else if let Some(lib) = listed_library(line) {
            if lib != interp && !libraries.contains(&lib) {
                libraries.push(lib);
            }
        }
    }
    if !missing.is_empty() {
        return Err(ElfError::Missing {
            path: path.to_owned(),
            names: missing,
        });
    }
    Ok(Closure {
        interpreter: Some(interp),
        libraries,
    })
}

/// Whether `path` (the file and every directory above it, links followed)
/// is owned by root and writable by nobody else.
fn root_controlled(path: &Path) -> bool {
    let Ok(real) = fs::canonicalize(path) else {
        return false;
    };
    real.ancestors()
        .all(|p| fs::metadata(p).is_ok_and(|m| m.uid() == 0 && m.mode() & GROUP_OTHER_WRITE == 0))
}

/// The name in a `libfoo.so => not found` line of `ld.so --list`.
fn missing_library(line: &str) -> Option<&str> {
    let (name, rest) = line.trim().split_once("=>")?;
    (rest.trim() == "not found").then(|| name.trim())
}

/// The library a line of `ld.so --list` names, if any:
/// `\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` gives the
/// path after `=>`; the vDSO (no file) and `not found` give nothing.
fn listed_library(line: &str) -> Option<PathBuf> {
    let line = line.trim();
    let path = match line.split_once("=>") {
        Some((_, rest)) => rest.split_whitespace().next()?,
        None => line.split_whitespace().next()?,
    };
    path.starts_with('/').then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_loader_list_give_paths() {
        assert_eq!(
            listed_library("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)"),
            Some(PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            listed_library("\t/lib64/ld-linux-x86-64.so.2 (0x00007f)"),
            Some(PathBuf::from("/lib64/ld-linux-x86-64.so.2"))
        );
        assert_eq!(listed_library("\tlinux-vdso.so.1 (0x00007ffd)"), None);
        assert_eq!(listed_library("\tlibfoo.so => not found"), None);
        assert_eq!(
            missing_library("\tlibfoo.so => not found"),
            Some("libfoo.so")
        );
        assert_eq!(
            missing_library("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)"),
            None
        );
    }

    #[test]
    fn this_test_binary_has_an_interpreter_and_libc() {
        let me = std::env::current_exe().unwrap();
        let c = closure(&me).expect("closure");
        let interp = c.interpreter.clone().expect("dynamically linked");
        assert!(interp.to_string_lossy().contains("ld-linux"), "{interp:?}");
        assert!(
            c.libraries
                .iter()
                .any(|l| l.to_string_lossy().contains("libc.so")),
            "{c:?}"
        );
        assert_eq!(c.files().next(), Some(&interp));
    }

    #[test]
    fn a_non_elf_file_is_a_typed_error() {
        let p = std::env::temp_dir().join(format!("authz-not-elf-{}", std::process::id()));
        fs::write(&p, b"#!/bin/sh\necho hi\n".repeat(8)).unwrap();
        assert!(matches!(interpreter(&p), Err(ElfError::NotElf(_))));
        fs::remove_file(p).unwrap();
    }
}
