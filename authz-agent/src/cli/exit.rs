//! Exit statuses: one per kind of outcome a script needs to tell apart, the
//! same for every command.
//!
//! | status | name | meaning |
//! |---|---|---|
//! | 0 | `success` | done |
//! | 1 | `failure` | anything not listed below: an I/O error, the agent's internal error, a host that cannot enforce |
//! | 2 | `usage` | the command line is wrong (clap's own status) |
//! | 3 | `refused` | the input was refused or is invalid: an artifact that does not verify, a malformed file or config, a request the agent refused |
//! | 4 | `unreachable` | no agent answers on the control socket (or it is busy or shutting down: retry) |
//! | 5 | `permission-denied` | the caller lacks the rights: not root, not in the socket's or the admin group, a file it may not read |
//! | 6 | `log-broken` | `audit verify` found the decision log edited, reordered or truncated |
//!
//! A failed command prints one line on standard error (the error and its
//! causes, `{:#}`); with `--json` it also prints an [`ErrorReport`] on
//! standard output.
use std::process::ExitCode;

use serde::Serialize;

use crate::{
    config::ConfigError,
    control::{client::ClientError, protocol::RefusalKind},
    enforcer::preflight::PreflightError,
    trust::{PolicyError, VerifyError},
    vocab::text::{ArtifactError, FileError},
};

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    Refused = 3,
    Unreachable = 4,
    PermissionDenied = 5,
    LogBroken = 6,
}

impl Exit {
    /// Every status, in order (for the documentation and its test).
    pub const ALL: [Exit; 7] = [
        Exit::Success,
        Exit::Failure,
        Exit::Usage,
        Exit::Refused,
        Exit::Unreachable,
        Exit::PermissionDenied,
        Exit::LogBroken,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name scripts see in `--json` error reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::Refused => "refused",
            Exit::Unreachable => "unreachable",
            Exit::PermissionDenied => "permission-denied",
            Exit::LogBroken => "log-broken",
        }
    }

    /// What it means, in one line (`--help`, the man page).
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "done",
            Exit::Failure => "any other error (I/O, the agent's internal error, a host that cannot enforce)",
            Exit::Usage => "wrong command line",
            Exit::Refused => "input refused or invalid (an artifact that does not verify, a malformed file or config)",
            Exit::Unreachable => "no agent answers on the control socket (or it is busy or stopping: retry)",
            Exit::PermissionDenied => "not allowed: not root, not in the socket or admin group, an unreadable file",
            Exit::LogBroken => "the decision log is edited, reordered or truncated (audit verify)",
        }
    }

    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The status an agent's refusal of a request maps to.
    pub fn of_refusal(kind: RefusalKind) -> Exit {
        match kind {
            RefusalKind::Unauthorized | RefusalKind::Forbidden => Exit::PermissionDenied,
            RefusalKind::Busy | RefusalKind::ShuttingDown => Exit::Unreachable,
            RefusalKind::Internal => Exit::Failure,
            _ => Exit::Refused,
        }
    }

    /// The status for an error: the first cause, outermost first, that says
    /// what kind of failure it is; [`Exit::Failure`] when none does.
    pub fn of_error(e: &anyhow::Error) -> Exit {
        e.chain().find_map(classify).unwrap_or(Exit::Failure)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An explicit status for an error a command raises itself (for instance a
/// local check that refuses its input).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Classified {
    pub exit: Exit,
    pub message: String,
}

/// An error that exits with `exit`.
pub fn error(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        exit,
        message: message.into(),
    })
}

fn classify(cause: &(dyn std::error::Error + 'static)) -> Option<Exit> {
    if let Some(c) = cause.downcast_ref::<Classified>() {
        return Some(c.exit);
    }
    if let Some(e) = cause.downcast_ref::<ClientError>() {
        return match e {
            // A socket the caller may not open: EACCES from connect(2).
            ClientError::Connect { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some(Exit::PermissionDenied)
            }
            ClientError::Connect { .. } | ClientError::Io(_) => Some(Exit::Unreachable),
            ClientError::BadResponse(_) => Some(Exit::Failure),
            ClientError::Refused { kind, .. } => Some(Exit::of_refusal(*kind)),
        };
    }
    if let Some(e) = cause.downcast_ref::<PreflightError>() {
        return Some(match e {
            PreflightError::NotRoot(_) => Exit::PermissionDenied,
            _ => Exit::Failure,
        });
    }
    if cause.is::<VerifyError>() || cause.is::<ArtifactError>() || cause.is::<PolicyError>() {
        return Some(Exit::Refused);
    }
    if let Some(e) = cause.downcast_ref::<ConfigError>() {
        return match e {
            // The cause (an I/O error) decides.
            ConfigError::Read { .. } => None,
            _ => Some(Exit::Refused),
        };
    }
    if let Some(FileError::Invalid { .. }) = cause.downcast_ref::<FileError>() {
        return Some(Exit::Refused);
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::PermissionDenied {
            return Some(Exit::PermissionDenied);
        }
    }
    if let Some(errno) = cause.downcast_ref::<nix::errno::Errno>() {
        if matches!(errno, nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) {
            return Some(Exit::PermissionDenied);
        }
    }
    None
}

/// What a failed command prints on standard output with `--json`: the
/// protocol's error body (`kind`, `message`; the agent's refusal kind when
/// the agent refused), and the exit status by number and name.
#[derive(Debug, Serialize)]
pub struct ErrorReport {
    pub ok: bool,
    pub error: ErrorDetail,
    pub exit: Exit,
    pub exit_code: u8,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// The agent's refusal kind (`bad-signature`, `forbidden`, ...) when the
    /// agent refused; otherwise the exit status's name.
    pub kind: String,
    pub message: String,
}

impl ErrorReport {
    pub fn new(e: &anyhow::Error) -> Self {
        let exit = Exit::of_error(e);
        let kind = e
            .chain()
            .find_map(|c| c.downcast_ref::<ClientError>().and_then(ClientError::kind))
            .map_or_else(|| exit.as_str().to_owned(), |k| k.as_str().to_owned());
        Self {
            ok: false,
            error: ErrorDetail {
                kind,
                message: format!("{e:#}"),
            },
            exit,
            exit_code: exit.code(),
        }
    }
}

/// The exit-status table for `--help` (after the commands).
pub fn help_table() -> String {
    let mut out = String::from("Exit status:\n");
    for exit in Exit::ALL {
        out.push_str(&format!(
            "  {}  {:<18} {}\n",
            exit.code(),
            exit.as_str(),
            exit.meaning()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use anyhow::Context as _;

    use super::*;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::new(kind, "x")
    }

    #[test]
    fn every_status_has_its_number_and_a_distinct_name() {
        for (i, exit) in Exit::ALL.iter().enumerate() {
            assert_eq!(usize::from(exit.code()), i);
            assert_eq!(
                serde_json::to_value(exit).unwrap(),
                serde_json::Value::String(exit.as_str().into())
            );
        }
        let names: std::collections::BTreeSet<_> = Exit::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names.len(), Exit::ALL.len());
        assert!(help_table().contains("4  unreachable"));
    }

    #[test]
    fn errors_map_to_their_status() {
        let unreachable = anyhow::Error::new(ClientError::Connect {
            path: PathBuf::from("/run/authz/agent.sock"),
            source: io(std::io::ErrorKind::NotFound),
        });
        assert_eq!(Exit::of_error(&unreachable), Exit::Unreachable);
        let denied = anyhow::Error::new(ClientError::Connect {
            path: PathBuf::from("/run/authz/agent.sock"),
            source: io(std::io::ErrorKind::PermissionDenied),
        });
        assert_eq!(Exit::of_error(&denied), Exit::PermissionDenied);
        let forbidden = anyhow::Error::new(ClientError::Refused {
            kind: RefusalKind::Forbidden,
            message: "admin only".into(),
        });
        assert_eq!(Exit::of_error(&forbidden), Exit::PermissionDenied);
        let refused = anyhow::Error::new(ClientError::Refused {
            kind: RefusalKind::BadSignature,
            message: "bad".into(),
        })
        .context("submitting a.permit");
        assert_eq!(Exit::of_error(&refused), Exit::Refused);
        assert_eq!(ErrorReport::new(&refused).error.kind, "bad-signature");
        assert_eq!(
            ErrorReport::new(&refused).error.message,
            "submitting a.permit: bad [bad-signature]"
        );
        let busy = anyhow::Error::new(ClientError::Refused {
            kind: RefusalKind::Busy,
            message: "busy".into(),
        });
        assert_eq!(Exit::of_error(&busy), Exit::Unreachable);
        // A config that cannot be read for lack of rights is a permission
        // problem; one that does not parse is invalid input.
        let unreadable = anyhow::Error::new(ConfigError::Read {
            path: "/etc/authz/agent.toml".into(),
            source: io(std::io::ErrorKind::PermissionDenied),
        });
        assert_eq!(Exit::of_error(&unreadable), Exit::PermissionDenied);
        let missing = anyhow::Error::new(ConfigError::Read {
            path: "/etc/authz/agent.toml".into(),
            source: io(std::io::ErrorKind::NotFound),
        });
        assert_eq!(Exit::of_error(&missing), Exit::Failure);
        let invalid = anyhow::Error::new(ConfigError::TooLarge {
            path: "/etc/authz/agent.toml".into(),
        });
        assert_eq!(Exit::of_error(&invalid), Exit::Refused);
        let not_root =
            anyhow::Error::new(PreflightError::NotRoot(1000)).context("cannot enforce here");
        assert_eq!(Exit::of_error(&not_root), Exit::PermissionDenied);
        let explicit = Err::<(), _>(error(Exit::LogBroken, "seq 4 edited"))
            .context("audit verify")
            .unwrap_err();
        assert_eq!(Exit::of_error(&explicit), Exit::LogBroken);
        assert_eq!(
            Exit::of_error(&anyhow::anyhow!("anything else")),
            Exit::Failure
        );
    }

    #[test]
    fn refusal_kinds_map_to_statuses() {
        assert_eq!(
            Exit::of_refusal(RefusalKind::Unauthorized),
            Exit::PermissionDenied
        );
        assert_eq!(Exit::of_refusal(RefusalKind::Revoked), Exit::Refused);
        assert_eq!(Exit::of_refusal(RefusalKind::Internal), Exit::Failure);
        assert_eq!(
            Exit::of_refusal(RefusalKind::ShuttingDown),
            Exit::Unreachable
        );
    }
}
