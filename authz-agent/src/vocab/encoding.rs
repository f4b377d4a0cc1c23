//! The canonical byte encoding that signatures cover.
//!
//! Signatures never cover TOML text: they cover a message built from the parsed
//! values, field by field in a fixed order, with these primitives
//! (docs/artifact-format.md is the normative description):
//!
//! | value            | bytes                                              |
//! |------------------|----------------------------------------------------|
//! | `u32`, `u64`     | big-endian, 4 or 8 bytes                           |
//! | `bool`           | one byte, 0 or 1                                   |
//! | fixed bytes      | the bytes themselves (ids 16, digests and keys 32) |
//! | string           | `u32` byte length, then the UTF-8 bytes            |
//! | optional string  | 0 when absent; 1 then the string when present      |
//! | list             | `u32` count, then each item                        |
//! | timestamp        | `u64` seconds since 1970-01-01T00:00:00Z           |
//!
//! Every message starts with a domain string (`authz-artifact`,
//! `authz-delegation`) and the format version, so a signature made for one kind
//! of message can never be taken for another. Every variable-length item carries
//! its length, so no two different values encode to the same bytes.
use super::time::Timestamp;

/// Longest string the encoding is ever asked to write; validation enforces
/// much smaller limits long before this.
const MAX_STR: usize = u32::MAX as usize;

/// Builds one canonical message.
#[derive(Debug)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// A message for domain `domain`, format version `version`.
    pub fn new(domain: &str, version: u32) -> Self {
        let mut e = Self {
            buf: Vec::with_capacity(512),
        };
        e.str(domain);
        e.u32(version);
        e
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(u8::from(v));
        self
    }

    /// Fixed-size bytes: the size is part of the format, not of the message.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        // Callers validate lengths to a few KiB; a longer string is a bug, and
        // truncating keeps the length prefix honest rather than panicking.
        let bytes = &s.as_bytes()[..s.len().min(MAX_STR)];
        self.count(bytes.len());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.bool(false),
            Some(s) => self.bool(true).str(s),
        }
    }

    /// The `u32` count that starts a list.
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub fn time(&mut self, t: Timestamp) -> &mut Self {
        self.u64(t.unix())
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_encode_as_documented() {
        let mut e = Encoder::new("d", 1);
        e.u64(2)
            .bool(true)
            .fixed(&[9, 9])
            .opt_str(None)
            .opt_str(Some("é"))
            .count(3)
            .time(Timestamp::from_unix(256).unwrap());
        assert_eq!(
            e.finish(),
            [
                &[0, 0, 0, 1, b'd'][..],
                &[0, 0, 0, 1],
                &[0, 0, 0, 0, 0, 0, 0, 2],
                &[1],
                &[9, 9],
                &[0],
                &[1, 0, 0, 0, 2, 0xc3, 0xa9],
                &[0, 0, 0, 3],
                &[0, 0, 0, 0, 0, 0, 1, 0],
            ]
            .concat()
        );
    }

    #[test]
    fn strings_are_unambiguous() {
        let enc = |a: &str, b: &str| {
            let mut e = Encoder::new("d", 1);
            e.str(a).str(b);
            e.finish()
        };
        assert_ne!(enc("ab", "c"), enc("a", "bc"));
    }
}
