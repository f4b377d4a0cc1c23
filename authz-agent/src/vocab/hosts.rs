//! Host binding: the optional signed field that says on which hosts a permit
//! (or everything under a delegation link) may be live.
//!
//! A binding lists machine ids (the 128-bit id in `/etc/machine-id`) and host
//! labels (names a host's own config declares, `host_labels`). A host
//! *matches* a binding when its machine id is one of the listed ids **or** it
//! declares one of the listed labels. A permit is live only on a host that
//! matches every binding along its chain (the permit's own and each link's),
//! so a delegation bound to `eu-west` narrows everything issued under it,
//! whatever the permit says, as a cgroup prefix does. An artifact without a
//! binding means what it always meant: any host.
//!
//! In the signed message a binding is a block of its own, appended only when
//! present (docs/artifact-format.md, "Host binding"), so the messages of
//! unbound artifacts and links are byte for byte those of format version 1.
use std::{collections::BTreeSet, fmt, str::FromStr};

use serde::Deserialize;
use toml::Spanned;

use super::{
    encoding::Encoder,
    fields::parse_hex,
    text::{ArtifactError, Doc, Writer},
};

/// The name that starts a binding's block in a signed message.
pub const HOSTS_BLOCK: &str = "hosts";
/// Most machine ids plus labels one binding may list.
pub const MAX_HOST_ENTRIES: usize = 256;
/// Longest host label, in bytes.
pub const MAX_LABEL: usize = 63;

/// A systemd machine id: 16 bytes, written as 32 lowercase hex digits (as in
/// `/etc/machine-id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineId(pub [u8; 16]);

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MachineId({self})")
    }
}

/// Not a machine id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a machine id (32 lowercase hex digits, as in /etc/machine-id)")]
pub struct BadMachineId(pub String);

impl FromStr for MachineId {
    type Err = BadMachineId;

    /// The canonical spelling only: what `/etc/machine-id` holds (without
    /// its newline).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<16>(s)
            .map(MachineId)
            .map_err(|_| BadMachineId(s.to_owned()))
    }
}

/// A host label: 1 to [`MAX_LABEL`] bytes of ASCII letters, digits and
/// `-`, `_`, `.`, `:`, `/`, `=`, starting with a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostLabel(String);

impl HostLabel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Not a host label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host label (1 to {MAX_LABEL} ASCII letters, digits, `-_.:/=`, starting with a letter or digit)")]
pub struct BadHostLabel(pub String);

impl FromStr for HostLabel {
    type Err = BadHostLabel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=MAX_LABEL).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/=".contains(c));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadHostLabel(s.to_owned()))
        }
    }
}

impl<'de> Deserialize<'de> for HostLabel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The hosts an artifact or delegation link is bound to. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostBinding {
    /// In file order (signed in that order); no duplicates.
    machine_ids: Vec<MachineId>,
    /// In file order (signed in that order); no duplicates.
    labels: Vec<HostLabel>,
}

/// Why a binding is not well-formed: (field suffix, problem).
type BindingProblem = (&'static str, String);

impl HostBinding {
    /// A binding to these machine ids and labels: at least one in all, at
    /// most [`MAX_HOST_ENTRIES`], no duplicates.
    pub fn new(machine_ids: Vec<MachineId>, labels: Vec<HostLabel>) -> Result<Self, ArtifactError> {
        let b = Self {
            machine_ids,
            labels,
        };
        b.check().map_err(|(field, problem)| {
            ArtifactError::field(
                super::text::Kind::Artifact,
                &format!("hosts.{field}"),
                problem,
            )
        })?;
        Ok(b)
    }

    fn check(&self) -> Result<(), BindingProblem> {
        if self.machine_ids.is_empty() && self.labels.is_empty() {
            return Err((
                "machine_ids",
                "a [hosts] binding must name at least one machine id or label".into(),
            ));
        }
        if self.machine_ids.len() + self.labels.len() > MAX_HOST_ENTRIES {
            return Err((
                "labels",
                format!("more than {MAX_HOST_ENTRIES} machine ids and labels"),
            ));
        }
        if let Some(d) = duplicate(&self.machine_ids) {
            return Err(("machine_ids", format!("{d} is listed twice")));
        }
        if let Some(d) = duplicate(&self.labels) {
            return Err(("labels", format!("{d} is listed twice")));
        }
        Ok(())
    }

    pub fn machine_ids(&self) -> &[MachineId] {
        &self.machine_ids
    }

    pub fn labels(&self) -> &[HostLabel] {
        &self.labels
    }

    /// Whether a host with this machine id and these labels is one of the
    /// bound hosts.
    pub fn matches(&self, machine_id: Option<&MachineId>, labels: &BTreeSet<HostLabel>) -> bool {
        machine_id.is_some_and(|m| self.machine_ids.contains(m))
            || self.labels.iter().any(|l| labels.contains(l))
    }

    /// Appends the binding's block to a signed message.
    pub fn encode(&self, e: &mut Encoder) {
        e.str(HOSTS_BLOCK).count(self.machine_ids.len());
        for m in &self.machine_ids {
            e.fixed(&m.0);
        }
        e.count(self.labels.len());
        for l in &self.labels {
            e.str(l.as_str());
        }
    }

    /// Writes the binding's keys (the caller wrote the table header).
    pub fn write(&self, w: &mut Writer) {
        if !self.machine_ids.is_empty() {
            w.str_list(
                "machine_ids",
                self.machine_ids
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            );
        }
        if !self.labels.is_empty() {
            w.str_list("labels", self.labels.iter().map(HostLabel::as_str));
        }
    }
}

impl fmt::Display for HostBinding {
    /// `machine ids 0123…, labels build, eu-west`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.machine_ids.is_empty() {
            let ids: Vec<String> = self.machine_ids.iter().map(|m| m.to_string()).collect();
            parts.push(format!("machine ids {}", ids.join(", ")));
        }
        if !self.labels.is_empty() {
            let labels: Vec<&str> = self.labels.iter().map(HostLabel::as_str).collect();
            parts.push(format!("labels {}", labels.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

fn duplicate<T: Ord + Clone>(items: &[T]) -> Option<T> {
    let mut seen = BTreeSet::new();
    items.iter().find(|i| !seen.insert((*i).clone())).cloned()
}

/// A `[hosts]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHosts {
    machine_ids: Option<Spanned<Vec<String>>>,
    labels: Option<Spanned<Vec<String>>>,
}

impl RawHosts {
    /// The binding, naming `{prefix}.machine_ids` / `{prefix}.labels` and
    /// their line in errors.
    pub(crate) fn parse(&self, doc: &Doc<'_>, prefix: &str) -> Result<HostBinding, ArtifactError> {
        let field = |name: &str| format!("{prefix}.{name}");
        let machine_ids = match &self.machine_ids {
            None => Vec::new(),
            Some(v) => doc.get(&field("machine_ids"), v, |ids| {
                ids.iter()
                    .map(|s| s.parse::<MachineId>().map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()
            })?,
        };
        let labels = match &self.labels {
            None => Vec::new(),
            Some(v) => doc.get(&field("labels"), v, |labels| {
                labels
                    .iter()
                    .map(|s| s.parse::<HostLabel>().map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()
            })?,
        };
        let binding = HostBinding {
            machine_ids,
            labels,
        };
        binding.check().map_err(|(name, problem)| {
            let span = match name {
                "labels" => self.labels.as_ref().or(self.machine_ids.as_ref()),
                _ => self.machine_ids.as_ref().or(self.labels.as_ref()),
            }
            .map(Spanned::span);
            doc.err(&field(name), span, problem)
        })?;
        Ok(binding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> HostLabel {
        s.parse().unwrap()
    }

    fn mid(b: u8) -> MachineId {
        MachineId([b; 16])
    }

    #[test]
    fn machine_ids_and_labels_have_one_spelling() {
        let m: MachineId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        assert_eq!(m.to_string(), "0123456789abcdef0123456789abcdef");
        assert!("0123456789ABCDEF0123456789ABCDEF"
            .parse::<MachineId>()
            .is_err());
        assert!("0123".parse::<MachineId>().is_err());
        for good in ["build", "eu-west", "zone=a", "k8s.io/role", "a"] {
            assert!(good.parse::<HostLabel>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "has space",
            "tab\t",
            "é",
            &"x".repeat(MAX_LABEL + 1),
        ] {
            assert!(bad.parse::<HostLabel>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_host_matches_by_machine_id_or_by_any_label() {
        let b = HostBinding::new(vec![mid(1)], vec![label("build"), label("eu")]).unwrap();
        let none = BTreeSet::new();
        assert!(b.matches(Some(&mid(1)), &none));
        assert!(!b.matches(Some(&mid(2)), &none));
        assert!(!b.matches(None, &none));
        assert!(b.matches(None, &[label("eu")].into()));
        assert!(!b.matches(Some(&mid(2)), &[label("us")].into()));
    }

    #[test]
    fn empty_and_duplicate_bindings_are_refused() {
        assert!(HostBinding::new(vec![], vec![]).is_err());
        assert!(HostBinding::new(vec![mid(1), mid(1)], vec![]).is_err());
        let e = HostBinding::new(vec![], vec![label("a"), label("a")]).unwrap_err();
        assert!(e.to_string().contains("hosts.labels"), "{e}");
    }

    #[test]
    fn the_block_is_tagged_and_length_prefixed() {
        let b = HostBinding::new(vec![mid(0xab)], vec![label("eu")]).unwrap();
        let mut e = Encoder::new("d", 1);
        b.encode(&mut e);
        let bytes = e.finish();
        let head = Encoder::new("d", 1).finish().len();
        assert_eq!(
            hex::encode(&bytes[head..]),
            format!(
                "00000005686f73747300000001{}000000010000000265 75",
                "ab".repeat(16)
            )
            .replace(' ', "")
        );
    }
}
