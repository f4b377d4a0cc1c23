//! What operators ask of the daemon beyond permits: metrics (on request and
//! as a node_exporter textfile), `why`, and `report --since`.
//!
//! `why` hashes a file and scans `/proc`; `report --since` reads the decision
//! log. Both can take long, so [`offload`] answers them on a blocking thread
//! from a snapshot of the agent's state, and the main loop keeps reading the
//! kernel's events meanwhile.
use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use super::{
    agent::{Agent, Refusal},
    metrics::Snapshot,
    why,
};
use crate::{
    config::MetricsSection,
    control::{
        access::Access,
        protocol::{MetricsFormat, RefusalKind, Reply, ReportResult, Request, Response, WhyResult},
        server::{Call, Peer},
    },
    enforcer::Mode,
};

impl Agent {
    /// The state the metrics show.
    fn metrics_snapshot(&self, now: SystemTime) -> Snapshot {
        let counters = self
            .enforcer
            .counters()
            .ok()
            .map(|c| c.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        let mode = self
            .enforcer
            .kernel_config()
            .map(|c| Mode::from_raw(c.mode))
            .unwrap_or_else(|_| self.enforcer.mode());
        Snapshot {
            kernel_counters: counters,
            permits: self.permits.states(now),
            kernel_permit_entries: self.enforcer.permits().len(),
            revoked: self.revocations.len(),
            mode: Some(mode),
            events_received: self.log.events_received(),
            uptime: self.started.elapsed(),
            policy_version: self.log.policy().version,
            inbox: self.inbox.as_ref().map(|l| l.counts()),
        }
    }

    /// `metrics`: every metric, in `format`.
    pub fn metrics_text(&self, format: MetricsFormat, now: SystemTime) -> String {
        self.metrics.render(&self.metrics_snapshot(now), format)
    }

    /// What `why` decides from.
    fn why_context(&self, now: SystemTime) -> why::Context {
        let mode = self
            .enforcer
            .kernel_config()
            .map(|c| Mode::from_raw(c.mode))
            .unwrap_or_else(|_| self.enforcer.mode());
        why::Context {
            mode,
            scope_paths: self.enforcer.scope_paths().to_vec(),
            trusted_filesystems: self.enforcer.trusted_filesystems().to_vec(),
            cgroup_root: self.hierarchy.root().to_owned(),
            permits: self
                .permits
                .iter()
                .map(|(_, h)| {
                    let state = self.permits.state(h, now);
                    (h.verified.digest, why::permit_view(&h.verified, state))
                })
                .collect(),
            gone: self.gone.all(),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// The decision log's files, oldest first, with every record written
    /// so far in them.
    fn log_files(&mut self) -> Result<Vec<PathBuf>, Refusal> {
        self.log.events_written();
        let path = self.log.audit().path().to_owned();
        crate::audit::writer::all_files(&path).map_err(|e| {
            Refusal::new(
                RefusalKind::Internal,
                format!("cannot list the decision log {}: {e}", path.display()),
            )
        })
    }

    /// `why`, answered here (the offloaded path is [`offload`]).
    pub fn why(
        &self,
        path: &str,
        target: Option<why::Target>,
        peer: &Peer,
        now: SystemTime,
    ) -> Result<WhyResult, Refusal> {
        why::answer(&self.why_context(now), path, target, peer)
    }

    /// `report --since`, answered here (the offloaded path is [`offload`]).
    pub fn report_since(&mut self, since: &str) -> Result<ReportResult, Refusal> {
        let since = parse_since(since)?;
        let files = self.log_files()?;
        report_from_log(&files, since)
    }
}

/// Where `why` looks: the cgroup or pid the request names.
pub fn target(cgroup: Option<String>, pid: Option<u32>) -> Result<Option<why::Target>, Refusal> {
    match (cgroup, pid) {
        (Some(_), Some(_)) => Err(Refusal::new(
            RefusalKind::MalformedRequest,
            "name a cgroup or a pid, not both",
        )),
        (Some(c), None) => Ok(Some(why::Target::Cgroup(c))),
        (None, Some(p)) => Ok(Some(why::Target::Pid(p))),
        (None, None) => Ok(None),
    }
}

fn parse_since(since: &str) -> Result<SystemTime, Refusal> {
    humantime::parse_rfc3339_weak(since).map_err(|e| {
        Refusal::new(
            RefusalKind::MalformedRequest,
            format!("since: {since:?} is not an RFC 3339 time: {e}"),
        )
    })
}

fn report_from_log(files: &[PathBuf], since: SystemTime) -> Result<ReportResult, Refusal> {
    crate::audit::history::refusals_since(files, since).map_err(|e| {
        Refusal::new(
            RefusalKind::Internal,
            format!("cannot read the decision log: {e}"),
        )
    })
}

/// Counts an answered request, and times submits.
pub fn account(agent: &Agent, op: &'static str, started: Instant, refused: Option<RefusalKind>) {
    agent.metrics.on_request(op, refused);
    if op == "submit" {
        agent.metrics.observe_submit(started.elapsed());
    }
}

/// Takes `why` and `report --since` off the main loop: authorized here,
/// answered on a blocking thread. Any other call is handed back.
pub fn offload(agent: &mut Agent, access: &Access, call: Call) -> Option<Call> {
    let slow = matches!(
        call.request,
        Request::Why { .. } | Request::Report { since: Some(_) }
    );
    if !slow {
        return Some(call);
    }
    let op = call.request.op();
    let counter = agent.metrics.request_counter();
    let reply = call.reply;
    let answer = move |result: Result<Reply, Refusal>| {
        counter.on_request(op, result.as_ref().err().map(|r| r.kind));
        let response = match result {
            Ok(reply) => Response::ok(&reply),
            Err(refusal) => Response::err(refusal.kind, refusal.message),
        };
        let _ = reply.send(response);
    };
    if let Err(denied) = access.authorize(&call.peer, &call.request) {
        tracing::warn!(uid = call.peer.uid, pid = call.peer.pid, reason = %denied.message, "control request refused");
        answer(Err(denied));
        return None;
    }
    let now = SystemTime::now();
    let work: Box<dyn FnOnce() -> Result<Reply, Refusal> + Send> = match call.request {
        Request::Why { path, cgroup, pid } => {
            let context = agent.why_context(now);
            let peer = call.peer;
            Box::new(move || {
                let target = target(cgroup, pid)?;
                why::answer(&context, &path, target, &peer).map(|r| Reply::Why(Box::new(r)))
            })
        }
        Request::Report { since: Some(since) } => match (parse_since(&since), agent.log_files()) {
            (Ok(since), Ok(files)) => {
                Box::new(move || report_from_log(&files, since).map(Reply::Report))
            }
            (Err(e), _) | (_, Err(e)) => {
                answer(Err(e));
                return None;
            }
        },
        _ => unreachable!("only slow requests get here"),
    };
    tokio::task::spawn_blocking(move || answer(work()));
    None
}

/// The node_exporter textfile, rewritten every interval when configured.
pub struct Textfile {
    path: Option<PathBuf>,
    interval: tokio::time::Interval,
}

impl Textfile {
    pub fn new(section: &MetricsSection) -> Self {
        let mut interval = tokio::time::interval(section.interval.max(Duration::from_secs(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            path: section.textfile.clone(),
            interval,
        }
    }

    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    pub async fn tick(&mut self) {
        self.interval.tick().await;
    }

    /// Renders the metrics here and writes them on a blocking thread (the
    /// write ends with two fsyncs).
    pub fn write(&self, agent: &Agent) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let text = agent.metrics_text(MetricsFormat::Prometheus, SystemTime::now());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = super::textfile::write_atomic(&path, &text) {
                tracing::warn!(error = %format!("{:#}", anyhow::Error::new(e)), "cannot write the metrics textfile");
            }
        });
    }
}
