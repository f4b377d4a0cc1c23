//! One line of the decision log.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A record: the chain fields, then what happened (`kind` and its fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub prev: String,
    /// UTC, RFC 3339 with nanoseconds.
    pub time: String,
    pub host: String,
    /// `exec` (a kernel decision), `admin` (an operator or daemon action) or
    /// `checkpoint` (a signed chain head).
    pub kind: String,
    #[serde(flatten)]
    pub body: Map<String, Value>,
}

/// SHA-256 (hex) of a record's line as written, without its newline.
pub fn hash_line(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// RFC 3339 UTC with nanoseconds for a wall-clock instant.
pub fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let ts = crate::vocab::time::Timestamp::from_unix(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
    // "YYYY-MM-DDTHH:MM:SSZ" -> "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"
    format!("{}.{:09}Z", ts.trim_end_matches('Z'), d.subsec_nanos())
}
