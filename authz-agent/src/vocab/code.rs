//! What a permit allows beyond exec: the shared libraries (and loader) its
//! program maps executable, and executable memory no file backs (a JIT).
//!
//! Both are optional, signed fields (docs/artifact-format.md, "Code beyond
//! exec"):
//!
//! - `[[library]]` tables in a permit, each a file's SHA-256 (what the kernel
//!   checks when the file is mapped executable) and its path when issued
//!   (informative);
//! - `subject.exec_memory = true` in a permit: the subject's processes may make
//!   memory executable;
//! - `exec_memory = true` in a delegation link: the delegate may issue such
//!   permits (or hand that on).
//!
//! A permit or link without them encodes to exactly the bytes it did before
//! they existed: their part of the signed message, [`permit_extension`] and
//! [`link_extension`], is written only when one of them is present, after
//! every older field, and starts with its own tag ([`CODE_TAG`]). The older
//! message is self-delimiting (fixed sizes and length prefixes), so a message
//! with the extension never equals one without it.
use serde::Deserialize;
use toml::Spanned;

use super::{
    encoding::Encoder,
    fields::{check_opt_text, parse_hex, Digest, MAX_PATH},
    text::{conv, ArtifactError, Doc, Kind, Writer},
};

/// Starts the part of a signed message that names code beyond exec.
pub const CODE_TAG: &str = "authz-code";
/// Most libraries one permit may list (a large program has about a hundred;
/// the 64 KiB file limit allows a few hundred entries).
pub const MAX_LIBRARIES: usize = 256;

/// A file the permit's program may map executable (a shared library, or its
/// loader): never exec'd on this permit's strength.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    /// SHA-256 of the file's contents: what the kernel checks.
    pub sha256: Digest,
    /// Where the file was when the permit was issued (informative only).
    pub path: Option<String>,
}

/// One `[[library]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLibrary {
    sha256: Spanned<String>,
    path: Option<Spanned<String>>,
}

/// Turns `[[library]]` tables into libraries, naming `library[N].field` (N
/// from 1) in errors.
pub(crate) fn parse_libraries(
    doc: &Doc<'_>,
    raw: &Spanned<Vec<RawLibrary>>,
) -> Result<Vec<Library>, ArtifactError> {
    let items = raw.get_ref();
    if items.is_empty() {
        return Err(doc.err(
            "library",
            Some(raw.span()),
            "is empty; leave it out when the permit names no library",
        ));
    }
    if items.len() > MAX_LIBRARIES {
        return Err(doc.err(
            "library",
            Some(raw.span()),
            format!("more than {MAX_LIBRARIES} libraries"),
        ));
    }
    let mut out: Vec<Library> = Vec::with_capacity(items.len());
    for (i, r) in items.iter().enumerate() {
        let f = |name: &str| format!("library[{}].{name}", i + 1);
        let sha256 = doc.get(&f("sha256"), &r.sha256, |s| parse_hex::<32>(s))?;
        if let Some(j) = out.iter().position(|l| l.sha256 == sha256) {
            return Err(doc.err(
                &f("sha256"),
                Some(r.sha256.span()),
                format!("repeats library[{}]", j + 1),
            ));
        }
        out.push(Library {
            sha256,
            path: doc.get_opt(&f("path"), &r.path, conv::text(MAX_PATH))?,
        });
    }
    Ok(out)
}

/// Checks the limits a list of libraries must respect on its own.
pub(crate) fn check_libraries(libraries: &[Library]) -> Result<(), ArtifactError> {
    let err =
        |field: String, problem: String| Err(ArtifactError::field(Kind::Artifact, &field, problem));
    if libraries.len() > MAX_LIBRARIES {
        return err(
            "library".into(),
            format!("more than {MAX_LIBRARIES} libraries"),
        );
    }
    for (i, l) in libraries.iter().enumerate() {
        if let Some(j) = libraries[..i].iter().position(|o| o.sha256 == l.sha256) {
            return err(
                format!("library[{}].sha256", i + 1),
                format!("repeats library[{}]", j + 1),
            );
        }
        if let Err(p) = check_opt_text(l.path.as_deref(), MAX_PATH) {
            return err(format!("library[{}].path", i + 1), p);
        }
    }
    Ok(())
}

/// Reads an optional `exec_memory` flag: absent means false, and only `true`
/// is ever written (one spelling per value).
pub(crate) fn parse_exec_memory(
    doc: &Doc<'_>,
    field: &str,
    raw: &Option<Spanned<bool>>,
) -> Result<bool, ArtifactError> {
    match raw {
        None => Ok(false),
        Some(v) if *v.get_ref() => Ok(true),
        Some(v) => Err(doc.err(
            field,
            Some(v.span()),
            "is written only when true; leave it out otherwise",
        )),
    }
}

/// Writes `libraries` as `[[library]]` tables.
pub(crate) fn write_libraries(w: &mut Writer, libraries: &[Library]) {
    for l in libraries {
        w.array_table("library")
            .str("sha256", &hex::encode(l.sha256))
            .opt_str("path", l.path.as_deref());
    }
}

/// The permit message's last part: nothing when the permit grants neither
/// executable memory nor libraries (so older permits keep their bytes),
/// else the tag, the flag and the libraries.
pub(crate) fn permit_extension(e: &mut Encoder, exec_memory: bool, libraries: &[Library]) {
    if !exec_memory && libraries.is_empty() {
        return;
    }
    e.str(CODE_TAG).bool(exec_memory).count(libraries.len());
    for l in libraries {
        e.fixed(&l.sha256).opt_str(l.path.as_deref());
    }
}

/// A link message's last part: nothing unless the link lets its delegate
/// grant executable memory.
pub(crate) fn link_extension(e: &mut Encoder, exec_memory: bool) {
    if exec_memory {
        e.str(CODE_TAG).bool(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(b: u8, path: Option<&str>) -> Library {
        Library {
            sha256: [b; 32],
            path: path.map(str::to_owned),
        }
    }

    #[test]
    fn nothing_is_added_without_libraries_or_exec_memory() {
        let base = Encoder::new("d", 1).finish();
        let mut e = Encoder::new("d", 1);
        permit_extension(&mut e, false, &[]);
        link_extension(&mut e, false);
        assert_eq!(e.finish(), base);
    }

    #[test]
    fn the_extension_encodes_as_documented() {
        let mut e = Encoder::new("d", 1);
        permit_extension(&mut e, true, &[lib(0xab, Some("/l")), lib(0xcd, None)]);
        let mut want = Encoder::new("d", 1).finish();
        want.extend_from_slice(&[0, 0, 0, 10]);
        want.extend_from_slice(b"authz-code");
        want.extend_from_slice(&[1, 0, 0, 0, 2]);
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&[1, 0, 0, 0, 2, b'/', b'l']);
        want.extend_from_slice(&[0xcd; 32]);
        want.push(0);
        assert_eq!(e.finish(), want);
        let mut e = Encoder::new("d", 1);
        link_extension(&mut e, true);
        let mut want = Encoder::new("d", 1).finish();
        want.extend_from_slice(&[0, 0, 0, 10]);
        want.extend_from_slice(b"authz-code");
        want.push(1);
        assert_eq!(e.finish(), want);
    }

    #[test]
    fn repeated_or_too_many_libraries_are_refused() {
        assert!(check_libraries(&[lib(1, None), lib(2, Some("/x"))]).is_ok());
        let e = check_libraries(&[lib(1, None), lib(2, None), lib(1, None)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed artifact: field `library[3].sha256`: repeats library[1]"
        );
        let many: Vec<Library> = (0..=MAX_LIBRARIES)
            .map(|i| Library {
                sha256: {
                    let mut d = [0; 32];
                    d[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    d
                },
                path: None,
            })
            .collect();
        assert!(check_libraries(&many).is_err());
        assert!(check_libraries(&[lib(1, Some("two\nlines"))]).is_err());
    }
}
