//! The agent's own log (not the decision log): where it goes and its filter.
//!
//! Under systemd, when stderr is the journal's stream (`JOURNAL_STREAM` names
//! stderr's device and inode, see systemd.exec(5)), records go to journald
//! natively: each with its real syslog priority (error 3, warning 4, info 6,
//! debug and trace 7), so `journalctl -u authz-agent -p warning` shows only
//! warnings and worse, and with the event's fields as journal fields
//! (`AUTHZ_MODE=enforce`, `AUTHZ_ERROR=...`). Everywhere else: text on stderr.
//!
//! The filter can be replaced while running ([`set_filter`]): a reload
//! applies a changed `[log] level`, unless `--log` or `AUTHZ_LOG` chose the
//! filter, which then keeps winning.
use std::sync::OnceLock;

use tracing_subscriber::{
    layer::SubscriberExt as _, reload, util::SubscriberInitExt as _, EnvFilter, Registry,
};

/// Prefix of the journal fields carrying an event's own fields.
const JOURNAL_FIELD_PREFIX: &str = "AUTHZ";
/// `SYSLOG_IDENTIFIER` of every journal record.
const SYSLOG_IDENTIFIER: &str = "authz-agent";

/// Where the log goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    Journald,
    Stderr,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log filter {filter:?}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("the log filter cannot be replaced: {0}")]
    Reload(#[from] reload::Error),
    #[error("the log is not set up")]
    NotInitialized,
}

struct State {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `--log` or `AUTHZ_LOG` chose the filter: the config's level does not apply.
    overridden: bool,
    sink: Sink,
}

static STATE: OnceLock<State> = OnceLock::new();

/// Sets up the process's log: journald when stderr is connected to the
/// journal (and journald answers), stderr otherwise. `overridden`: the
/// filter came from `--log` or `AUTHZ_LOG` rather than from a config.
/// An invalid filter falls back to the default level (said on the log).
pub fn init(filter: &str, overridden: bool) -> Sink {
    let (env_filter, bad) = match parse(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(crate::defaults::LOG_LEVEL), Some(e)),
    };
    let (filter_layer, handle) = reload::Layer::new(env_filter);
    let journald = if stderr_is_journal() {
        tracing_journald::layer().ok().map(|layer| {
            layer
                .with_syslog_identifier(SYSLOG_IDENTIFIER.into())
                .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
                .with_priority_mappings(priorities())
        })
    } else {
        None
    };
    let sink = if journald.is_some() {
        Sink::Journald
    } else {
        Sink::Stderr
    };
    let stderr = (sink == Sink::Stderr).then(|| {
        use std::io::IsTerminal as _;
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_writer(std::io::stderr)
    });
    let installed = Registry::default()
        .with(filter_layer)
        .with(journald)
        .with(stderr)
        .try_init()
        .is_ok();
    if installed {
        let _ = STATE.set(State {
            handle,
            overridden,
            sink,
        });
    }
    if let Some(e) = bad {
        tracing::warn!(error = %crate::error_chain(&e), default = crate::defaults::LOG_LEVEL, "using the default log filter");
    }
    sink
}

/// Syslog priorities by level: info is informational (6), as syslog means
/// it; notice (5) is left for nothing.
fn priorities() -> tracing_journald::PriorityMappings {
    use tracing_journald::Priority;
    tracing_journald::PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

fn parse(filter: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(filter).map_err(|source| LogError::Filter {
        filter: filter.to_owned(),
        source,
    })
}

/// What applying a config's `[log] level` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterChange {
    Applied,
    /// `--log` or `AUTHZ_LOG` chose the filter; it stays.
    Overridden,
}

/// Replaces the filter with a config's `[log] level`, unless `--log` or
/// `AUTHZ_LOG` chose it. Checked before anything changes: an invalid filter
/// leaves the current one in place.
pub fn set_config_filter(filter: &str) -> Result<FilterChange, LogError> {
    let parsed = parse(filter)?;
    let state = STATE.get().ok_or(LogError::NotInitialized)?;
    if state.overridden {
        return Ok(FilterChange::Overridden);
    }
    state.handle.reload(parsed)?;
    Ok(FilterChange::Applied)
}

/// Whether `filter` is a valid filter (for checking a config before
/// applying any of it).
pub fn check_filter(filter: &str) -> Result<(), LogError> {
    parse(filter).map(drop)
}

/// Where the log goes (stderr before [`init`]).
pub fn sink() -> Sink {
    STATE.get().map_or(Sink::Stderr, |s| s.sink)
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is
/// `<device>:<inode>` of the stream systemd connected, and must match stderr
/// itself (a child whose stderr was redirected inherits the variable).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_matches(&value.to_string_lossy(), stat.st_dev, stat.st_ino)
}

fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
        assert!(!journal_stream_matches("8", 8, 12345));
        assert!(!journal_stream_matches("x:y", 8, 12345));
    }

    #[test]
    fn warnings_and_worse_are_warning_priority_or_lower() {
        let p = priorities();
        // The journal's PRIORITY field is the digit.
        assert_eq!(p.error as u8, b'3');
        assert_eq!(p.warn as u8, b'4');
        assert_eq!(p.info as u8, b'6');
        assert_eq!(p.debug as u8, b'7');
    }

    #[test]
    fn invalid_filters_are_refused_before_anything_changes() {
        assert!(check_filter("info").is_ok());
        assert!(check_filter("authz_agent=debug,warn").is_ok());
        let err = check_filter("authz_agent=loud").unwrap_err();
        assert!(err.to_string().contains("authz_agent=loud"), "{err}");
    }
}
