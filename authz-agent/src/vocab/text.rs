//! The TOML side of every authz file: size limits, the `format`/`version`
//! header, strict parsing with field names and line numbers in errors, and a
//! small writer that emits fields in a fixed order.
use std::{
    fmt,
    fmt::Write as _,
    fs,
    io::{self, Read as _},
    ops::Range,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;
use toml::Spanned;

/// Largest artifact, delegation or key file accepted (bytes).
pub const MAX_FILE: usize = 64 * 1024;
/// The only format version this agent reads and writes.
pub const VERSION: u32 = 1;

/// Which kind of file a text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Artifact,
    Delegation,
    PublicKey,
    SecretKey,
    Statement,
    Revocations,
}

impl Kind {
    /// The value of the file's `format` field.
    pub fn format(self) -> &'static str {
        match self {
            Kind::Artifact => "authz-artifact",
            Kind::Delegation => "authz-delegation",
            Kind::PublicKey => "authz-public-key",
            Kind::SecretKey => "authz-secret-key",
            Kind::Statement => "authz-statement",
            Kind::Revocations => "authz-revocations",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Artifact => "artifact",
            Kind::Delegation => "delegation",
            Kind::PublicKey => "public key file",
            Kind::SecretKey => "secret key file",
            Kind::Statement => "lockdown statement",
            Kind::Revocations => "revocation list",
        })
    }
}

/// ` (line N)` when the line is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineAt(pub Option<usize>);

impl fmt::Display for LineAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " (line {line})"),
            None => Ok(()),
        }
    }
}

/// Why a text is not a valid artifact, delegation or key file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("{kind} is {size} bytes; the limit is {limit}")]
    TooLarge { kind: Kind, size: u64, limit: usize },
    #[error("malformed {kind}{}: {message}", LineAt(*.line))]
    Syntax {
        kind: Kind,
        line: Option<usize>,
        message: String,
    },
    #[error("malformed {kind}: field `{field}`{}: {problem}", LineAt(*.line))]
    Field {
        kind: Kind,
        field: String,
        line: Option<usize>,
        problem: String,
    },
    #[error("unsupported {kind} version {found}{}; this agent reads version {VERSION}", LineAt(*.line))]
    UnsupportedVersion {
        kind: Kind,
        found: String,
        line: Option<usize>,
    },
    #[error("not an authz {kind}: `format` is {found}{}, expected {:?}", LineAt(*.line), .kind.format())]
    WrongFormat {
        kind: Kind,
        found: String,
        line: Option<usize>,
    },
}

impl ArtifactError {
    /// A field error without a known line (values built in memory).
    pub fn field(kind: Kind, field: &str, problem: impl fmt::Display) -> Self {
        ArtifactError::Field {
            kind,
            field: field.to_owned(),
            line: None,
            problem: problem.to_string(),
        }
    }
}

/// A file that cannot be read, or whose content is not valid.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ArtifactError,
    },
}

/// The kind of authz file `text` says it is (its `format`), when it is one;
/// read leniently, before the strict parse of that kind.
pub fn kind_of(text: &str) -> Option<Kind> {
    if text.len() > MAX_FILE {
        return None;
    }
    let header: Header = toml::from_str(text).ok()?;
    let format = header.format?.into_inner();
    [
        Kind::Artifact,
        Kind::Delegation,
        Kind::Revocations,
        Kind::PublicKey,
        Kind::SecretKey,
    ]
    .into_iter()
    .find(|k| format.as_str() == Some(k.format()))
}

/// Reads a file of `kind`, refusing more than [`MAX_FILE`] bytes without
/// reading them.
pub fn read_file(path: &Path, kind: Kind) -> Result<String, FileError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let invalid = |source| FileError::Invalid {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() > MAX_FILE {
        let size = fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(invalid(ArtifactError::TooLarge {
            kind,
            size,
            limit: MAX_FILE,
        }));
    }
    String::from_utf8(bytes).map_err(|e| {
        invalid(ArtifactError::Syntax {
            kind,
            line: None,
            message: format!(
                "not UTF-8 text (bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        })
    })
}

/// Reads a file of `kind` (see [`read_file`]) and parses it with `parse`.
pub fn read_parsed<T>(
    path: &Path,
    kind: Kind,
    parse: impl FnOnce(&str) -> Result<T, ArtifactError>,
) -> Result<T, FileError> {
    let text = read_file(path, kind)?;
    parse(&text).map_err(|source| FileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path} already exists; not overwriting it (remove it first, or choose another name)")]
    Exists { path: PathBuf },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Creates `path` with `mode` (O_CREAT|O_EXCL: never replaces an existing
/// file) and writes `contents` to disk.
pub fn write_new(path: &Path, mode: u32, contents: &str) -> Result<(), WriteError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let io_err = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(WriteError::Exists {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(io_err(e)),
    };
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            // Leave no half-written file behind.
            let _ = fs::remove_file(path);
            io_err(e)
        })
}

/// Just the header, read leniently when a strict parse fails, so that a newer
/// version or another kind of file is reported as such rather than as unknown
/// fields.
#[derive(serde::Deserialize)]
struct Header {
    format: Option<Spanned<toml::Value>>,
    version: Option<Spanned<toml::Value>>,
}

/// The `format` and `version` fields every authz file starts with. Raw file
/// types hold them as `format: Spanned<String>, version: Spanned<i64>`.
pub trait Headed {
    fn head(&self) -> (&Spanned<String>, &Spanned<i64>);
}

/// Implements [`Headed`] for raw types with `format` and `version` fields.
macro_rules! headed {
    ($($t:ty),+) => {$(
        impl $crate::vocab::text::Headed for $t {
            fn head(&self) -> (&toml::Spanned<String>, &toml::Spanned<i64>) {
                (&self.format, &self.version)
            }
        }
    )+};
}
pub(crate) use headed;

/// One TOML document being turned into typed values.
pub struct Doc<'a> {
    kind: Kind,
    text: &'a str,
}

impl<'a> Doc<'a> {
    /// Checks size and header, then deserializes `T` strictly (the raw types
    /// deny unknown fields).
    pub fn parse<T: DeserializeOwned + Headed>(
        kind: Kind,
        text: &'a str,
    ) -> Result<(Self, T), ArtifactError> {
        if text.len() > MAX_FILE {
            return Err(ArtifactError::TooLarge {
                kind,
                size: text.len() as u64,
                limit: MAX_FILE,
            });
        }
        let doc = Doc { kind, text };
        match toml::from_str::<T>(text) {
            Ok(raw) => {
                let (format, version) = raw.head();
                let spanned = |v: toml::Value, span| Some(Spanned::new(span, v));
                doc.check_header(Header {
                    format: spanned(format.get_ref().clone().into(), format.span()),
                    version: spanned((*version.get_ref()).into(), version.span()),
                })?;
                Ok((doc, raw))
            }
            Err(strict) => {
                // Say "unsupported version" rather than "unknown field" when
                // the header is what is wrong.
                let header: Header = toml::from_str(text).map_err(|e| doc.syntax(&e))?;
                doc.check_header(header)?;
                Err(doc.syntax(&strict))
            }
        }
    }

    fn check_header(&self, header: Header) -> Result<(), ArtifactError> {
        let kind = self.kind;
        match header.format {
            None => {
                return Err(self.err(
                    "format",
                    None,
                    format!("missing; expected {:?}", kind.format()),
                ))
            }
            Some(f) if f.get_ref().as_str() != Some(kind.format()) => {
                return Err(ArtifactError::WrongFormat {
                    kind,
                    found: f.get_ref().to_string(),
                    line: Some(self.line(f.span())),
                })
            }
            Some(_) => {}
        }
        match header.version {
            None => Err(self.err("version", None, format!("missing; expected {VERSION}"))),
            Some(v) if v.get_ref().as_integer() != Some(i64::from(VERSION)) => {
                Err(ArtifactError::UnsupportedVersion {
                    kind,
                    found: v.get_ref().to_string(),
                    line: Some(self.line(v.span())),
                })
            }
            Some(_) => Ok(()),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// 1-based line of byte offset `span.start`.
    pub fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    fn syntax(&self, e: &toml::de::Error) -> ArtifactError {
        ArtifactError::Syntax {
            kind: self.kind,
            line: e.span().map(|s| self.line(s)),
            message: one_line(e.message()),
        }
    }

    /// An error about field `field` at `span`.
    pub fn err(
        &self,
        field: &str,
        span: Option<Range<usize>>,
        problem: impl fmt::Display,
    ) -> ArtifactError {
        ArtifactError::Field {
            kind: self.kind,
            field: field.to_owned(),
            line: span.map(|s| self.line(s)),
            problem: problem.to_string(),
        }
    }

    /// Converts a spanned value, attributing a failure to `field` and its line.
    pub fn get<V, T, E: fmt::Display>(
        &self,
        field: &str,
        v: &Spanned<V>,
        conv: impl FnOnce(&V) -> Result<T, E>,
    ) -> Result<T, ArtifactError> {
        conv(v.get_ref()).map_err(|e| self.err(field, Some(v.span()), e))
    }

    /// Like [`Doc::get`] for an optional field.
    pub fn get_opt<V, T, E: fmt::Display>(
        &self,
        field: &str,
        v: &Option<Spanned<V>>,
        conv: impl FnOnce(&V) -> Result<T, E>,
    ) -> Result<Option<T>, ArtifactError> {
        v.as_ref().map(|v| self.get(field, v, conv)).transpose()
    }
}

/// 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `s` on one line: `a; b` for `a\nb`.
pub fn one_line(s: &str) -> String {
    let parts: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    parts.join("; ")
}

/// Field converters for [`Doc::get`].
// They take `&String` because `Doc::get` hands a `&V` for a `Spanned<V>`.
#[allow(clippy::ptr_arg)]
pub mod conv {
    use super::super::{fields, time::Timestamp};

    pub fn text(max: usize) -> impl Fn(&String) -> Result<String, String> {
        move |s| fields::check_text(s, max).map(|()| s.clone())
    }

    pub fn time(s: &String) -> Result<Timestamp, String> {
        s.parse()
            .map_err(|e: super::super::time::BadTimestamp| e.to_string())
    }

    pub fn u32(v: &i64) -> Result<u32, String> {
        u32::try_from(*v).map_err(|_| format!("{v} is out of range (0..={})", u32::MAX))
    }

    pub fn positive_u64(v: &i64) -> Result<u64, String> {
        u64::try_from(*v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("{v} must be a positive number of seconds"))
    }
}

/// Writes TOML in a fixed order. Values are escaped here, so the output always
/// parses back to the same values.
#[derive(Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    /// Starts a file of `kind` with a comment and the header fields.
    pub fn new(kind: Kind, comment: &str) -> Self {
        let mut w = Self::default();
        for line in comment.lines() {
            w.comment(line);
        }
        w.str("format", kind.format());
        w.int("version", u64::from(VERSION));
        w
    }

    pub fn comment(&mut self, line: &str) -> &mut Self {
        let _ = writeln!(self.out, "# {line}");
        self
    }

    pub fn blank(&mut self) -> &mut Self {
        self.out.push('\n');
        self
    }

    pub fn table(&mut self, name: &str) -> &mut Self {
        let _ = writeln!(self.out, "\n[{name}]");
        self
    }

    pub fn array_table(&mut self, name: &str) -> &mut Self {
        let _ = writeln!(self.out, "\n[[{name}]]");
        self
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let _ = writeln!(self.out, "{key} = {}", quote(value));
        self
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    pub fn int(&mut self, key: &str, value: u64) -> &mut Self {
        let _ = writeln!(self.out, "{key} = {value}");
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        let _ = writeln!(self.out, "{key} = {value}");
        self
    }

    pub fn str_list<'s>(
        &mut self,
        key: &str,
        values: impl IntoIterator<Item = &'s str>,
    ) -> &mut Self {
        let items: Vec<String> = values.into_iter().map(quote).collect();
        let _ = writeln!(self.out, "{key} = [{}]", items.join(", "));
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A TOML basic string holding `s` exactly.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        format: Spanned<String>,
        version: Spanned<i64>,
        name: Spanned<String>,
    }
    headed!(Raw);

    #[test]
    fn header_is_checked_before_fields() {
        let parse = |t: &str| Doc::parse::<Raw>(Kind::Delegation, t).map(|_| ());
        assert!(parse("format = \"authz-delegation\"\nversion = 1\nname = \"x\"").is_ok());
        let e = parse("format = \"authz-delegation\"\nversion = 2\nnew_field = 1").unwrap_err();
        assert!(
            matches!(e, ArtifactError::UnsupportedVersion { line: Some(2), .. }),
            "{e}"
        );
        let e = parse("format = \"authz-artifact\"\nversion = 1").unwrap_err();
        assert!(matches!(e, ArtifactError::WrongFormat { .. }), "{e}");
        let e = parse("version = 1").unwrap_err();
        assert!(
            matches!(e, ArtifactError::Field { ref field, .. } if field == "format"),
            "{e}"
        );
        let e = parse("format = \"authz-delegation\"\nversion = 1\nname = \"x\"\nextra = 1")
            .unwrap_err();
        assert!(e.to_string().contains("line 4"), "{e}");
        assert!(e.to_string().contains("extra"), "{e}");
        let e = parse("format = = 1").unwrap_err();
        assert!(
            matches!(e, ArtifactError::Syntax { line: Some(1), .. }),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'), "{e}");
        let big = "#".repeat(MAX_FILE + 1);
        assert!(matches!(
            parse(&big).unwrap_err(),
            ArtifactError::TooLarge { .. }
        ));
    }

    #[test]
    fn quoting_round_trips() {
        for s in ["plain", "q\"uote", "back\\slash", "ctl\u{1}\u{7f}", "é ☃"] {
            #[derive(serde::Deserialize)]
            struct V {
                v: String,
            }
            let v: V = toml::from_str(&format!("v = {}", quote(s))).unwrap();
            assert_eq!(v.v, s);
        }
    }
}
