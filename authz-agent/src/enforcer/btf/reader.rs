//! A lean reader of raw BTF (the format of `/sys/kernel/btf/vmlinux`): one
//! pass that records where each type starts, then lookups by name and id
//! that read the bytes in place.
//!
//! btf-rs builds a map of every name and a value for every type up front;
//! for the kernel's ~130,000 types that took 60-120 ms natively and about 3 s
//! under emulation, on every start, for the twenty-odd structs authz reads.
//! Every read here is bounds-checked: a malformed section is an error, never
//! a panic or a wrong offset.
use std::{cell::RefCell, collections::HashMap};

/// BTF's magic number, as the running (little- or big-endian) host writes it.
const MAGIC: u16 = 0xeb9f;
const VERSION: u8 = 1;
/// `struct btf_header` up to `str_len`.
const HEADER_BYTES: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_BYTES: usize = 12;

/// BTF kinds (`BTF_KIND_*`).
pub mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not BTF (bad magic or version)")]
    NotBtf,
    #[error("the header's sections lie outside the data")]
    Sections,
    #[error("type {0} runs past the type section")]
    Truncated(u32),
    #[error("type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("no type {0}")]
    NoType(u32),
}

/// One type's fixed part.
#[derive(Clone, Copy, Debug)]
pub struct TypeHeader {
    pub name_off: u32,
    pub kind: u32,
    pub vlen: usize,
    pub kind_flag: bool,
    /// `size` for structs, unions, ints; `type` for the referencing kinds.
    pub size_or_type: u32,
}

/// A member of a struct or union, or a parameter of a function prototype
/// (`bit_offset` 0).
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    pub bit_offset: u32,
    pub bitfield_size: u32,
}

/// Parsed BTF: the bytes and where every type starts.
///
/// The agent's own crate is built unoptimized for tests, which run under
/// emulation: the per-type work is kept to one walk, and name lookups use
/// `memchr`'s (always optimized) substring search over the string section
/// and over the types' name offsets instead of a loop over 130,000 types.
pub struct RawBtf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Byte offset of type id `i + 1` (id 0 is `void`).
    starts: Vec<usize>,
    /// The `name_off` of type id `i + 1`, as the 4 native-endian bytes at
    /// `4 * i`.
    name_offs: Vec<u8>,
    by_name: RefCell<HashMap<String, Vec<u32>>>,
}

impl RawBtf {
    pub fn parse(data: Vec<u8>) -> Result<Self, FormatError> {
        let u16_at = |at: usize| -> Option<u16> {
            Some(u16::from_ne_bytes(data.get(at..at + 2)?.try_into().ok()?))
        };
        if u16_at(0) != Some(MAGIC) || data.get(2) != Some(&VERSION) {
            return Err(FormatError::NotBtf);
        }
        let word = |at: usize| read_u32(&data, at).ok_or(FormatError::Sections);
        let hdr_len = word(4)? as usize;
        if hdr_len < HEADER_BYTES {
            return Err(FormatError::Sections);
        }
        let section = |off: usize, len: usize| -> Result<std::ops::Range<usize>, FormatError> {
            let (off, len) = (word(off)? as usize, word(len)? as usize);
            let start = hdr_len.checked_add(off).ok_or(FormatError::Sections)?;
            match start.checked_add(len) {
                Some(end) if end <= data.len() => Ok(start..end),
                _ => Err(FormatError::Sections),
            }
        };
        let types = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut starts = Vec::with_capacity(types.len() / 16);
        let mut name_offs = Vec::with_capacity(types.len() / 4);
        let mut at = types.start;
        let section = &data[..types.end];
        while at < types.end {
            let id = starts.len() as u32 + 1;
            // The walk's one bounds check per type; the fixed part is then
            // read in place (this loop runs ~130,000 times, unoptimized in
            // test builds).
            let Some(fixed) = section.get(at..at + TYPE_BYTES) else {
                return Err(FormatError::Truncated(id));
            };
            name_offs.extend_from_slice(&fixed[..4]);
            let info = u32::from_ne_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
                kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => 0,
                kind => return Err(FormatError::UnknownKind { id, kind }),
            };
            starts.push(at);
            at = at + TYPE_BYTES + extra;
        }
        if at != types.end {
            return Err(FormatError::Truncated(starts.len() as u32));
        }
        Ok(Self {
            data,
            strings,
            starts,
            name_offs,
            by_name: RefCell::new(HashMap::new()),
        })
    }

    /// The string at `off` in the string section ("" when out of range or
    /// not UTF-8: such a name matches nothing authz asks for).
    pub fn name(&self, off: u32) -> &str {
        let Some(start) = self.strings.start.checked_add(off as usize) else {
            return "";
        };
        let Some(rest) = self.data.get(start..self.strings.end) else {
            return "";
        };
        let len = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..len]).unwrap_or("")
    }

    /// The fixed part of type `id`.
    pub fn header(&self, id: u32) -> Result<TypeHeader, FormatError> {
        let at = self.start(id)?;
        type_header(&self.data, at).ok_or(FormatError::Truncated(id))
    }

    /// Members of a struct or union, or parameters of a function prototype
    /// (empty for any other kind).
    pub fn members(&self, id: u32) -> Result<Vec<Member>, FormatError> {
        let h = self.header(id)?;
        let at = self.start(id)? + TYPE_BYTES;
        let entry = match h.kind {
            kind::STRUCT | kind::UNION => 12,
            kind::FUNC_PROTO => 8,
            _ => return Ok(Vec::new()),
        };
        (0..h.vlen)
            .map(|i| {
                let m = at + i * entry;
                let word =
                    |k: usize| read_u32(&self.data, m + 4 * k).ok_or(FormatError::Truncated(id));
                let (name_off, type_id) = (word(0)?, word(1)?);
                let (bit_offset, bitfield_size) = match (entry, h.kind_flag) {
                    (8, _) => (0, 0),
                    (_, true) => {
                        let raw = word(2)?;
                        (raw & 0x00ff_ffff, raw >> 24)
                    }
                    (_, false) => (word(2)?, 0),
                };
                Ok(Member {
                    name_off,
                    type_id,
                    bit_offset,
                    bitfield_size,
                })
            })
            .collect()
    }

    /// Ids of the types called `name`, in id order (remembered: the kernel's
    /// ~130,000 types are scanned once per distinct name).
    pub fn ids_named(&self, name: &str) -> Vec<u32> {
        if let Some(ids) = self.by_name.borrow().get(name) {
            return ids.clone();
        }
        let mut ids = Vec::new();
        if !name.is_empty() {
            // Every string starts after the NUL ending the one before it (the
            // section begins with the empty string).
            let needle = [&[0u8][..], name.as_bytes(), &[0]].concat();
            let strings = &self.data[self.strings.clone()];
            for at in find_overlapping(strings, &needle, 1) {
                let off = (at + 1) as u32;
                for pos in find_overlapping(&self.name_offs, &off.to_ne_bytes(), 4) {
                    ids.push((pos / 4) as u32 + 1);
                }
            }
            ids.sort_unstable();
            ids.dedup();
        }
        self.by_name
            .borrow_mut()
            .insert(name.to_owned(), ids.clone());
        ids
    }

    fn start(&self, id: u32) -> Result<usize, FormatError> {
        id.checked_sub(1)
            .and_then(|i| self.starts.get(i as usize))
            .copied()
            .ok_or(FormatError::NoType(id))
    }
}

/// Every position of `needle` in `haystack` that is a multiple of `align`,
/// overlapping matches included (`memmem::find_iter` skips a match that
/// overlaps the one before it: a misaligned match must not hide an aligned
/// one, nor one string the next identical one).
fn find_overlapping(haystack: &[u8], needle: &[u8], align: usize) -> Vec<usize> {
    let finder = memchr::memmem::Finder::new(needle);
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = haystack.get(from..).and_then(|rest| finder.find(rest)) {
        let pos = from + at;
        if pos % align == 0 {
            found.push(pos);
        }
        from = pos + 1;
    }
    found
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn type_header(data: &[u8], at: usize) -> Option<TypeHeader> {
    let info = read_u32(data, at.checked_add(4)?)?;
    Some(TypeHeader {
        name_off: read_u32(data, at)?,
        kind: (info >> 24) & 0x1f,
        vlen: (info & 0xffff) as usize,
        kind_flag: info >> 31 == 1,
        size_or_type: read_u32(data, at.checked_add(8)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: header, the given type bytes, the given strings.
    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_ne_bytes());
        b.push(VERSION);
        b.push(0);
        for w in [
            HEADER_BYTES as u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(types);
        b.extend_from_slice(strings);
        b
    }

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn a_struct_with_a_bitfield_member_reads_back() {
        // strings: "\0int\0s\0a\0b\0"
        let strings = b"\0int\0s\0a\0b\0";
        let types = [
            // 1: int, 4 bytes.
            words(&[1, kind::INT << 24, 4, 32]),
            // 2: struct s { int a; int b:3 at bit 32 } with kind_flag.
            words(&[
                5,
                (1 << 31) | (kind::STRUCT << 24) | 2,
                8,
                7,
                1,
                0,
                9,
                1,
                (3 << 24) | 32,
            ]),
        ]
        .concat();
        let btf = RawBtf::parse(blob(&types, strings)).expect("parse");
        assert_eq!(btf.ids_named("s"), vec![2]);
        assert_eq!(btf.ids_named("int"), vec![1]);
        assert!(btf.ids_named("in").is_empty(), "a prefix is not a name");
        let m = btf.members(2).expect("members");
        assert_eq!(btf.name(m[0].name_off), "a");
        assert_eq!((m[0].bit_offset, m[0].bitfield_size), (0, 0));
        assert_eq!(btf.name(m[1].name_off), "b");
        assert_eq!((m[1].bit_offset, m[1].bitfield_size), (32, 3));
        assert_eq!(btf.header(3).unwrap_err(), FormatError::NoType(3));
        assert_eq!(btf.header(0).unwrap_err(), FormatError::NoType(0));
    }

    #[test]
    fn matches_that_overlap_are_all_found() {
        // An aligned match right after a misaligned one that overlaps it.
        let hay = [9u8, 9, 1, 0, 1, 0, 1, 0];
        assert_eq!(find_overlapping(&hay, &[1, 0, 1, 0], 4), vec![4]);
        assert_eq!(
            memchr::memmem::find_iter(&hay, &[1, 0, 1, 0]).collect::<Vec<_>>(),
            vec![2],
            "what the plain search sees"
        );
        // The same string twice: both copies.
        assert_eq!(find_overlapping(b"\0ab\0ab\0", b"\0ab\0", 1), vec![0, 3]);
        // Both through the reader: two types named "s", the second under the
        // second copy of the string.
        let strings = b"\0s\0s\0";
        let types = [
            words(&[1, kind::STRUCT << 24, 4]),
            words(&[3, kind::STRUCT << 24, 4]),
        ]
        .concat();
        let btf = RawBtf::parse(blob(&types, strings)).expect("parse");
        assert_eq!(btf.ids_named("s"), vec![1, 2]);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let strings = b"\0s\0";
        let good = words(&[1, (kind::STRUCT << 24) | 1, 4, 1, 0, 0]);
        assert!(RawBtf::parse(blob(&good, strings)).is_ok());
        // Every truncation of the blob, and every single-byte corruption of
        // the header and types, is refused or read without panicking.
        let whole = blob(&good, strings);
        for len in 0..whole.len() {
            let _ = RawBtf::parse(whole[..len].to_vec());
        }
        for i in 0..HEADER_BYTES + good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = whole.clone();
                b[i] = v;
                if let Ok(btf) = RawBtf::parse(b) {
                    for id in 0..3 {
                        let _ = btf.members(id);
                        if let Ok(h) = btf.header(id) {
                            let _ = btf.name(h.name_off);
                        }
                    }
                    let _ = btf.ids_named("s");
                }
            }
        }
        assert_eq!(
            RawBtf::parse(blob(&words(&[1, 31 << 24, 0]), strings)).err(),
            Some(FormatError::UnknownKind { id: 1, kind: 31 })
        );
        assert_eq!(RawBtf::parse(vec![0; 64]).err(), Some(FormatError::NotBtf));
    }
}
