//! The inbox directory (`[agent] inbox_dir`): every artifact and revocation
//! list that appears there is taken in exactly as `submit` would take it.
//!
//! Artifacts are signed, so the channel that fills the directory needs no
//! trust: config management, a Kubernetes ConfigMap or Secret volume, rsync.
//! What the inbox has to get right is how those channels write:
//!
//! - **rename into place** (Ansible, Salt, rsync, `install`): the name appears
//!   whole (`IN_MOVED_TO`); temporary files are hidden (`.name.XXXX`) and
//!   never read;
//! - **the `..data` symlink swap** of ConfigMap/Secret volumes: the visible
//!   names are links into a hidden, timestamped directory that `..data`
//!   points at; a swap renames a new `..data` into place, and the inbox reads
//!   the whole directory again;
//! - **slow writers** (`cp`, `cat >`): a file is read only once nobody holds
//!   it open for writing (a read lease, `F_SETLEASE`, is refused while a
//!   writer has it open); `IN_CLOSE_WRITE` or a retry reads it then;
//! - **thousands at once**: names are queued and taken in [`BATCH`] per turn
//!   of the daemon's loop, revocation lists of a turn before its artifacts;
//!   an inotify queue overflow reads the whole directory again;
//! - **the same file twice**: bytes already read under a name are not read
//!   again; the same artifact under another name is `already-held`;
//! - **garbage**: refused with its reason, once per content, in the decision
//!   log; nothing else changes.
//!
//! A file that leaves the inbox revokes nothing: revocation is explicit
//! (`revoke`, or a signed revocation list).
//!
//! What became of each file is kept in `inbox.json` in the state directory,
//! so a restart reads the inbox again without recording any outcome twice;
//! `list` shows it.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Read as _,
    os::{
        fd::{AsFd as _, AsRawFd, RawFd},
        unix::fs::PermissionsExt as _,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use sha2::{Digest as _, Sha256};
use tokio::io::unix::AsyncFd;

use super::{Agent, Refusal};
use crate::{
    artifact::time::Timestamp,
    control::protocol::{InboxFile, InboxOutcome, InboxStatus, RefusalKind, SubmitResult},
    store::MAX_ARTIFACT_BYTES,
    vocab::text::{self, Kind},
};

/// Files taken in per turn of the daemon's loop: the control socket and the
/// event ring are served between turns.
pub const BATCH: usize = 256;
/// How soon a file still open for writing is looked at again (its
/// `IN_CLOSE_WRITE` usually comes first).
const RETRY: Duration = Duration::from_millis(250);
/// How often a missing (or removed) inbox directory is looked for.
const ABSENT_POLL: Duration = Duration::from_secs(2);
/// The ledger is written at most this often while files keep coming (it
/// grows with the inbox: thousands of files must not mean thousands of
/// rewrites), and at stop.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// What became of each file, in the state directory.
const LEDGER_FILE: &str = "inbox.json";
/// The name a ConfigMap/Secret volume swaps to publish a new version.
const CONFIGMAP_DATA: &str = "..data";

/// Why the inbox cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("cannot start watching the inbox")]
    Init(#[source] nix::Error),
    #[error("cannot wait for the inbox's events")]
    Register(#[source] std::io::Error),
}

/// What became of one file (before it is recorded).
struct Outcome {
    outcome: InboxOutcome,
    sha256: Option<String>,
    id: Option<String>,
    error: Option<RefusalKind>,
    message: Option<String>,
}

impl Outcome {
    fn new(outcome: InboxOutcome, sha256: Option<String>) -> Self {
        Self {
            outcome,
            sha256,
            id: None,
            error: None,
            message: None,
        }
    }

    fn refused(sha256: Option<String>, kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            error: Some(kind),
            message: Some(message.into()),
            ..Self::new(InboxOutcome::Refused, sha256)
        }
    }

    fn ignored(sha256: Option<String>, message: &str) -> Self {
        Self {
            message: Some(message.to_owned()),
            ..Self::new(InboxOutcome::Ignored, sha256)
        }
    }
}

/// What reading one file gave.
enum Read {
    Text {
        text: String,
        sha256: String,
    },
    /// Nothing to read any more.
    Gone,
    /// Someone still has it open for writing.
    Busy,
    Done(Outcome),
}

/// What became of every file in the inbox: the agent's copy (for `list`),
/// persisted in the state directory.
#[derive(Debug, Default)]
pub struct Ledger {
    dir: PathBuf,
    files: BTreeMap<String, InboxFile>,
}

impl Ledger {
    /// `list`'s view.
    pub fn status(&self) -> InboxStatus {
        InboxStatus {
            dir: self.dir.display().to_string(),
            files: self.files.values().cloned().collect(),
        }
    }

    /// Files by outcome (`authz_inbox_files`).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for f in self.files.values() {
            *counts.entry(f.outcome.as_str()).or_default() += 1;
        }
        counts
    }

    fn load(path: &Path, dir: &Path) -> Self {
        let stored = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<InboxStatus>(&b).ok())
            .filter(|s| Path::new(&s.dir) == dir);
        Self {
            dir: dir.to_owned(),
            files: stored
                .map(|s| s.files.into_iter().map(|f| (f.name.clone(), f)).collect())
                .unwrap_or_default(),
        }
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.status()).map_err(std::io::Error::other)?;
        crate::store::write_atomic(path, &bytes, 0o600)
    }
}

/// The inotify fd, for tokio.
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// The watcher and its queue; owned by the daemon's loop (the agent holds
/// the [`Ledger`]).
pub struct Inbox {
    dir: PathBuf,
    watch: Option<AsyncFd<Watch>>,
    ledger_path: PathBuf,
    queue: BTreeSet<String>,
    retry: BTreeMap<String, Instant>,
    /// The content last taken in under each name, this run.
    seen: BTreeMap<String, String>,
    /// Outcomes recorded before this run (from the persisted ledger): the
    /// same outcome for the same bytes is not recorded again.
    before: BTreeMap<String, InboxFile>,
    dirty: bool,
    saved: Instant,
    /// When a missing inbox directory is looked for next.
    look_again: Instant,
    /// The names the last full read of the directory found: what
    /// [`Self::turn`] keeps in the ledger (a file gone while the directory
    /// was away leaves no event).
    present: Option<BTreeSet<String>>,
    /// The agent's removals and revocations when [`Self::refresh`] last
    /// looked: nothing can have left since if they are unchanged.
    refreshed: Option<(u64, usize)>,
}

impl Inbox {
    /// Starts watching `dir` (or waiting for it to exist) and queues every
    /// file already there.
    #[tracing::instrument(name = "inbox", skip_all, fields(dir = %dir.display()))]
    pub fn open(dir: &Path, state_dir: &Path, agent: &mut Agent) -> Result<Self, InboxError> {
        // A read lease taken to see whether a writer still holds a file is
        // broken by a writer opening it, and the kernel then signals the
        // holder with SIGIO, whose default action ends the process.
        // SAFETY: setting a signal's disposition to SIG_IGN installs no
        // handler; nothing in the agent relies on SIGIO.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGIO,
                nix::sys::signal::SigHandler::SigIgn,
            )
        }
        .map_err(InboxError::Init)?;
        let ledger_path = state_dir.join(LEDGER_FILE);
        let ledger = Ledger::load(&ledger_path, dir);
        let before = ledger.files.clone();
        agent.inbox = Some(Ledger {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
        });
        let mut inbox = Self {
            dir: dir.to_owned(),
            watch: None,
            ledger_path,
            queue: BTreeSet::new(),
            retry: BTreeMap::new(),
            seen: BTreeMap::new(),
            before,
            dirty: true,
            saved: Instant::now(),
            look_again: Instant::now() + ABSENT_POLL,
            present: None,
            refreshed: None,
        };
        inbox.try_watch()?;
        if inbox.watch.is_none() {
            tracing::warn!(
                "the inbox directory does not exist (yet); it is taken in as soon as it does"
            );
        }
        Ok(inbox)
    }

    /// Watches the directory if it exists, then reads it whole.
    fn try_watch(&mut self) -> Result<(), InboxError> {
        let meta = match fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => m,
            _ => return Ok(()),
        };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(InboxError::Init)?;
        let flags = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        if let Err(e) = inotify.add_watch(&self.dir, flags) {
            tracing::warn!(error = %e, "cannot watch the inbox directory; looking again shortly");
            return Ok(());
        }
        // SAFETY: the AsyncFd owns the Watch, which owns the inotify fd: the
        // fd stays open for as long as it is registered.
        let watch = unsafe { AsyncFd::register(Watch(inotify)) }
            .map_err(|e| InboxError::Register(e.into()))?;
        if meta.permissions().mode() & 0o022 != 0 {
            tracing::warn!(
                mode = format!("{:o}", meta.permissions().mode() & 0o7777),
                "the inbox is writable by others than its owner: they cannot make anything \
                 unsigned run, but they can fill it (tighten it to 0755 or stricter)"
            );
        }
        self.watch = Some(watch);
        tracing::info!("watching the inbox");
        self.rescan("start");
        Ok(())
    }

    /// Queues every visible name in the directory; forgets names no longer
    /// there.
    fn rescan(&mut self, why: &str) {
        let names: BTreeSet<String> = match fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| visible(n))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the inbox directory");
                return;
            }
        };
        tracing::debug!(why, files = names.len(), "reading the whole inbox");
        self.seen.retain(|n, _| names.contains(n));
        self.retry.retain(|n, _| names.contains(n));
        self.queue.extend(names.iter().cloned());
        self.present = Some(names);
    }

    /// Waits until there is something to take in; call [`Self::turn`] then.
    /// Cancel-safe.
    pub async fn wait(&mut self) {
        loop {
            if !self.queue.is_empty() {
                return;
            }
            let now = Instant::now();
            if self.dirty && now >= self.saved + SAVE_EVERY {
                return;
            }
            let save_due = self.dirty.then_some(self.saved + SAVE_EVERY);
            let due = self.retry.values().copied().chain(save_due).min();
            let events = match &self.watch {
                Some(watch) => {
                    let sleep = due.map_or(Duration::from_secs(3600), |d| {
                        d.saturating_duration_since(now)
                    });
                    tokio::select! {
                        ready = watch.readable() => match ready {
                            Ok(mut guard) => match guard.get_inner().0.read_events() {
                                Ok(events) => Some(events),
                                Err(nix::Error::EAGAIN) => {
                                    guard.clear_ready();
                                    None
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot read the inbox's events; reading the whole directory");
                                    self.watch = None;
                                    self.look_again = Instant::now();
                                    None
                                }
                            },
                            Err(_) => None,
                        },
                        _ = tokio::time::sleep(sleep) => None,
                    }
                }
                None => {
                    // An absolute time: this future is dropped whenever the
                    // daemon's loop serves something else (every 100 ms), so
                    // a relative sleep would never end.
                    let at = due.map_or(self.look_again, |d| d.min(self.look_again));
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    if Instant::now() >= self.look_again {
                        self.look_again = Instant::now() + ABSENT_POLL;
                        if let Err(e) = self.try_watch() {
                            tracing::warn!(error = %crate::error_chain(&e), "cannot watch the inbox");
                        }
                    }
                    None
                }
            };
            if let Some(events) = events {
                self.note(events);
            }
            let now = Instant::now();
            let due: Vec<String> = self
                .retry
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for name in due {
                self.retry.remove(&name);
                self.queue.insert(name);
            }
        }
    }

    /// Queues what the kernel's events name.
    fn note(&mut self, events: Vec<InotifyEvent>) {
        let mut rescan = None;
        for ev in events {
            let m = ev.mask;
            if m.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                rescan = Some("the kernel's event queue overflowed");
                continue;
            }
            if m.intersects(
                AddWatchFlags::IN_IGNORED
                    | AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF,
            ) {
                tracing::warn!(
                    "the inbox directory was removed or moved; waiting for it to exist again"
                );
                self.watch = None;
                self.look_again = Instant::now();
                continue;
            }
            let Some(name) = ev.name.and_then(|n| n.into_string().ok()) else {
                continue;
            };
            if name == CONFIGMAP_DATA {
                rescan = Some("a new version was published (..data)");
                continue;
            }
            if !visible(&name) {
                continue;
            }
            if m.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
                self.queue.insert(name);
            } else if m.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO) {
                self.retry.remove(&name);
                self.queue.insert(name);
            } else if m.contains(AddWatchFlags::IN_CREATE) && !self.queue.contains(&name) {
                // The kernel reports a creation before the creating open()
                // counts as a writer: look a little later (a writer's
                // IN_CLOSE_WRITE, or a link's creation, is read then).
                self.retry
                    .entry(name)
                    .or_insert_with(|| Instant::now() + RETRY);
            }
        }
        if let Some(why) = rescan {
            self.rescan(why);
        }
    }

    /// Takes in up to [`BATCH`] queued files: revocation lists first, then
    /// the rest; records each new outcome.
    #[tracing::instrument(name = "inbox", skip_all, fields(dir = %self.dir.display()))]
    pub fn turn(&mut self, agent: &mut Agent, now: SystemTime) {
        if let (Some(present), Some(ledger)) = (self.present.take(), agent.inbox.as_mut()) {
            let before = ledger.files.len();
            ledger
                .files
                .retain(|n, _| present.contains(n) || self.queue.contains(n));
            if ledger.files.len() != before {
                tracing::info!(
                    files = before - ledger.files.len(),
                    "files left the inbox while it was away; nothing is revoked by that"
                );
                self.dirty = true;
            }
        }
        let mut names = Vec::new();
        while names.len() < BATCH {
            match self.queue.pop_first() {
                Some(n) => names.push(n),
                None => break,
            }
        }
        let dir = match fs::File::open(&self.dir) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the inbox directory; reading it again shortly");
                for name in names {
                    self.retry.insert(name, Instant::now() + ABSENT_POLL);
                }
                return;
            }
        };
        let mut texts = Vec::new();
        for name in names {
            match self.read(&dir, &name) {
                Read::Gone => self.gone(agent, &name),
                Read::Busy => {
                    self.retry.insert(name.clone(), Instant::now() + RETRY);
                    self.settle(agent, &name, Outcome::new(InboxOutcome::Waiting, None), now);
                }
                Read::Done(outcome) => self.settle(agent, &name, outcome, now),
                Read::Text { text, sha256 } => {
                    if self.seen.get(&name) == Some(&sha256) {
                        continue;
                    }
                    self.seen.insert(name.clone(), sha256.clone());
                    texts.push((name, text::kind_of(&text), text, sha256));
                }
            }
        }
        // A list and the permits it revokes delivered together: never let
        // the permits in first.
        texts.sort_by_key(|(_, kind, _, _)| *kind != Some(Kind::Revocations));
        let mut applied_list = false;
        let mut permits = Vec::new();
        for (name, kind, text, sha256) in texts {
            if matches!(kind, Some(Kind::Artifact) | None) {
                permits.push((name, text, sha256));
                continue;
            }
            let outcome = take_in(agent, kind, &text, sha256, now);
            applied_list |= outcome.outcome == InboxOutcome::Applied;
            self.settle(agent, &name, outcome, now);
        }
        // The permits after every list of the batch, their signatures
        // checked together on every core.
        let batch: Vec<&str> = permits.iter().map(|(_, text, _)| text.as_str()).collect();
        let results = agent.submit_many(&batch, now);
        for ((name, _, sha256), result) in permits.into_iter().zip(results) {
            self.settle(agent, &name, submitted(Some(sha256), result), now);
        }
        if applied_list {
            self.refresh(agent);
        }
        if self.queue.is_empty() && self.saved.elapsed() >= SAVE_EVERY {
            self.save(agent);
        }
    }

    /// After a reload: files refused may now be accepted (a new trust root,
    /// new host labels); read them again.
    pub fn retry_refused(&mut self, agent: &Agent) {
        if let Some(ledger) = &agent.inbox {
            for (name, f) in &ledger.files {
                if f.outcome == InboxOutcome::Refused {
                    self.seen.remove(name);
                    self.queue.insert(name.clone());
                }
            }
        }
    }

    /// Files whose artifact the agent no longer holds (revoked, or expired
    /// and swept) say so: `list` tells the truth, and a restart that reads
    /// them again finds the outcome it already has (nothing is recorded: the
    /// revocation or the expiry was).
    pub fn refresh(&mut self, agent: &mut Agent) {
        let mark = (agent.permits.removals(), agent.revocations.len());
        if self.refreshed == Some(mark) {
            return;
        }
        self.refreshed = Some(mark);
        let Some(ledger) = agent.inbox.as_ref() else {
            return;
        };
        let gone: Vec<(String, RefusalKind)> = ledger
            .files
            .values()
            .filter(|f| {
                matches!(
                    f.outcome,
                    InboxOutcome::Accepted | InboxOutcome::AlreadyHeld
                )
            })
            .filter_map(|f| {
                let id =
                    f.id.as_deref()?
                        .parse::<crate::artifact::ArtifactId>()
                        .ok()?;
                if agent.permits.contains(&id) {
                    None
                } else if agent.revocations.contains(&id) {
                    Some((f.name.clone(), RefusalKind::Revoked))
                } else {
                    Some((f.name.clone(), RefusalKind::Expired))
                }
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        if let Some(ledger) = agent.inbox.as_mut() {
            for (name, kind) in gone {
                if let Some(f) = ledger.files.get_mut(&name) {
                    f.outcome = InboxOutcome::Refused;
                    f.error = Some(kind);
                    f.message = Some(match kind {
                        RefusalKind::Revoked => "revoked after it was taken in".to_owned(),
                        _ => "expired after it was taken in".to_owned(),
                    });
                }
            }
        }
        self.dirty = true;
    }

    /// Persists the ledger, if it changed.
    pub fn save(&mut self, agent: &Agent) {
        if !self.dirty {
            return;
        }
        if let Some(ledger) = &agent.inbox {
            self.saved = Instant::now();
            match ledger.save(&self.ledger_path) {
                Ok(()) => self.dirty = false,
                Err(e) => {
                    tracing::warn!(error = %e, path = %self.ledger_path.display(), "cannot save what became of the inbox's files")
                }
            }
        }
    }

    /// A name that left the inbox: forgotten; what it granted stays.
    fn gone(&mut self, agent: &mut Agent, name: &str) {
        self.seen.remove(name);
        self.retry.remove(name);
        if let Some(f) = agent.inbox.as_mut().and_then(|l| l.files.remove(name)) {
            tracing::info!(
                file = name,
                outcome = f.outcome.as_str(),
                "left the inbox; nothing is revoked by that (revocation is explicit)"
            );
            self.dirty = true;
        }
    }

    /// Keeps `outcome` for `name` and records it, unless the same bytes had
    /// the same outcome before (this run or the last).
    fn settle(&mut self, agent: &mut Agent, name: &str, o: Outcome, now: SystemTime) {
        let Some(ledger) = agent.inbox.as_mut() else {
            return;
        };
        let previous = ledger.files.get(name).or_else(|| self.before.get(name));
        if let Some(p) = previous {
            if p.sha256 == o.sha256 && same(p.outcome, o.outcome) {
                // Already recorded for these bytes: say the reason as it is
                // now (a forged copy of a since-revoked permit is now refused
                // as revoked), record nothing.
                let mut p = p.clone();
                if o.outcome == InboxOutcome::Refused {
                    p.error = o.error;
                    p.message = o.message;
                }
                ledger.files.insert(name.to_owned(), p);
                self.before.remove(name);
                return;
            }
        }
        self.before.remove(name);
        let file = InboxFile {
            name: name.to_owned(),
            sha256: o.sha256,
            outcome: o.outcome,
            id: o.id,
            error: o.error,
            message: o.message,
            at: Timestamp::from_system_time(now).to_string(),
        };
        ledger.files.insert(name.to_owned(), file.clone());
        self.dirty = true;
        match file.outcome {
            InboxOutcome::Waiting => return,
            InboxOutcome::Refused => tracing::warn!(
                file = name,
                error = %file.error.map_or("-", RefusalKind::as_str),
                "inbox file refused: {}", file.message.as_deref().unwrap_or("-")
            ),
            o => tracing::info!(
                file = name,
                outcome = o.as_str(),
                id = file.id.as_deref().unwrap_or("-"),
                "inbox file taken in"
            ),
        }
        agent.admin("inbox", serde_json::json!(file));
    }

    /// Reads `name`, never following a link out of the inbox, never
    /// blocking on a FIFO, never reading a file still being written or more
    /// than an artifact's worth.
    fn read(&self, dir: &fs::File, name: &str) -> Read {
        let unreadable = |m: String| Read::Done(Outcome::refused(None, RefusalKind::Unreadable, m));
        let file = match open_beneath(dir, name) {
            Ok(f) => f,
            Err(e) => {
                return match e.raw_os_error() {
                    Some(libc::ENOENT) => Read::Gone,
                    Some(libc::EXDEV | libc::ELOOP) => unreadable(
                        "a link out of the inbox: the inbox reads only files inside it".into(),
                    ),
                    Some(libc::ENXIO) => {
                        unreadable("not a regular file (a FIFO, socket or device)".into())
                    }
                    Some(libc::EISDIR) => Read::Done(Outcome::ignored(
                        None,
                        "a directory: the inbox is not read recursively",
                    )),
                    _ => unreadable(format!("cannot open it: {e}")),
                };
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return unreadable(format!("cannot look at it: {e}")),
        };
        if meta.is_dir() {
            return Read::Done(Outcome::ignored(
                None,
                "a directory: the inbox is not read recursively",
            ));
        }
        if !meta.is_file() {
            return unreadable("not a regular file (a FIFO, socket or device)".into());
        }
        if meta.len() > MAX_ARTIFACT_BYTES {
            return Read::Done(Outcome::refused(
                None,
                RefusalKind::TooLarge,
                format!(
                    "{} bytes; an artifact is at most {MAX_ARTIFACT_BYTES} bytes",
                    meta.len()
                ),
            ));
        }
        if being_written(&file) {
            return Read::Busy;
        }
        if meta.len() == 0 {
            // Created, not written yet (`touch`, or a writer that opened it
            // and has not written): never an artifact. Its writer's
            // IN_CLOSE_WRITE brings it back.
            return Read::Done(Outcome {
                message: Some("empty: waiting for its writer".into()),
                ..Outcome::new(InboxOutcome::Waiting, None)
            });
        }
        let mut bytes = Vec::new();
        if let Err(e) = (&file).take(MAX_ARTIFACT_BYTES + 1).read_to_end(&mut bytes) {
            return unreadable(format!("cannot read it: {e}"));
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if bytes.len() as u64 > MAX_ARTIFACT_BYTES {
            return Read::Done(Outcome::refused(
                Some(sha256),
                RefusalKind::TooLarge,
                format!("over {MAX_ARTIFACT_BYTES} bytes; an artifact is at most {MAX_ARTIFACT_BYTES} bytes"),
            ));
        }
        match String::from_utf8(bytes) {
            Ok(text) => Read::Text { text, sha256 },
            Err(_) => Read::Done(Outcome::refused(
                Some(sha256),
                RefusalKind::Malformed,
                "not UTF-8 text: not an authz file",
            )),
        }
    }
}

/// Opens `name` in `dir` for reading, resolving every link within `dir`
/// (`openat2` with `RESOLVE_BENEATH`: a link, or a directory swapped for a
/// link, that leads out fails with `EXDEV`), without blocking on a FIFO and
/// without following /proc's magic links.
fn open_beneath(dir: &fs::File, name: &str) -> std::io::Result<fs::File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(dir, name, how).map_err(std::io::Error::from)?;
    Ok(fs::File::from(fd))
}

/// Does some process hold `file` open for writing? A read lease is refused
/// (`EAGAIN`) exactly then. Where leases are not supported (some network
/// and FUSE filesystems) nobody can tell: read it (a half-written file can
/// never verify; its `IN_CLOSE_WRITE` reads it again).
fn being_written(file: &fs::File) -> bool {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows; F_SETLEASE takes
    // an int argument and touches no memory.
    let r = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if r == 0 {
        // SAFETY: as above; gives the lease just taken back.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return false;
    }
    let e = std::io::Error::last_os_error();
    let busy = matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY));
    if !busy {
        tracing::debug!(error = %e, "cannot tell whether an inbox file is still being written");
    }
    busy
}

/// Takes in one file's text as `submit` would.
fn take_in(
    agent: &mut Agent,
    kind: Option<Kind>,
    text: &str,
    sha256: String,
    now: SystemTime,
) -> Outcome {
    let sha = Some(sha256);
    match kind {
        Some(Kind::Revocations) => match agent.apply_revocation_list(text, now) {
            Ok(r) => Outcome {
                id: Some(format!("{}#{}", r.signer, r.serial)),
                ..Outcome::new(
                    if r.already_applied {
                        InboxOutcome::AlreadyApplied
                    } else {
                        InboxOutcome::Applied
                    },
                    sha,
                )
            },
            Err(r) => Outcome::refused(sha, r.kind, r.message),
        },
        Some(Kind::Delegation) => Outcome::ignored(
            sha,
            "a delegation on its own: it travels inside each permit issued under it",
        ),
        Some(Kind::PublicKey) => Outcome::ignored(
            sha,
            "a public key: trust roots come from the config's [trust], not the inbox",
        ),
        Some(Kind::SecretKey) => Outcome::refused(
            sha,
            RefusalKind::Malformed,
            "a SECRET key: it does not belong on this host; remove it and consider the key exposed",
        ),
        Some(Kind::Statement) => Outcome::ignored(
            sha,
            "a lockdown statement: only `authz-agent lockdown unlock|adopt` applies one",
        ),
        Some(Kind::Artifact) | None => submitted(sha, agent.submit(text, now)),
    }
}

/// The outcome of a permit's submission.
fn submitted(sha: Option<String>, result: Result<SubmitResult, Refusal>) -> Outcome {
    match result {
        Ok(r) => Outcome {
            id: Some(r.id),
            ..Outcome::new(
                if r.already_accepted {
                    InboxOutcome::AlreadyHeld
                } else {
                    InboxOutcome::Accepted
                },
                sha,
            )
        },
        Err(r) => Outcome::refused(sha, r.kind, r.message),
    }
}

/// Names the inbox reads: hidden ones are temporary files of writers
/// (rsync, Ansible) or a ConfigMap volume's own.
fn visible(name: &str) -> bool {
    !name.starts_with('.')
}

/// Outcomes that say the same thing about the same bytes: held is held,
/// whichever run accepted it.
fn same(a: InboxOutcome, b: InboxOutcome) -> bool {
    use InboxOutcome as O;
    let class = |o| match o {
        O::Accepted | O::AlreadyHeld => 0,
        O::Applied | O::AlreadyApplied => 1,
        o => 2 + o as u8,
    };
    class(a) == class(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_names_are_never_read() {
        assert!(visible("web.permit"));
        assert!(!visible(".web.permit.Xa81"));
        assert!(!visible("..data"));
        assert!(!visible("..2026_11_26_10_00_00.123"));
    }

    #[test]
    fn held_is_held_whichever_run_accepted_it() {
        use InboxOutcome as O;
        assert!(same(O::Accepted, O::AlreadyHeld));
        assert!(same(O::AlreadyApplied, O::Applied));
        assert!(!same(O::Accepted, O::Refused));
        assert!(!same(O::Refused, O::Ignored));
        assert!(same(O::Refused, O::Refused));
    }

    #[test]
    fn a_file_open_for_writing_is_seen_as_such() {
        let dir = std::env::temp_dir().join(format!("authz-inbox-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("slow.permit");
        let writer = fs::File::create(&path).unwrap();
        let reader = fs::File::open(&path).unwrap();
        // Leases need CAP_LEASE or the file's owner; both hold in tests.
        assert!(being_written(&reader));
        drop(writer);
        assert!(!being_written(&reader));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_are_followed_only_inside_the_inbox() {
        let dir = std::env::temp_dir().join(format!("authz-inbox-o-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("..2026_11_26")).unwrap();
        fs::write(dir.join("..2026_11_26/a.permit"), b"x").unwrap();
        std::os::unix::fs::symlink("..2026_11_26", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/a.permit", dir.join("a.permit")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("out.permit")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/passwd", dir.join("up.permit")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("..evil")).unwrap();
        std::os::unix::fs::symlink("..evil/passwd", dir.join("via-dir.permit")).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo.permit"), nix::sys::stat::Mode::S_IRUSR).unwrap();
        let d = fs::File::open(&dir).unwrap();
        assert!(open_beneath(&d, "a.permit").is_ok());
        for name in ["out.permit", "up.permit", "via-dir.permit"] {
            let e = open_beneath(&d, name).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{name}: {e}");
        }
        // Opened without blocking, then refused by its type.
        let fifo = open_beneath(&d, "fifo.permit").unwrap();
        assert!(!fifo.metadata().unwrap().is_file());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ledger_for_another_directory_is_not_reused() {
        let dir = std::env::temp_dir().join(format!("authz-inbox-l-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(LEDGER_FILE);
        let mut l = Ledger {
            dir: "/etc/authz/inbox".into(),
            ..Ledger::default()
        };
        l.files.insert(
            "a".into(),
            InboxFile {
                name: "a".into(),
                sha256: Some("00".into()),
                outcome: InboxOutcome::Accepted,
                id: Some("x".into()),
                error: None,
                message: None,
                at: "2026-11-26T00:00:00Z".into(),
            },
        );
        l.save(&path).unwrap();
        assert_eq!(
            Ledger::load(&path, Path::new("/etc/authz/inbox"))
                .files
                .len(),
            1
        );
        assert!(Ledger::load(&path, Path::new("/srv/inbox"))
            .files
            .is_empty());
        fs::write(&path, b"garbage").unwrap();
        assert!(Ledger::load(&path, Path::new("/etc/authz/inbox"))
            .files
            .is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
