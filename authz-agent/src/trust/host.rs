//! Which host this is, for host-bound artifacts ([`crate::vocab::hosts`]):
//! its machine id (`/etc/machine-id`) and the labels its config declares
//! (`[agent] host_labels`).
use std::{collections::BTreeSet, fmt, fs, io, path::Path};

use crate::vocab::hosts::{HostBinding, HostLabel, MachineId};

/// Where systemd (and dbus, and the OS installer) keep the machine id.
pub const MACHINE_ID_FILE: &str = "/etc/machine-id";

/// This host, as bindings see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostIdentity {
    /// None when `/etc/machine-id` is missing, empty or not a machine id:
    /// then no binding matches by machine id (labels still may).
    pub machine_id: Option<MachineId>,
    pub labels: BTreeSet<HostLabel>,
}

/// Which hosts a verification accepts a binding for.
#[derive(Clone, Copy, Debug)]
pub enum HostCheck<'a> {
    /// Only this host: what the agent enforces with.
    This(&'a HostIdentity),
    /// Any host: for issuers checking what they sign, and for `inspect`;
    /// never for enforcement.
    Anywhere,
}

impl HostCheck<'_> {
    /// Whether `binding` lets an artifact be live here.
    pub fn allows(&self, binding: &HostBinding) -> bool {
        match self {
            HostCheck::This(host) => binding.matches(host.machine_id.as_ref(), &host.labels),
            HostCheck::Anywhere => true,
        }
    }
}

/// A machine id file that exists but does not hold a machine id.
#[derive(Debug, thiserror::Error)]
pub enum MachineIdError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} does not hold a machine id (32 lowercase hex digits)")]
    Malformed { path: String },
}

impl HostIdentity {
    /// A host known by nothing: matches no binding (what a verifier that was
    /// not told which host it runs on uses, so bound artifacts fail closed).
    pub fn unknown() -> Self {
        Self::default()
    }

    /// This host: the machine id in `machine_id_file` (missing: none) and
    /// `labels`. An unreadable or malformed file is an error: the caller
    /// decides whether to go on without a machine id.
    pub fn load(machine_id_file: &Path, labels: &[HostLabel]) -> Result<Self, MachineIdError> {
        let path = machine_id_file.display().to_string();
        let machine_id = match fs::read_to_string(machine_id_file) {
            Ok(text) => {
                // systemd writes "uninitialized\n" early in first boot.
                let id = text.trim_end_matches('\n');
                Some(
                    id.parse::<MachineId>()
                        .map_err(|_| MachineIdError::Malformed { path: path.clone() })?,
                )
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(MachineIdError::Read { path, source }),
        };
        Ok(Self {
            machine_id,
            labels: labels.iter().cloned().collect(),
        })
    }

    /// This host as the agent sees it: a machine id that cannot be read is
    /// reported and left out (bindings by machine id then do not match:
    /// fail closed), the labels are the config's.
    pub fn local(labels: &[HostLabel]) -> Self {
        match Self::load(Path::new(MACHINE_ID_FILE), labels) {
            Ok(host) => host,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "no machine id: permits bound to machine ids will not match this host");
                Self {
                    machine_id: None,
                    labels: labels.iter().cloned().collect(),
                }
            }
        }
    }
}

impl fmt::Display for HostIdentity {
    /// `machine id 0123…, labels build, eu-west`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.machine_id {
            Some(m) => write!(f, "machine id {m}")?,
            None => f.write_str("no machine id")?,
        }
        if self.labels.is_empty() {
            f.write_str(", no labels")
        } else {
            let labels: Vec<&str> = self.labels.iter().map(HostLabel::as_str).collect();
            write!(f, ", labels {}", labels.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_id_file_is_read_strictly() {
        let dir = std::env::temp_dir().join(format!(
            "authz-host-{}",
            crate::vocab::fields::ArtifactId::random()
        ));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("machine-id");
        let label: HostLabel = "build".parse().unwrap();
        let host = HostIdentity::load(&file, std::slice::from_ref(&label)).unwrap();
        assert_eq!(host.machine_id, None);
        assert!(host.labels.contains(&label));
        fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let host = HostIdentity::load(&file, &[]).unwrap();
        assert_eq!(
            host.machine_id.unwrap().to_string(),
            "0123456789abcdef0123456789abcdef"
        );
        fs::write(&file, "uninitialized\n").unwrap();
        assert!(matches!(
            HostIdentity::load(&file, &[]),
            Err(MachineIdError::Malformed { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_host_matches_no_binding_and_anywhere_matches_all() {
        let b = HostBinding::new(vec![], vec!["build".parse().unwrap()]).unwrap();
        assert!(!HostCheck::This(&HostIdentity::unknown()).allows(&b));
        assert!(HostCheck::Anywhere.allows(&b));
        let host = HostIdentity {
            machine_id: None,
            labels: ["build".parse().unwrap()].into(),
        };
        assert!(HostCheck::This(&host).allows(&b));
    }
}
