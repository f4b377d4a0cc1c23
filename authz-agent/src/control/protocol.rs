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
    /// Revoke every accepted artifact and flush the kernel's permit map.
    RevokeAll {
        #[serde(default)]
        reason: Option<String>,
    },
    /// Mode, scope, permit counts, kernel counters, kernel state.
    Status {},
    /// Change the enforcement mode (persists across restarts).
    SetMode { mode: Mode },
    /// Execs that were, or in audit mode would have been, refused.
    Report {},
}

/// Why a request failed, as a stable machine-readable kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: String,
    pub message: String,
}

/// A response line.
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
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            v: VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(kind: &str, message: impl Into<String>) -> Self {
        Self {
            v: VERSION,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                kind: kind.to_owned(),
                message: message.into(),
            }),
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
    pub fn kind(&self) -> &'static str {
        match self {
            ProtocolError::NotJson(_) | ProtocolError::NoVersion | ProtocolError::Operation(_) => {
                "malformed-request"
            }
            ProtocolError::Version(_) => "unsupported-version",
            ProtocolError::TooLarge => "too-large",
            ProtocolError::TooSlow(_) => "too-slow",
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
            Request::Report {},
        ] {
            let line = request_line(&r);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(parse_request(line.trim_end().as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_gets_typed_errors() {
        assert_eq!(
            parse_request(b"\xff\x00garbage").unwrap_err().kind(),
            "malformed-request"
        );
        assert_eq!(
            parse_request(b"[1,2]").unwrap_err().kind(),
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
                .kind(),
            "malformed-request"
        );
        assert_eq!(
            parse_request(br#"{"v":1,"op":"list","extra":true}"#)
                .unwrap_err()
                .kind(),
            "malformed-request"
        );
        assert_eq!(
            parse_request(br#"{"v":1,"op":"set-mode","mode":"lax"}"#)
                .unwrap_err()
                .kind(),
            "malformed-request"
        );
        let huge = vec![b'a'; MAX_REQUEST + 1];
        assert_eq!(parse_request(&huge).unwrap_err(), ProtocolError::TooLarge);
    }

    #[test]
    fn responses_are_single_lines() {
        let r = Response::err("bad-signature", "line one\nline two");
        let line = r.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        let back: Response = serde_json::from_str(&line).unwrap();
        assert!(!back.ok);
        assert_eq!(back.error.unwrap().kind, "bad-signature");
    }
}
