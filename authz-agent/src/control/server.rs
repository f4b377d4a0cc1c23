//! The control socket: accepts connections, authorizes peers by their kernel
//! credentials, frames requests and hands them to the agent.
use std::{
    os::fd::{AsRawFd as _, RawFd},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
};

use super::{
    access::Access,
    protocol::{parse_request, ProtocolError, Request, Response, MAX_REQUEST},
};

/// At most this many clients at once; more are told to retry.
const MAX_CONNECTIONS: usize = 64;
/// A client that sends nothing for this long is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Accepts connections until the listener fails; each is served on its own task.
pub async fn serve(listener: UnixListener, access: Access, agent: mpsc::Sender<Call>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let access = Arc::new(access);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the control socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let agent = agent.clone();
        let access = access.clone();
        let slot = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            match slot {
                Ok(_permit) => connection(stream, &access, agent).await,
                Err(_) => {
                    let mut stream = stream;
                    let busy = Response::err(
                        "busy",
                        format!("more than {MAX_CONNECTIONS} clients; retry"),
                    );
                    let _ = stream.write_all(busy.to_line().as_bytes()).await;
                }
            }
        });
    }
}

#[tracing::instrument(name = "control", skip_all, fields(uid, pid))]
async fn connection(stream: UnixStream, access: &Access, agent: mpsc::Sender<Call>) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the peer's credentials; refusing");
            return;
        }
    };
    tracing::Span::current().record("uid", peer.uid);
    if let Some(pid) = peer.pid {
        tracing::Span::current().record("pid", pid);
    }
    let (read, mut write) = stream.into_split();
    if access.role_of(&peer).is_none() {
        tracing::warn!(uid = peer.uid, gid = peer.gid, "control connection refused");
        let denied = access.stranger(&peer);
        let refused = Response::err(denied.kind, denied.message);
        let _ = write.write_all(refused.to_line().as_bytes()).await;
        return;
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader)
                .take(MAX_REQUEST as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await;
        let n = match read {
            Err(_) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return;
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > MAX_REQUEST {
            let r = Response::err(
                ProtocolError::TooLarge.kind(),
                ProtocolError::TooLarge.to_string(),
            );
            let _ = write.write_all(r.to_line().as_bytes()).await;
            return;
        }
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
                    Response::err("shutting-down", "the agent is stopping")
                } else {
                    rx.await.unwrap_or_else(|_| {
                        Response::err("internal", "the agent dropped the request")
                    })
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "malformed control request");
                let r = Response::err(e.kind(), e.to_string());
                let _ = write.write_all(r.to_line().as_bytes()).await;
                return;
            }
        };
        if write
            .write_all(response.to_line().as_bytes())
            .await
            .is_err()
        {
            return;
        }
        if !complete {
            return;
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
