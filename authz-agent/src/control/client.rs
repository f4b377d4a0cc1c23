//! The CLI side of the control socket.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{request_line, Request, Response, MAX_RESPONSE};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {path} (is `authz-agent run` running? see `systemctl status authz-agent`)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the connection to the agent")]
    Io(#[source] std::io::Error),
    #[error("the agent's answer is not valid protocol: {0}")]
    BadResponse(String),
    #[error("{message} [{kind}]")]
    Refused {
        kind: super::protocol::RefusalKind,
        message: String,
    },
}

impl ClientError {
    /// The machine-readable kind, for refusals.
    pub fn kind(&self) -> Option<super::protocol::RefusalKind> {
        match self {
            ClientError::Refused { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Sends one request and returns the agent's result.
pub fn call(socket: &Path, request: &Request) -> Result<serde_json::Value, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(ClientError::Io)?;
    // The agent may answer and hang up before reading the request (it refuses
    // unauthorized peers at once): a failed write is reported only if no
    // answer is waiting to be read.
    let written = stream.write_all(request_line(request).as_bytes());
    let mut reader = BufReader::new(stream).take(MAX_RESPONSE as u64);
    let mut line = Vec::new();
    let read = reader.read_until(b'\n', &mut line);
    if line.is_empty() {
        return Err(match (written, read) {
            (Err(e), _) | (Ok(()), Err(e)) => ClientError::Io(e),
            (Ok(()), Ok(_)) => {
                ClientError::BadResponse("the agent closed the connection without answering".into())
            }
        });
    }
    let response: Response =
        serde_json::from_slice(&line).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    match (response.ok, response.result, response.error) {
        (true, Some(result), _) => Ok(result),
        (false, _, Some(e)) => Err(ClientError::Refused {
            kind: e.kind,
            message: e.message,
        }),
        _ => Err(ClientError::BadResponse(
            "neither a result nor an error".into(),
        )),
    }
}

/// Sends one request and returns its result as the request's result type
/// (see [`super::protocol::Reply`]).
pub fn call_as<T: serde::de::DeserializeOwned>(
    socket: &Path,
    request: &Request,
) -> Result<T, ClientError> {
    let value = call(socket, request)?;
    serde_json::from_value(value).map_err(|e| ClientError::BadResponse(e.to_string()))
}
