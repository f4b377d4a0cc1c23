//! The agent's metrics, as OpenMetrics text (prometheus-client): what the
//! kernel counted (every decision by outcome and reason, digest cache hits,
//! events dropped, mappings, executable memory, lockdown), what this agent
//! run saw (decision events by hook, decision and reason; control requests;
//! submit latency), and gauges of its state (permits by state, kernel permit
//! rows, revoked ids, the event ring's fill, the mode, uptime).
//!
//! `authz-agent status --format openmetrics` asks for it over the control
//! socket; `[metrics] textfile` has the daemon rewrite a node_exporter
//! textfile with it (see [`textfile`](super::textfile)).
use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

use crate::{
    control::protocol::{MetricsFormat, PermitState, RefusalKind},
    enforcer::{DecisionEvent, Mode},
};

/// Every metric's name starts with this (`authz_...`).
const PREFIX: &str = "authz";

/// Submit latency buckets: 1 ms doubling to about 4 s (verification is
/// sub-millisecond; writing the store is an fsync; a slow disk is seconds).
const SUBMIT_BUCKET_START_SECONDS: f64 = 0.001;
const SUBMIT_BUCKET_FACTOR: f64 = 2.0;
const SUBMIT_BUCKETS: u16 = 13;

/// Labels of a kernel decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeReason {
    outcome: &'static str,
    reason: &'static str,
}

/// Labels of a decision event this agent received.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    hook: &'static str,
    decision: &'static str,
    reason: &'static str,
}

/// Labels of a control request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InboxLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The kernel's per-CPU decision counters (their names in
/// `authz_common::counter::NAMES`) as (outcome, reason) of
/// `authz_exec_decisions_total`. The kernel counts allowed execs as one
/// (`permit` and `permit-inherited` together) and audit refusals as one.
const EXEC_COUNTERS: &[(&str, &str, &str)] = &[
    ("allowed", "allow", "permit"),
    ("out_of_scope", "allow", "out-of-scope"),
    ("audit_would_deny", "audit-deny", "any"),
    ("denied_no_permit", "deny", "no-permit"),
    ("denied_expired", "deny", "expired"),
    ("denied_wrong_cgroup", "deny", "wrong-cgroup"),
    ("denied_digest_failed", "deny", "digest-failed"),
    ("denied_digest_stale", "deny", "digest-stale"),
    ("denied_mutable_content", "deny", "mutable-content"),
    (
        "denied_untrusted_filesystem",
        "deny",
        "untrusted-filesystem",
    ),
    ("denied_selftest", "deny", "selftest"),
    ("denied_internal", "deny", "internal-error"),
];

/// The other kernel counters: (counter name, metric name without `_total`, help).
const KERNEL_COUNTERS: &[(&str, &str, &str)] = &[
    (
        "cache_hits",
        "digest_cache_hits",
        "Execs whose SHA-256 came from the kernel's per-inode digest cache.",
    ),
    (
        "cache_misses",
        "digest_cache_misses",
        "Execs whose file the kernel hashed.",
    ),
    (
        "digest_errors",
        "digest_errors",
        "Files the kernel could not hash (refused: digest-failed).",
    ),
    (
        "events_dropped",
        "events_dropped",
        "Decision events the kernel dropped because its ring buffer was full (each is also an events-dropped record in the decision log).",
    ),
    (
        "exec_memory_denied",
        "exec_memory_denied",
        "Executable memory no file backs, refused (or, in audit, that would have been).",
    ),
    (
        "code_writes_denied",
        "code_writes_denied",
        "Writes into process memory from outside (/proc/PID/mem, ptrace), refused.",
    ),
    (
        "tamper_denied",
        "tamper_denied",
        "Lockdown refusals: attempts on authz's own BPF objects, pins or process.",
    ),
];

/// Counts control requests (shares its counts with the [`Metrics`] it came
/// from).
#[derive(Clone)]
pub struct RequestCounter(Family<RequestLabels, Counter>);

impl RequestCounter {
    /// Counts an answered control request: `ok`, or the refusal's kind.
    pub fn on_request(&self, op: &'static str, refused: Option<RefusalKind>) {
        let outcome = refused.map_or_else(|| "ok".to_owned(), |k| k.as_str().to_owned());
        self.0.get_or_create(&RequestLabels { op, outcome }).inc();
    }
}

/// What the agent's state is at the moment the metrics are rendered.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The kernel's counters by name (absent when unreadable).
    pub kernel_counters: Option<BTreeMap<String, u64>>,
    pub permits: BTreeMap<PermitState, usize>,
    pub kernel_permit_entries: usize,
    pub revoked: usize,
    pub mode: Option<Mode>,
    pub events_received: u64,
    pub uptime: Duration,
    pub policy_version: u32,
    /// Files in the inbox by their outcome; none without an inbox.
    pub inbox: Option<BTreeMap<&'static str, usize>>,
}

/// The metrics the agent keeps itself (the kernel's are read when rendered).
pub struct Metrics {
    events: Family<EventLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    submit_seconds: Histogram,
    ring: Option<RingGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            events: Family::default(),
            requests: Family::default(),
            submit_seconds: Histogram::new(exponential_buckets(
                SUBMIT_BUCKET_START_SECONDS,
                SUBMIT_BUCKET_FACTOR,
                SUBMIT_BUCKETS,
            )),
            ring: None,
        }
    }

    /// Counts a decision event taken off the ring.
    pub fn on_event(&self, ev: &DecisionEvent) {
        self.events
            .get_or_create(&EventLabels {
                hook: ev.hook,
                decision: ev.decision.as_str(),
                reason: ev.reason.as_str(),
            })
            .inc();
    }

    /// Counts an answered control request: `ok`, or the refusal's kind.
    pub fn on_request(&self, op: &'static str, refused: Option<RefusalKind>) {
        self.request_counter().on_request(op, refused);
    }

    /// A handle on the request counter, for requests answered on another
    /// thread.
    pub fn request_counter(&self) -> RequestCounter {
        RequestCounter(self.requests.clone())
    }

    /// Records how long a submit took to answer.
    pub fn observe_submit(&self, took: Duration) {
        self.submit_seconds.observe(took.as_secs_f64());
    }

    /// Watches the fill of the event ring buffer (`ring`: its map, `bytes`
    /// long). Without it, the fill is not reported.
    pub fn watch_ring(&mut self, ring: impl AsFd, bytes: u32) {
        match RingGauge::new(ring, bytes) {
            Ok(gauge) => self.ring = Some(gauge),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the event ring's fill; the metric is left out")
            }
        }
    }

    /// The text of every metric in `format`.
    pub fn render(&self, s: &Snapshot, format: MetricsFormat) -> String {
        let registry = self.registry(s);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = match format {
            MetricsFormat::Openmetrics => {
                prometheus_client::encoding::text::encode(&mut out, &registry)
            }
            MetricsFormat::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
        };
        out
    }

    /// Every metric, the kernel's and the state's read from `s`.
    fn registry(&self, s: &Snapshot) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        if let Some(counters) = &s.kernel_counters {
            let get = |name: &str| counters.get(name).copied().unwrap_or(0);
            let decisions = Family::<OutcomeReason, Counter>::default();
            for (name, outcome, reason) in EXEC_COUNTERS {
                decisions
                    .get_or_create(&OutcomeReason { outcome, reason })
                    .inc_by(get(name));
            }
            registry.register(
                "exec_decisions",
                "Exec decisions the kernel made, by outcome and reason (every one, not sampled; since the pinned maps were created).",
                decisions,
            );
            for (name, metric, help) in KERNEL_COUNTERS {
                let c = Counter::<u64>::default();
                c.inc_by(get(name));
                registry.register(*metric, *help, c);
            }
            let maps = Family::<OutcomeLabel, Counter>::default();
            maps.get_or_create(&OutcomeLabel { outcome: "allow" })
                .inc_by(get("maps_allowed"));
            maps.get_or_create(&OutcomeLabel { outcome: "deny" })
                .inc_by(get("maps_denied"));
            registry.register(
                "executable_mappings",
                "Files mapped executable (libraries, the loader, dlopen), by outcome (deny includes audit's would-deny).",
                maps,
            );
        }
        registry.register(
            "decision_events",
            "Decision events this agent run took off the kernel's ring, by hook, decision and reason (allowed ones as [audit] allowed samples them).",
            self.events.clone(),
        );
        let received = Counter::<u64>::default();
        received.inc_by(s.events_received);
        registry.register(
            "events_received",
            "Decision events this agent run received (refusals and sampled allowed execs).",
            received,
        );
        registry.register(
            "control_requests",
            "Control-socket requests answered, by operation and outcome (ok or the refusal's kind).",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "submit_duration",
            "Time to verify, store and install a submitted artifact, until the answer.",
            Unit::Seconds,
            self.submit_seconds.clone(),
        );
        let permits = Family::<StateLabel, Gauge>::default();
        for state in [
            PermitState::Live,
            PermitState::WaitingForCgroup,
            PermitState::Scheduled,
            PermitState::Expired,
        ] {
            let n = s.permits.get(&state).copied().unwrap_or(0);
            permits
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(gauge_value(n as u64));
        }
        registry.register("permits", "Accepted artifacts, by state.", permits);
        if let Some(inbox) = &s.inbox {
            let files = Family::<InboxLabel, Gauge>::default();
            for outcome in crate::control::protocol::InboxOutcome::ALL {
                let o = outcome.as_str();
                files
                    .get_or_create(&InboxLabel { outcome: o })
                    .set(gauge_value(inbox.get(o).copied().unwrap_or(0) as u64));
            }
            registry.register(
                "inbox_files",
                "Files in the inbox directory, by what became of them (alert on refused).",
                files,
            );
        }
        let entries = Gauge::<i64>::default();
        entries.set(gauge_value(s.kernel_permit_entries as u64));
        registry.register(
            "kernel_permit_entries",
            "Rows in the kernel's permit maps.",
            entries,
        );
        let revoked = Gauge::<i64>::default();
        revoked.set(gauge_value(s.revoked as u64));
        registry.register("revoked_ids", "Entries in the revocation list.", revoked);
        if let Some(ring) = &self.ring {
            let fill = Gauge::<f64, AtomicU64>::default();
            fill.set(ring.fill());
            registry.register(
                "event_ring_fill_ratio",
                "Fraction of the kernel's decision event ring buffer holding events not yet read (1 means events are being dropped).",
                fill,
            );
            let size = Gauge::<i64>::default();
            size.set(i64::from(ring.bytes));
            registry.register_with_unit(
                "event_ring_size",
                "Size of the kernel's decision event ring buffer.",
                Unit::Bytes,
                size,
            );
        }
        if let Some(mode) = s.mode {
            let modes = Family::<ModeLabel, Gauge>::default();
            for m in [Mode::Off, Mode::Audit, Mode::Enforce] {
                modes
                    .get_or_create(&ModeLabel { mode: m.as_str() })
                    .set(i64::from(m == mode));
            }
            registry.register(
                "mode",
                "The kernel's enforcement mode: 1 for the current one.",
                modes,
            );
        }
        let policy = Gauge::<i64>::default();
        policy.set(i64::from(s.policy_version));
        registry.register(
            "policy_version",
            "Version of the trust policy in force.",
            policy,
        );
        let uptime = Gauge::<f64, AtomicU64>::default();
        uptime.set(s.uptime.as_secs_f64());
        registry.register_with_unit(
            "uptime",
            "Time since this agent started.",
            Unit::Seconds,
            uptime,
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The agent's version.", build);
        registry
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The fill of a BPF ring buffer, read from its consumer and producer
/// positions: the map's first two pages, mapped read-only (the kernel allows
/// read-only mappings of both; only the consumer page may be writable).
struct RingGauge {
    consumer: NonNull<libc::c_void>,
    producer: NonNull<libc::c_void>,
    page: usize,
    bytes: u32,
}

// SAFETY: the mappings are read-only views of kernel memory that lives as
// long as they do; reading them from any thread is what the kernel expects
// of ring-buffer consumers.
unsafe impl Send for RingGauge {}
// SAFETY: as above; the only access is an atomic load.
unsafe impl Sync for RingGauge {}

impl RingGauge {
    fn new(ring: impl AsFd, bytes: u32) -> std::io::Result<Self> {
        let page = page_size();
        let fd = ring.as_fd().as_raw_fd();
        let map = |offset: usize| -> std::io::Result<NonNull<libc::c_void>> {
            let offset = libc::off_t::try_from(offset)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            // SAFETY: a new read-only shared mapping of one page of the ring
            // map's fd; the kernel checks the offset, and the mapping keeps
            // its own reference to the map, so it outlives the fd.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    offset,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            NonNull::new(p).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::Other))
        };
        let consumer = map(0)?;
        let producer = match map(page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: unmapping the page mapped just above, once.
                unsafe { libc::munmap(consumer.as_ptr(), page) };
                return Err(e);
            }
        };
        Ok(Self {
            consumer,
            producer,
            page,
            bytes,
        })
    }

    fn position(p: NonNull<libc::c_void>) -> u64 {
        // SAFETY: the position is the first, 8-byte aligned word of a
        // mapped page that stays mapped while `self` lives; the kernel
        // updates it atomically.
        let word = unsafe { &*p.as_ptr().cast::<AtomicU64>() };
        word.load(Ordering::Acquire)
    }

    /// Bytes queued and not consumed, as a fraction of the ring's size.
    fn fill(&self) -> f64 {
        let consumer = Self::position(self.consumer);
        let producer = Self::position(self.producer);
        let queued = producer.saturating_sub(consumer);
        (queued as f64 / f64::from(self.bytes.max(1))).min(1.0)
    }
}

impl Drop for RingGauge {
    fn drop(&mut self) {
        // SAFETY: both pages were mapped by `new` and are unmapped once.
        unsafe {
            libc::munmap(self.consumer.as_ptr(), self.page);
            libc::munmap(self.producer.as_ptr(), self.page);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut counters: BTreeMap<String, u64> = authz_common::counter::NAMES
            .iter()
            .map(|n| ((*n).to_owned(), 0))
            .collect();
        counters.insert("denied_no_permit".into(), 7);
        counters.insert("allowed".into(), 40);
        counters.insert("cache_hits".into(), 30);
        counters.insert("events_dropped".into(), 2);
        Snapshot {
            kernel_counters: Some(counters),
            permits: [(PermitState::Live, 3), (PermitState::Scheduled, 1)]
                .into_iter()
                .collect(),
            kernel_permit_entries: 4,
            revoked: 2,
            mode: Some(Mode::Enforce),
            events_received: 9,
            uptime: Duration::from_secs(5),
            policy_version: 3,
            inbox: Some([("accepted", 5), ("refused", 1)].into_iter().collect()),
        }
    }

    /// Parses the exposition back (an independent parser), so a format
    /// error is caught, and returns (name, labels, value) for each sample.
    fn parse(text: &str) -> Vec<prometheus_parse::Sample> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines)
            .expect("valid exposition")
            .samples
    }

    fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let s = samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected value {other:?}"),
        }
    }

    #[test]
    fn the_exposition_parses_back_with_every_value() {
        let m = Metrics::new();
        let mut ev = DecisionEvent::from_raw(&authz_common::ExecEvent::zeroed());
        ev.decision = crate::enforcer::Decision::Deny;
        ev.reason = crate::enforcer::event::Reason::NoPermit;
        ev.hook = "exec";
        m.on_event(&ev);
        m.on_event(&ev);
        m.on_request("submit", None);
        m.on_request("submit", Some(RefusalKind::BadSignature));
        m.observe_submit(Duration::from_millis(3));
        m.observe_submit(Duration::from_millis(30));
        let text = m.render(&snapshot(), MetricsFormat::Openmetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        // OpenMetrics: every family has TYPE and HELP, counters end in _total.
        assert!(
            text.contains("# TYPE authz_exec_decisions counter"),
            "{text}"
        );
        assert!(text.contains("# HELP authz_exec_decisions "), "{text}");
        assert!(
            text.contains("# UNIT authz_submit_duration_seconds seconds"),
            "{text}"
        );
        let samples = parse(&text);
        assert_eq!(
            value(
                &samples,
                "authz_exec_decisions_total",
                &[("outcome", "deny"), ("reason", "no-permit")]
            ),
            7.0
        );
        assert_eq!(
            value(
                &samples,
                "authz_exec_decisions_total",
                &[("outcome", "allow"), ("reason", "permit")]
            ),
            40.0
        );
        assert_eq!(value(&samples, "authz_digest_cache_hits_total", &[]), 30.0);
        assert_eq!(value(&samples, "authz_events_dropped_total", &[]), 2.0);
        assert_eq!(
            value(
                &samples,
                "authz_decision_events_total",
                &[
                    ("hook", "exec"),
                    ("decision", "deny"),
                    ("reason", "no-permit")
                ]
            ),
            2.0
        );
        assert_eq!(
            value(
                &samples,
                "authz_control_requests_total",
                &[("op", "submit"), ("outcome", "bad-signature")]
            ),
            1.0
        );
        assert_eq!(value(&samples, "authz_permits", &[("state", "live")]), 3.0);
        assert_eq!(
            value(&samples, "authz_permits", &[("state", "expired")]),
            0.0
        );
        assert_eq!(value(&samples, "authz_mode", &[("mode", "enforce")]), 1.0);
        assert_eq!(value(&samples, "authz_mode", &[("mode", "audit")]), 0.0);
        assert_eq!(value(&samples, "authz_kernel_permit_entries", &[]), 4.0);
        // The histogram: two observations, one in the 4 ms bucket.
        let hist = samples
            .iter()
            .find(|s| s.metric == "authz_submit_duration_seconds")
            .expect("histogram");
        match &hist.value {
            prometheus_parse::Value::Histogram(buckets) => {
                let le = |bound: f64| {
                    buckets
                        .iter()
                        // Exact for +Inf (where the difference is NaN).
                        .find(|b| b.less_than == bound || (b.less_than - bound).abs() < 1e-9)
                        .map(|b| b.count)
                };
                assert_eq!(le(0.004), Some(1.0));
                assert_eq!(le(f64::INFINITY), Some(2.0));
            }
            other => panic!("not a histogram: {other:?}"),
        }
        assert_eq!(
            value(&samples, "authz_submit_duration_seconds_count", &[]),
            2.0
        );
    }

    #[test]
    fn unreadable_kernel_counters_leave_their_metrics_out() {
        let mut s = snapshot();
        s.kernel_counters = None;
        let text = Metrics::new().render(&s, MetricsFormat::Openmetrics);
        assert!(!text.contains("authz_exec_decisions"), "{text}");
        assert!(text.contains("authz_permits"), "{text}");
        parse(&text);
    }

    /// node_exporter's textfile collector reads the Prometheus text format:
    /// a counter's TYPE line names it with `_total`, and there is no `# EOF`.
    #[test]
    fn the_prometheus_text_names_counters_as_node_exporter_expects() {
        let text = Metrics::new().render(&snapshot(), MetricsFormat::Prometheus);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE authz_exec_decisions_total counter"),
            "{text}"
        );
        let samples = parse(&text);
        let counter = samples
            .iter()
            .find(|s| s.metric == "authz_digest_cache_hits_total")
            .expect("counter");
        // Typed as a counter: its TYPE line names the sample.
        assert_eq!(counter.value, prometheus_parse::Value::Counter(30.0));
        // Every sample line is `name{labels} value`, every family typed.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {name} "))
                    || text.contains(&format!("# TYPE {family} ")),
                "untyped sample {line}"
            );
        }
    }

    #[test]
    fn every_kernel_counter_is_exported() {
        let exported: Vec<&str> = EXEC_COUNTERS
            .iter()
            .map(|(n, _, _)| *n)
            .chain(KERNEL_COUNTERS.iter().map(|(n, _, _)| *n))
            .chain(["maps_allowed", "maps_denied"])
            .collect();
        for name in authz_common::counter::NAMES {
            assert!(exported.contains(&name), "{name} is not exported");
        }
    }
}
