//! The control socket: accepts connections, authorizes peers by their kernel
//! credentials, frames requests and hands them to the agent.
use std::{
    os::fd::{AsRawFd as _, RawFd},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixListener, UnixStream,
    },
    sync::{mpsc, oneshot},
};

use super::{
    access::Access,
    admission::{self, Admission, Deadlines, Limits, Slot, DEADLINES, LIMITS},
    protocol::{parse_request, ProtocolError, RefusalKind, Request, Response, MAX_REQUEST},
};

/// Who is asking, as the kernel reports it (SO_PEERCRED / SO_PEERGROUPS).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// A request waiting for the agent's answer.
#[derive(Debug)]
pub struct Call {
    pub request: Request,
    pub peer: Peer,
    pub reply: oneshot::Sender<Response>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the socket directory {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("another agent is already listening on {0}")]
    InUse(PathBuf),
    #[error("cannot listen on {0}")]
    Bind(PathBuf, #[source] std::io::Error),
}

/// Binds the socket (mode 0660, group-owned when a group is configured),
/// replacing a stale socket file but never a live agent's.
pub async fn bind(path: &Path, access: &Access) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ServerError::Dir(dir.to_owned(), e))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| ServerError::Bind(path.to_owned(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| ServerError::Bind(path.to_owned(), e))?;
    if let Some(gid) = access.socket_gid() {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| ServerError::Bind(path.to_owned(), e.into()))?;
    }
    Ok(listener)
}

/// Accepts connections until the listener fails; each admitted one is served
/// on its own task (see [`admission`] for the limits and deadlines).
pub async fn serve(listener: UnixListener, access: Access, agent: mpsc::Sender<Call>) {
    serve_with(listener, access, agent, LIMITS, DEADLINES).await
}

async fn serve_with(
    listener: UnixListener,
    access: Access,
    agent: mpsc::Sender<Call>,
    limits: Limits,
    deadlines: Deadlines,
) {
    let table = Arc::new(Mutex::new(Admission::new(limits)));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the control socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match peer_of(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the peer's credentials; refusing");
                continue;
            }
        };
        // Refusals are decided here, answered without waiting and closed, so
        // that they never hold a place.
        if access.role_of(&peer).is_none() {
            tracing::warn!(uid = peer.uid, gid = peer.gid, "control connection refused");
            let denied = access.stranger(&peer);
            refuse(&stream, denied.kind, denied.message);
            continue;
        }
        let slot = match admission::admit(&table, peer.uid) {
            Ok(slot) => slot,
            Err(busy) => {
                tracing::debug!(uid = peer.uid, reason = %busy, "control connection not admitted");
                refuse(&stream, RefusalKind::Busy, busy.to_string());
                continue;
            }
        };
        tokio::spawn(connection(stream, peer, slot, agent.clone(), deadlines));
    }
}

/// Writes a refusal only if the socket takes it at once (a fresh socket's
/// buffer holds one line); never waits for the client. tokio marks accepted
/// sockets writable before the reactor's first event, so `try_write` does
/// write here (a unit test checks that every refusal arrives).
fn refuse(stream: &UnixStream, kind: RefusalKind, message: String) {
    let _ = stream.try_write(Response::err(kind, message).to_line().as_bytes());
}

#[tracing::instrument(name = "control", skip_all, fields(uid = peer.uid, pid = peer.pid))]
async fn connection(
    stream: UnixStream,
    peer: Peer,
    _slot: Slot,
    agent: mpsc::Sender<Call>,
    deadlines: Deadlines,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let complete = match read_request(&mut reader, &mut line, &deadlines).await {
            Ok(Some(complete)) => complete,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(error = %e, "control request not read");
                let r = Response::err(e.kind(), e.to_string());
                send(&mut write, &r, &deadlines).await;
                return;
            }
        };
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let response = match parse_request(body) {
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                let call = Call {
                    request,
                    peer: peer.clone(),
                    reply: tx,
                };
                if agent.send(call).await.is_err() {
                    Response::err(RefusalKind::ShuttingDown, "the agent is stopping")
                } else {
                    rx.await.unwrap_or_else(|_| {
                        Response::err(RefusalKind::Internal, "the agent dropped the request")
                    })
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "malformed control request");
                let r = Response::err(e.kind(), e.to_string());
                send(&mut write, &r, &deadlines).await;
                return;
            }
        };
        if !send(&mut write, &response, &deadlines).await || !complete {
            return;
        }
    }
}

/// Reads one request line into `line`: `Some(true)` when it ended with a
/// newline, `Some(false)` when the client closed after it, `None` when the
/// client closed (or stayed idle past the deadline) before sending anything.
async fn read_request(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
    deadlines: &Deadlines,
) -> Result<Option<bool>, ProtocolError> {
    match tokio::time::timeout(deadlines.idle, reader.fill_buf()).await {
        Ok(Ok(buf)) if !buf.is_empty() => {}
        _ => return Ok(None),
    }
    let read = tokio::time::timeout(
        deadlines.request,
        reader.take(MAX_REQUEST as u64 + 1).read_until(b'\n', line),
    )
    .await;
    match read {
        Err(_) => Err(ProtocolError::TooSlow(deadlines.request)),
        Ok(Err(_)) => Ok(None),
        Ok(Ok(_)) => {
            let complete = line.last() == Some(&b'\n');
            if !complete && line.len() > MAX_REQUEST {
                Err(ProtocolError::TooLarge)
            } else {
                Ok(Some(complete))
            }
        }
    }
}

/// Writes `response` unless the client does not take it in time; false when
/// the connection is done for.
async fn send(write: &mut OwnedWriteHalf, response: &Response, deadlines: &Deadlines) -> bool {
    let bytes = response.to_line();
    match tokio::time::timeout(deadlines.response, write.write_all(bytes.as_bytes())).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!(
                deadline = ?deadlines.response,
                "the client did not read its response in time; disconnected"
            );
            false
        }
    }
}

fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
        groups: peer_groups(stream.as_raw_fd()).unwrap_or_default(),
    })
}

/// Supplementary groups of the peer at connect time (SO_PEERGROUPS).
fn peer_groups(fd: RawFd) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` has `len` writable bytes; the kernel writes at most
        // that many and reports the size used (or needed, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::control::{access::Group, protocol::request_line};

    const SHORT: Deadlines = Deadlines {
        idle: Duration::from_millis(300),
        request: Duration::from_millis(300),
        response: Duration::from_millis(300),
    };
    /// One place in all: whoever holds it locks everybody else out.
    const ONE_PLACE: Limits = Limits {
        total: 1,
        root_reserved: 0,
        per_uid: 1,
    };

    /// A socket served with `limits` and [`SHORT`] deadlines, whose agent
    /// answers every request with `answer`; the caller's group may use it.
    fn server(name: &str, limits: Limits, answer: Response) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("authz-server-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let access = Access {
            submit: Some(Group {
                name: "test".into(),
                gid: nix::unistd::getegid().as_raw(),
            }),
            admin: None,
        };
        let (tx, mut rx) = mpsc::channel::<Call>(16);
        tokio::spawn(async move {
            while let Some(call) = rx.recv().await {
                let _ = call.reply.send(answer.clone());
            }
        });
        tokio::spawn(serve_with(listener, access, tx, limits, SHORT));
        path
    }

    /// One `status` exchange; the response (busy or not).
    async fn ask(path: &Path) -> Response {
        let stream = UnixStream::connect(path).await.unwrap();
        let (read, mut write) = stream.into_split();
        let _ = write
            .write_all(request_line(&Request::Status {}).as_bytes())
            .await;
        let mut line = Vec::new();
        BufReader::new(read)
            .read_until(b'\n', &mut line)
            .await
            .unwrap();
        serde_json::from_slice(&line).unwrap()
    }

    /// How long until a second client is served (it retries while busy).
    async fn served_after(path: &Path) -> Duration {
        let start = Instant::now();
        loop {
            let r = ask(path).await;
            if r.ok {
                return start.elapsed();
            }
            assert_eq!(r.error.unwrap().kind.as_str(), "busy");
            assert!(start.elapsed() < Duration::from_secs(5), "never served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn cleanup(path: &Path) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[tokio::test]
    async fn every_connection_over_the_limit_is_told_it_is_busy() {
        let path = server("busy", ONE_PLACE, Response::ok(&serde_json::json!({})));
        let _holder = UnixStream::connect(&path).await.unwrap();
        for _ in 0..200 {
            let r = ask(&path).await;
            assert_eq!(r.error.map(|e| e.kind.as_str()), Some("busy"));
        }
        cleanup(&path);
    }

    #[tokio::test]
    async fn an_idle_client_gives_its_place_up_at_the_idle_deadline() {
        let path = server("idle", ONE_PLACE, Response::ok(&serde_json::json!({})));
        let idle = UnixStream::connect(&path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waited = served_after(&path).await;
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        drop(idle);
        cleanup(&path);
    }

    #[tokio::test]
    async fn a_byte_at_a_time_client_is_cut_off_at_the_request_deadline() {
        let path = server("slow", ONE_PLACE, Response::ok(&serde_json::json!({})));
        let slow = UnixStream::connect(&path).await.unwrap();
        let (read, mut write) = slow.into_split();
        // One byte every 50 ms: never idle, never finished.
        let dripping = tokio::spawn(async move {
            while write.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waited = served_after(&path).await;
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        let mut line = Vec::new();
        BufReader::new(read)
            .read_until(b'\n', &mut line)
            .await
            .unwrap();
        let told: Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(told.error.unwrap().kind.as_str(), "too-slow");
        dripping.abort();
        cleanup(&path);
    }

    #[tokio::test]
    async fn a_client_that_never_reads_is_dropped_at_the_response_deadline() {
        // Far more than a socket buffer holds, so the write must wait.
        let huge = Response::ok(&serde_json::json!("x".repeat(8 << 20)));
        let path = server("noread", ONE_PLACE, huge);
        let mut deaf = UnixStream::connect(&path).await.unwrap();
        deaf.write_all(request_line(&Request::Status {}).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waited = served_after(&path).await;
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        drop(deaf);
        cleanup(&path);
    }
}
