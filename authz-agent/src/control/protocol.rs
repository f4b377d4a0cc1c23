//! The control protocol: one JSON object per line over a Unix stream socket.
//!
//! Request:  `{"v":1,"op":"submit","artifact":"<TOML text>"}`
//! Response: `{"v":1,"ok":true,"result":{...}}`
//!           `{"v":1,"ok":false,"error":{"kind":"bad-signature","message":"..."}}`
//!
//! Requests are bounded ([`MAX_REQUEST`]); a line that is too long, not JSON,
//! of another version or an unknown operation gets an error response and the
//! connection is closed. Nothing else changes. Which peer may send which
//! request is decided by [`super::access`].
use serde::{Deserialize, Serialize};

use crate::enforcer::Mode;

/// Protocol version spoken by this agent.
pub const VERSION: u32 = 1;
/// Longest request line (an artifact is at most 64 KiB; JSON escaping can
/// double it).
pub const MAX_REQUEST: usize = 256 * 1024;
/// Longest response line a client accepts (a `list` of 100,000 permits).
pub const MAX_RESPONSE: usize = 512 * 1024 * 1024;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Verify and install an artifact (its TOML text).
    Submit { artifact: String },
    /// Every accepted artifact and its state.
    List {},
    /// Revoke one artifact or delegation by id.
    Revoke {
        id: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Apply a signed revocation list (its TOML text).
    RevocationList { list: String },
    /// Revoke every accepted artifact and flush the kernel's permit map.
    RevokeAll {
        #[serde(default)]
        reason: Option<String>,
    },
    /// Mode, scope, permit counts, kernel counters, kernel state.
    Status {},
    /// Change the enforcement mode (persists across restarts).
    SetMode { mode: Mode },
    /// Execs that were, or in audit mode would have been, refused: since
    /// the agent started, or with `since` (RFC 3339) from the decision log,
    /// across restarts.
    Report {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// Every counter, gauge and histogram the agent has, as text.
    Metrics {
        #[serde(default)]
        format: MetricsFormat,
    },
    /// Would this binary run in this cgroup, and why: its digest, the permit
    /// that allows it, or the exact reason it would be refused. `cgroup` (a
    /// path) or `pid` (whose cgroup) names where; neither: the asker's.
    Why {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cgroup: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// End lockdown with a statement signed by a trust root (its TOML text).
    Unlock { statement: String },
    /// Authorize new agent code (an upgrade) with a signed statement.
    Adopt { statement: String },
}

impl Request {
    /// The operation's wire name (`"set-mode"`).
    pub fn op(&self) -> &'static str {
        match self {
            Request::Submit { .. } => "submit",
            Request::List {} => "list",
            Request::Revoke { .. } => "revoke",
            Request::RevokeAll { .. } => "revoke-all",
            Request::Status {} => "status",
            Request::SetMode { .. } => "set-mode",
            Request::Report { .. } => "report",
            Request::Metrics { .. } => "metrics",
            Request::Why { .. } => "why",
            Request::RevocationList { .. } => "revocation-list",
            Request::Unlock { .. } => "unlock",
            Request::Adopt { .. } => "adopt",
        }
    }
}

/// Why a request was refused: a stable, machine-readable kind (kebab-case on
/// the wire: `"bad-signature"`). Scripts branch on it; the message is for
/// people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    // The request itself.
    /// Not JSON, no version, unknown operation or fields.
    MalformedRequest,
    UnsupportedVersion,
    TooLarge,
    /// A request line not finished in time.
    TooSlow,
    // Who asks.
    /// The peer may not use the socket at all.
    Unauthorized,
    /// The peer may use the socket, but not for this request (admin only).
    Forbidden,
    /// No connection slot left for this peer; retry.
    Busy,
    // The agent.
    ShuttingDown,
    Internal,
    // The artifact.
    /// Not a well-formed artifact.
    Malformed,
    /// A different artifact with the same id is already accepted.
    Conflict,
    /// The kernel's permit map is full.
    Full,
    /// A revocation list whose serial is not above the last one applied from
    /// its signer.
    StaleSerial,
    // Verification (see docs/artifact-format.md).
    UnknownIssuer,
    RetiredKey,
    BrokenChain,
    BadSignature,
    NotYetValid,
    Expired,
    LifetimeOverLimit,
    OutlivesDelegation,
    CgroupOutsideScope,
    DelegationWidens,
    /// A permit grants executable memory its issuer may not grant.
    ExecMemoryNotDelegated,
    ChainTooLong,
    PolicyVersionMismatch,
    /// The artifact, or a delegation it depends on, is revoked.
    Revoked,
    // Lockdown.
    /// Lockdown forbids this without a signed statement, or the statement
    /// does not hold (signer, host, time).
    Locked,
    /// A lockdown statement sent while the kernel is not locked down.
    NotLocked,
    /// The artifact, or a delegation it depends on, is bound to other hosts.
    WrongHost,
    // The inbox.
    /// A file in the inbox that cannot be read as an authz file: not a
    /// regular file, a link out of the inbox, not text, an I/O error.
    Unreadable,
    /// A kind this client does not know (a newer agent).
    #[serde(other)]
    Unknown,
}

impl RefusalKind {
    /// The kind of a verification failure.
    pub fn of_verify(e: &crate::trust::VerifyError) -> Self {
        use crate::trust::VerifyError as E;
        match e {
            E::UnknownIssuer { .. } => Self::UnknownIssuer,
            E::RetiredKey { .. } => Self::RetiredKey,
            E::BrokenChain { .. } => Self::BrokenChain,
            E::BadSignature { .. } => Self::BadSignature,
            E::NotYetValid { .. } => Self::NotYetValid,
            E::Expired { .. } => Self::Expired,
            E::LifetimeOverLimit { .. } => Self::LifetimeOverLimit,
            E::OutlivesDelegation { .. } => Self::OutlivesDelegation,
            E::CgroupOutsideScope { .. } => Self::CgroupOutsideScope,
            E::DelegationWidens { .. } => Self::DelegationWidens,
            E::ExecMemoryNotDelegated { .. } => Self::ExecMemoryNotDelegated,
            E::ChainTooLong { .. } => Self::ChainTooLong,
            E::PolicyVersionMismatch { .. } => Self::PolicyVersionMismatch,
            E::Revoked { .. } => Self::Revoked,
            E::WrongHost { .. } => Self::WrongHost,
        }
    }

    /// The kind of a revocation list that is not applied.
    pub fn of_list(e: &crate::trust::revocations::ListError) -> Self {
        use crate::trust::revocations::ListError as E;
        match e {
            E::UnknownSigner { .. } => Self::UnknownIssuer,
            E::RetiredSigner { .. } => Self::RetiredKey,
            E::Chain(e) => Self::of_verify(e),
            E::NotTheDelegate { .. } => Self::BrokenChain,
            E::BadSignature { .. } => Self::BadSignature,
            E::StaleSerial { .. } => Self::StaleSerial,
        }
    }

    /// The wire name (`"bad-signature"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed-request",
            Self::UnsupportedVersion => "unsupported-version",
            Self::TooLarge => "too-large",
            Self::TooSlow => "too-slow",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Busy => "busy",
            Self::ShuttingDown => "shutting-down",
            Self::Internal => "internal",
            Self::Locked => "locked",
            Self::NotLocked => "not-locked",
            Self::Malformed => "malformed",
            Self::Conflict => "conflict",
            Self::Full => "full",
            Self::StaleSerial => "stale-serial",
            Self::UnknownIssuer => "unknown-issuer",
            Self::RetiredKey => "retired-key",
            Self::BrokenChain => "broken-chain",
            Self::BadSignature => "bad-signature",
            Self::NotYetValid => "not-yet-valid",
            Self::Expired => "expired",
            Self::LifetimeOverLimit => "lifetime-over-limit",
            Self::OutlivesDelegation => "outlives-delegation",
            Self::CgroupOutsideScope => "cgroup-outside-scope",
            Self::DelegationWidens => "delegation-widens",
            Self::ExecMemoryNotDelegated => "exec-memory-not-delegated",
            Self::ChainTooLong => "chain-too-long",
            Self::PolicyVersionMismatch => "policy-version-mismatch",
            Self::Revoked => "revoked",
            Self::WrongHost => "wrong-host",
            Self::Unreadable => "unreadable",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: its kind and one clear sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: RefusalKind,
    pub message: String,
}

impl ErrorBody {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Where an accepted artifact stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PermitState {
    /// In the kernel's map.
    Live,
    /// Valid, but its cgroup does not exist (yet).
    WaitingForCgroup,
    /// Valid from its effective `not_before`, which has not come.
    Scheduled,
    /// Past its expiry; the sweeper removes it.
    Expired,
}

impl PermitState {
    pub fn as_str(self) -> &'static str {
        match self {
            PermitState::Live => "live",
            PermitState::WaitingForCgroup => "waiting-for-cgroup",
            PermitState::Scheduled => "scheduled",
            PermitState::Expired => "expired",
        }
    }
}

/// Result of `submit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// The artifact id (hex).
    pub id: String,
    pub state: PermitState,
    /// The very same artifact was accepted before; nothing changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The cgroup's id when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// Effective window (RFC 3339): the permit's own, narrowed by its chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A validity window (RFC 3339, UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub not_before: String,
    pub expires: String,
}

/// One accepted artifact in `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermitEntry {
    pub id: String,
    pub state: PermitState,
    /// SHA-256 of the permitted binary (hex).
    pub digest: String,
    pub cgroup: String,
    pub cgroup_id: Option<u64>,
    pub descendants: bool,
    /// The effective window: the permit's own, narrowed by every link's.
    pub not_before: String,
    pub expires: String,
    /// The permit's own window, as signed.
    pub permit_validity: Window,
    /// The root key the authority comes from (key id, hex).
    pub issuer: String,
    /// Key ids from the root to the signer.
    pub chain: Vec<String>,
    pub policy_version: u32,
    pub requested_by: Option<String>,
    pub on_behalf_of: Option<String>,
    pub reason: Option<String>,
    pub subject_path: Option<String>,
    pub subject_name: Option<String>,
    /// SHA-256 (hex) of each file it lets the binary map executable (its
    /// loader and libraries); empty when none. Absent from older agents.
    #[serde(default)]
    pub libraries: Vec<String>,
    /// Whether it lets the binary's processes make memory executable.
    #[serde(default)]
    pub exec_memory: bool,
}

/// Result of `list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResult {
    pub permits: Vec<PermitEntry>,
    /// Entries in the revocation list.
    pub revoked: usize,
    /// What became of each file in the inbox directory, when the agent
    /// watches one. Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox: Option<InboxStatus>,
}

/// The inbox directory (`[agent] inbox_dir`) and what became of each file
/// in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxStatus {
    pub dir: String,
    /// By file name.
    pub files: Vec<InboxFile>,
}

/// What the agent made of one file in the inbox, the last time it read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxFile {
    pub name: String,
    /// SHA-256 (hex) of the bytes read; absent when they could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub outcome: InboxOutcome,
    /// The artifact's id, or the revocation list's signer and serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it was refused or ignored (with `error`, the refusal's kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RefusalKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When this outcome was reached (RFC 3339).
    pub at: String,
}

/// [`InboxFile::outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InboxOutcome {
    /// An artifact, verified and held (live or scheduled).
    Accepted,
    /// An artifact the agent already held with these exact bytes.
    AlreadyHeld,
    /// A revocation list, applied.
    Applied,
    /// A revocation list applied before.
    AlreadyApplied,
    /// Refused, for `message`; nothing changed.
    Refused,
    /// Not something the agent takes in (a key, a directory, a delegation
    /// on its own): nothing to do.
    Ignored,
    /// Still open for writing by someone: read once it is closed.
    Waiting,
}

impl InboxOutcome {
    pub const ALL: [Self; 7] = [
        Self::Accepted,
        Self::AlreadyHeld,
        Self::Applied,
        Self::AlreadyApplied,
        Self::Refused,
        Self::Ignored,
        Self::Waiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::AlreadyHeld => "already-held",
            Self::Applied => "applied",
            Self::AlreadyApplied => "already-applied",
            Self::Refused => "refused",
            Self::Ignored => "ignored",
            Self::Waiting => "waiting",
        }
    }
}

/// Result of `revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResult {
    pub id: String,
    /// Accepted artifacts the revocation removed.
    pub removed: usize,
    /// It was revoked before; nothing changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_revoked: bool,
    /// The agent held something the id names (an artifact, or permits
    /// under a delegation with that id).
    #[serde(default)]
    pub known: bool,
}

/// Result of applying a signed revocation list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationListResult {
    /// Key id of the signer.
    pub signer: String,
    pub serial: u64,
    /// Ids newly revoked.
    pub revoked: usize,
    /// Ids that were revoked already.
    pub already_revoked: usize,
    /// Accepted artifacts the list removed.
    pub removed: usize,
    /// Ids a delegate's list named that the agent cannot place under the
    /// delegate's link; not applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_of_scope: Vec<String>,
    /// This very list was the last applied from its signer; nothing changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_applied: bool,
}

/// Result of `revoke --all`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeAllResult {
    /// Artifacts revoked.
    pub revoked: usize,
    /// Kernel permit entries flushed.
    pub flushed: usize,
}

/// Result of `mode`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeResult {
    pub mode: Mode,
    pub previous: Mode,
}

/// Result of `lockdown unlock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockResult {
    /// The kernel's lockdown state afterwards (false).
    pub lockdown: bool,
    pub statement_id: String,
    /// Key id of the trust root that signed it.
    pub issuer: String,
}

/// Result of `lockdown adopt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptResult {
    /// How many files of agent code the statement authorized.
    pub files: usize,
    pub statement_id: String,
    pub digests: Vec<String>,
}

/// What the kernel is and does, in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub release: String,
    pub active_lsms: Vec<String>,
    pub ima: crate::enforcer::preflight::ImaPolicy,
}

/// Result of `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    pub mode: Mode,
    /// Files mapped executable: `off`, `audit` or `enforce`.
    pub libraries: Mode,
    /// Executable memory no file backs: `allow`, `audit` or `deny`.
    pub exec_memory: String,
    /// `host` or `subtrees`.
    pub scope: String,
    /// The enforced subtrees (empty: the whole host).
    pub enforced_cgroups: Vec<String>,
    /// Accepted artifacts by state.
    pub permits: std::collections::BTreeMap<PermitState, usize>,
    /// Rows in the kernel's permit maps (read from the kernel).
    pub kernel_permit_entries: usize,
    /// Whether the kernel is in lockdown.
    pub lockdown: bool,
    /// Entries in the revocation list.
    pub revoked: usize,
    /// The kernel's decision counters, summed over CPUs (absent when they
    /// could not be read).
    pub counters: Option<std::collections::BTreeMap<String, u64>>,
    pub events_dropped: Option<u64>,
    pub events_received: u64,
    pub kernel: KernelInfo,
    pub bpf_lsm: String,
    pub pinned_state_adopted: bool,
    pub policy_version: u32,
    pub policy_digest: String,
    pub audit_log: std::path::PathBuf,
    pub audit_key_id: String,
    pub uptime_seconds: u64,
}

/// One row of `report`: execs of one binary in one cgroup refused (or, in
/// audit mode, that would have been) for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    /// SHA-256 of the binary, when the kernel could compute it.
    pub digest: Option<String>,
    pub path: String,
    pub comm: String,
    pub uid: u32,
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    pub reason: String,
    pub decision: String,
    pub count: u64,
    /// Boot-clock times of the first and last refusal (0 in a report read
    /// from the decision log, which has wall-clock times only).
    pub first_boot_ns: u64,
    pub last_boot_ns: u64,
    /// Wall-clock times of the first and last refusal (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
}

/// Result of `report`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportResult {
    /// Most frequent first.
    pub rows: Vec<ReportRow>,
    /// Refusals not shown (beyond the row limit).
    pub not_shown: u64,
    /// With `since`: the time the report starts, and the decision-log
    /// records it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_read: Option<u64>,
}

/// The text format of `metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MetricsFormat {
    /// OpenMetrics 1.0 (`application/openmetrics-text; version=1.0.0`),
    /// ending with `# EOF`.
    #[default]
    Openmetrics,
    /// The Prometheus text format 0.0.4, as node_exporter's textfile
    /// collector reads it.
    Prometheus,
}

/// Result of `metrics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsResult {
    pub format: MetricsFormat,
    /// The exposition.
    pub text: String,
}

/// A permit, as `why` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyPermit {
    pub id: String,
    pub state: PermitState,
    pub cgroup: String,
    pub descendants: bool,
    /// The effective window (RFC 3339).
    pub not_before: String,
    pub expires: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Result of `why`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyResult {
    /// The file, as resolved by the agent.
    pub path: String,
    /// SHA-256 of its content (hex), as the kernel would compute it; absent
    /// when the agent could not read it.
    pub digest: Option<String>,
    /// The cgroup the question is about, and its id when it exists.
    pub cgroup: String,
    pub cgroup_id: Option<u64>,
    /// The mode the kernel is in.
    pub mode: Mode,
    /// Whether the cgroup is inside the enforced subtrees.
    pub in_scope: bool,
    /// What the kernel would decide: `allow`, `deny`, or `audit-deny` (would
    /// be refused; audit mode lets it run).
    pub decision: String,
    /// Why, as the decision log names it: `permit`, `permit-inherited`,
    /// `out-of-scope`, `mode-off`, `untrusted-filesystem`, `mutable-content`,
    /// `digest-failed`, `no-permit`, `not-yet-valid`, `expired`,
    /// `wrong-cgroup`, `revoked`.
    pub reason: String,
    /// The same, in one sentence.
    pub explanation: String,
    /// The permit that allows it (or the one that no longer or not yet does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit: Option<WhyPermit>,
    /// Permits for this binary in other cgroups (`wrong-cgroup`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elsewhere: Vec<WhyPermit>,
    /// The file's filesystem type, as authz names it (or its magic number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
}

/// What the agent answers, by request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Submit(SubmitResult),
    List(ListResult),
    Revoke(RevokeResult),
    RevokeAll(RevokeAllResult),
    RevocationList(RevocationListResult),
    Status(Box<StatusResult>),
    SetMode(ModeResult),
    Report(ReportResult),
    Unlock(UnlockResult),
    Adopt(AdoptResult),
    Metrics(MetricsResult),
    Why(Box<WhyResult>),
}

/// A response line. `result` holds the request's result type (see
/// [`Reply`]), `error` an [`ErrorBody`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(result: &impl Serialize) -> Self {
        match serde_json::to_value(result) {
            Ok(v) => Self {
                v: VERSION,
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Self::err(RefusalKind::Internal, format!("unserializable result: {e}")),
        }
    }

    pub fn err(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            ok: false,
            result: None,
            error: Some(ErrorBody::new(kind, message)),
        }
    }

    /// One line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"v":1,"ok":false,"error":{"kind":"internal","message":"unserializable response"}}"#.into()
        });
        s.push('\n');
        s
    }
}

/// A request line that could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("request is not a JSON object: {0}")]
    NotJson(String),
    #[error("request has no protocol version `v`")]
    NoVersion,
    #[error("protocol version {0} is not supported (this agent speaks {VERSION})")]
    Version(u64),
    #[error("unknown or malformed operation: {0}")]
    Operation(String),
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("request line not complete {}s after its first byte", .0.as_secs())]
    TooSlow(std::time::Duration),
}

impl ProtocolError {
    pub fn kind(&self) -> RefusalKind {
        match self {
            ProtocolError::NotJson(_) | ProtocolError::NoVersion | ProtocolError::Operation(_) => {
                RefusalKind::MalformedRequest
            }
            ProtocolError::Version(_) => RefusalKind::UnsupportedVersion,
            ProtocolError::TooLarge => RefusalKind::TooLarge,
            ProtocolError::TooSlow(_) => RefusalKind::TooSlow,
        }
    }
}

/// Parses one request line.
pub fn parse_request(line: &[u8]) -> Result<Request, ProtocolError> {
    if line.len() > MAX_REQUEST {
        return Err(ProtocolError::TooLarge);
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| ProtocolError::NotJson("not an object".into()))?;
    let v = object.remove("v").ok_or(ProtocolError::NoVersion)?;
    match v.as_u64() {
        Some(n) if n == u64::from(VERSION) => {}
        Some(n) => return Err(ProtocolError::Version(n)),
        None => return Err(ProtocolError::NoVersion),
    }
    serde_json::from_value(value).map_err(|e| ProtocolError::Operation(e.to_string()))
}

/// Serializes a request as one line.
pub fn request_line(request: &Request) -> String {
    let mut value = serde_json::to_value(request).expect("requests serialize");
    if let Some(o) = value.as_object_mut() {
        o.insert("v".into(), VERSION.into());
    }
    let mut s = value.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Submit {
                artifact: "x = 1\n\"quoted\"".into(),
            },
            Request::List {},
            Request::Revoke {
                id: "ab".into(),
                reason: Some("leak".into()),
            },
            Request::RevokeAll { reason: None },
            Request::Status {},
            Request::SetMode {
                mode: Mode::Enforce,
            },
            Request::Report { since: None },
            Request::Report {
                since: Some("2026-01-01T00:00:00Z".into()),
            },
            Request::Metrics {
                format: MetricsFormat::Prometheus,
            },
            Request::Why {
                path: "/usr/bin/make".into(),
                cgroup: Some("/jobs".into()),
                pid: None,
            },
        ] {
            let line = request_line(&r);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert!(line.contains(&format!(r#""op":"{}""#, r.op())), "{line}");
            assert_eq!(parse_request(line.trim_end().as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_gets_typed_errors() {
        assert_eq!(
            parse_request(b"\xff\x00garbage")
                .unwrap_err()
                .kind()
                .as_str(),
            "malformed-request"
        );
        assert_eq!(
            parse_request(b"[1,2]").unwrap_err().kind().as_str(),
            "malformed-request"
        );
        assert_eq!(
            parse_request(br#"{"op":"list"}"#).unwrap_err(),
            ProtocolError::NoVersion
        );
        assert_eq!(
            parse_request(br#"{"v":2,"op":"list"}"#).unwrap_err(),
            ProtocolError::Version(2)
        );
        assert_eq!(
            parse_request(br#"{"v":1,"op":"format-disk"}"#)
                .unwrap_err()
                .kind()
                .as_str(),
            "malformed-request"
        );
        assert_eq!(
            parse_request(br#"{"v":1,"op":"list","extra":true}"#)
                .unwrap_err()
                .kind()
                .as_str(),
            "malformed-request"
        );
        assert_eq!(
            parse_request(br#"{"v":1,"op":"set-mode","mode":"lax"}"#)
                .unwrap_err()
                .kind()
                .as_str(),
            "malformed-request"
        );
        let huge = vec![b'a'; MAX_REQUEST + 1];
        assert_eq!(parse_request(&huge).unwrap_err(), ProtocolError::TooLarge);
    }

    #[test]
    fn responses_are_single_lines() {
        let r = Response::err(RefusalKind::BadSignature, "line one\nline two");
        let line = r.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains(r#""kind":"bad-signature""#), "{line}");
        let back: Response = serde_json::from_str(&line).unwrap();
        assert!(!back.ok);
        assert_eq!(back.error.unwrap().kind.as_str(), "bad-signature");
    }

    #[test]
    fn refusal_kinds_are_their_wire_names_and_unknown_ones_are_tolerated() {
        let kinds = [
            RefusalKind::MalformedRequest,
            RefusalKind::Forbidden,
            RefusalKind::PolicyVersionMismatch,
            RefusalKind::Revoked,
            RefusalKind::Unknown,
        ];
        for k in kinds {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
        let newer: ErrorBody =
            serde_json::from_str(r#"{"kind":"something-new","message":"m"}"#).unwrap();
        assert_eq!(newer.kind, RefusalKind::Unknown);
    }

    #[test]
    fn typed_results_are_the_wire_format() {
        let r = Response::ok(&Reply::RevokeAll(RevokeAllResult {
            revoked: 3,
            flushed: 2,
        }));
        let line = r.to_line();
        assert!(
            line.contains(r#""revoked":3"#) && line.contains(r#""flushed":2"#),
            "{line}"
        );
        let back: Response = serde_json::from_str(&line).unwrap();
        let typed: RevokeAllResult = serde_json::from_value(back.result.unwrap()).unwrap();
        assert_eq!(typed.flushed, 2);
    }
}
