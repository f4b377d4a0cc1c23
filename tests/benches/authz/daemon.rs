//! Issue 7, items 1, 2, 3 (latency) and 5, with the real daemon: exec
//! overhead (no agent / enforce with a permit / audit without one), the first
//! exec of a large binary against later ones, submit-to-enforced latency, and
//! how many decision events per second the audit pipeline keeps up with.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use authz_agent::{
    artifact::issue::hash_file,
    control::{client, protocol::Request},
    enforcer::Mode,
};
use authz_tests::{daemon::Daemon, Scratch};
use serde_json::Value;

use crate::{
    exec::{tiny_elf, write_program, Exec, InCgroup},
    metric, note,
    scale::{digest_of, sign, Signer},
    Plan, Samples, Step,
};

/// Size of the large binary: busybox padded with pseudo-random bytes.
const BIG_BYTES: usize = 50_000_000;

/// The control socket, in process (no CLI exec from inside an enforced cgroup).
pub fn call(d: &Daemon, request: &Request) -> Value {
    client::call(&d.socket, request)
        .unwrap_or_else(|e| panic!("{request:?}: {e}\n{}", d.log_text()))
}

pub fn status(d: &Daemon) -> Value {
    call(d, &Request::Status {})
}

pub fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no counter {name}: {status}"))
}

fn set_mode(d: &Daemon, mode: Mode) {
    call(d, &Request::SetMode { mode });
}

pub fn submit(d: &Daemon, text: &str) -> Value {
    call(
        d,
        &Request::Submit {
            artifact: text.to_owned(),
        },
    )
}

/// The tiny program, and a copy with another digest (one byte appended: the
/// ELF loader ignores it) that no permit names.
pub struct Programs {
    pub tiny: PathBuf,
    pub unpermitted: PathBuf,
}

impl Programs {
    pub fn new(scratch: &Scratch) -> Self {
        let tiny = write_program(&scratch.dir.join("tiny"), &tiny_elf());
        let mut other = tiny_elf();
        other.push(0);
        let unpermitted = write_program(&scratch.dir.join("tiny-unpermitted"), &other);
        Self { tiny, unpermitted }
    }
}

pub fn run(plan: &Plan) {
    let scratch = Scratch::new("bench");
    let programs = Programs::new(&scratch);
    let busybox = scratch.program("busybox").path;
    let per_round = plan.execs / plan.rounds;
    // (a) right before the agent starts and right after it stops, so that
    // the three are measured close together in time.
    let mut none = Baseline::default();
    {
        let _s = Step::new("exec (a): no agent loaded, before it starts");
        none.measure(per_round, plan.rounds / 2, &programs, &busybox);
    }
    let with = {
        let d = {
            let _s = Step::new("starting the daemon (enforce)");
            Daemon::start("bench", "enforce")
        };
        let signer = Signer::new(&d);
        submit(&d, &signer.permit_for(&programs.tiny));
        submit(&d, &signer.permit_for(&busybox));
        with_agent(plan, &d, &programs, &busybox)
        // Dropped: stopped, its pins removed, no authz program attached.
    };
    {
        let _s = Step::new("exec (a): no agent loaded, after it stopped");
        none.measure(
            per_round,
            plan.rounds - plan.rounds / 2,
            &programs,
            &busybox,
        );
    }
    report_exec(plan, &none, &with);

    let d = {
        let _s = Step::new("starting the daemon again (enforce)");
        Daemon::start("bench-rest", "enforce")
    };
    let signer = Signer::new(&d);
    big_binary(plan, &d, &signer, &scratch);
    submit_latency(plan, &d, &signer, &scratch);
    event_throughput(plan, &d, &programs);
}

/// (a), no agent: the programs exec'd with no authz program loaded at all,
/// in rounds.
#[derive(Default)]
struct Baseline {
    tiny: Samples,
    real: Samples,
    /// Each round's median of `tiny`.
    medians: Vec<f64>,
}

impl Baseline {
    fn measure(&mut self, per_round: usize, rounds: usize, programs: &Programs, busybox: &Path) {
        let tiny = Exec::new(&programs.tiny, &["tiny"]);
        let other = Exec::new(&programs.unpermitted, &["tiny"]);
        let real = Exec::new(busybox, &["busybox", "true"]);
        assert!(
            other.once().1,
            "an exec without a permit was refused with no agent loaded"
        );
        tiny.once();
        real.once();
        for _ in 0..rounds {
            let a = tiny.samples(per_round);
            self.medians.push(a.median());
            self.tiny.extend(a);
            self.real.extend(real.samples(per_round));
        }
    }
}

/// (b) and (c), measured with the agent running.
struct WithAgent {
    enforce: Samples,
    audit: Samples,
    real: Samples,
    cache_misses: u64,
}

/// Item 1. The agent keeps a descriptor of every link it pins (removing the
/// pins must not stop enforcement), so nothing outside it can detach its
/// programs for a moment: (a), no agent, is measured in rounds before the
/// agent starts and again after it stopped and its pins are gone,
/// bracketing the rounds of (b) attached, enforce mode, a permit, digest
/// cached, and (c) audit mode, a binary without a permit (every exec a
/// would-deny event the daemon reads and records), all from the same
/// cgroup. (a) and (b) are also measured for `busybox true` (2 MB, static),
/// a small real program whose own start-up is part of what an exec costs.
fn with_agent(plan: &Plan, d: &Daemon, programs: &Programs, busybox: &Path) -> WithAgent {
    let _s = Step::new(format!(
        "exec: enforce / audit, {} each in {} rounds",
        plan.execs, plan.rounds
    ));
    let tiny = Exec::new(&programs.tiny, &["tiny"]);
    let other = Exec::new(&programs.unpermitted, &["tiny"]);
    let real = Exec::new(busybox, &["busybox", "true"]);
    let per_round = plan.execs / plan.rounds;
    let _in = InCgroup::enter(&d.cgroup_dir);
    // The first execs hash and cache both digests.
    set_mode(d, Mode::Audit);
    other.samples(per_round);
    set_mode(d, Mode::Enforce);
    tiny.samples(per_round);
    real.samples(per_round);
    assert!(
        !other.once().1,
        "an exec without a permit was allowed in enforce mode"
    );
    let before = status(d);
    let (mut enforce, mut audit, mut real_enforce) =
        (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..plan.rounds {
        tiny.once();
        enforce.extend(tiny.samples(per_round));
        real_enforce.extend(real.samples(per_round));
        set_mode(d, Mode::Audit);
        other.once();
        audit.extend(other.samples(per_round));
        set_mode(d, Mode::Enforce);
    }
    let after = status(d);
    WithAgent {
        enforce,
        audit,
        real: real_enforce,
        cache_misses: counter(&after, "cache_misses") - counter(&before, "cache_misses"),
    }
}

/// The exec figures, from (a) before and after the agent and (b), (c) with
/// it.
fn report_exec(plan: &Plan, none: &Baseline, with: &WithAgent) {
    let max = none.medians.iter().copied().fold(f64::MIN, f64::max);
    let min = none.medians.iter().copied().fold(f64::MAX, f64::min);
    let (a, b, c) = (&none.tiny, &with.enforce, &with.audit);
    note(format!(
        "(a) no agent, per round before and after: {}",
        fmt_list(&none.medians)
    ));
    metric(
        "exec.cache_misses",
        with.cache_misses as f64,
        "count",
        b.len() + c.len(),
    );
    metric("exec.none_us", a.median(), "us", a.len());
    metric("exec.none_p90_us", a.percentile(90.0), "us", a.len());
    metric("exec.none_spread", max / min, "ratio", none.medians.len());
    metric("exec.enforce_us", b.median(), "us", b.len());
    metric("exec.enforce_p90_us", b.percentile(90.0), "us", b.len());
    metric(
        "exec.enforce_ratio",
        b.median() / a.median(),
        "ratio",
        plan.rounds,
    );
    metric("exec.audit_us", c.median(), "us", c.len());
    metric("exec.audit_p90_us", c.percentile(90.0), "us", c.len());
    metric(
        "exec.audit_ratio",
        c.median() / a.median(),
        "ratio",
        plan.rounds,
    );
    metric(
        "exec.busybox_none_us",
        none.real.median(),
        "us",
        none.real.len(),
    );
    metric(
        "exec.busybox_enforce_us",
        with.real.median(),
        "us",
        with.real.len(),
    );
    metric(
        "exec.busybox_ratio",
        with.real.median() / none.real.median(),
        "ratio",
        plan.rounds,
    );
    // Load on the host only ever adds time: the fast tails are the least
    // disturbed comparison.
    let p10 = a.percentile(10.0);
    metric(
        "exec.enforce_ratio_p10",
        b.percentile(10.0) / p10,
        "ratio",
        b.len(),
    );
    metric(
        "exec.audit_ratio_p10",
        c.percentile(10.0) / p10,
        "ratio",
        c.len(),
    );
}

pub fn fmt_list(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{r:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `len` bytes: busybox, then xorshift noise (incompressible, and ignored by
/// the ELF loader).
fn padded_busybox(len: usize, seed: u64) -> Vec<u8> {
    let mut data = fs::read(authz_tests::busybox()).expect("read busybox");
    assert!(data.len() < len);
    let mut x = seed | 1;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// Item 2: in-kernel hashing of a 50 MB binary on its first exec, against
/// later (cached) execs of the same file, and against userspace SHA-256 of
/// the same file in the same VM.
fn big_binary(plan: &Plan, d: &Daemon, signer: &Signer, scratch: &Scratch) {
    let _s = Step::new(format!(
        "first exec of a {} MB binary, {} copies",
        BIG_BYTES / 1_000_000,
        plan.big_copies
    ));
    let big = write_program(
        &scratch.dir.join("big"),
        &padded_busybox(BIG_BYTES, 0x9e37_79b9_7f4a_7c15),
    );
    let user_secs = (0..3)
        .map(|_| {
            let t = Instant::now();
            hash_file(&big).expect("hash");
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    submit(d, &signer.permit_for(&big));
    let (mut first, mut cached) = (Samples::default(), Samples::default());
    let before = status(d);
    for i in 0..plan.big_copies {
        // Same content, so the same permit; a new inode, so nothing cached.
        let copy = scratch.dir.join(format!("big-{i}"));
        fs::copy(&big, &copy).expect("copy the large binary");
        let exec = Exec::new(&copy, &["busybox", "true"]);
        let _in = InCgroup::enter(&d.cgroup_dir);
        let (us, ok) = exec.once();
        assert!(ok, "the permitted large binary was refused");
        first.0.push(us);
        cached.extend(exec.samples(plan.big_hits));
        drop(_in);
        fs::remove_file(&copy).expect("remove copy");
    }
    let after = status(d);
    let misses = counter(&after, "cache_misses") - counter(&before, "cache_misses");
    assert_eq!(
        misses, plan.big_copies as u64,
        "each copy should be hashed exactly once"
    );
    let hashing_s = (first.median() - cached.median()) / 1e6;
    assert!(
        hashing_s > 0.0,
        "the first exec was not slower than cached ones"
    );
    metric("big.bytes", BIG_BYTES as f64, "B", 1);
    metric("big.first_ms", first.median() / 1e3, "ms", first.len());
    metric("big.cached_ms", cached.median() / 1e3, "ms", cached.len());
    metric(
        "big.kernel_mb_s",
        BIG_BYTES as f64 / hashing_s / 1e6,
        "MB/s",
        first.len(),
    );
    metric(
        "big.user_mb_s",
        BIG_BYTES as f64 / user_secs / 1e6,
        "MB/s",
        3,
    );
    fs::remove_file(&big).expect("remove the large binary");
}

/// Item 3, latency: each artifact (a fresh digest, so a new kernel entry) is
/// submitted through the control socket and timed until the answer, which
/// the daemon sends after the permit is in the kernel's map. The last one is
/// for a real program, exec'd right after the answer: it must run.
fn submit_latency(plan: &Plan, d: &Daemon, signer: &Signer, scratch: &Scratch) {
    let _s = Step::new(format!(
        "submit-to-enforced latency, {} submits",
        plan.submits
    ));
    let texts = sign(
        &signer.key,
        &d.cgroup,
        (0..plan.submits as u64).map(|i| digest_of((1 << 40) + i)),
    );
    let mut lat = Samples::default();
    for (_, text) in &texts {
        let t = Instant::now();
        let answer = submit(d, text);
        lat.0.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(
            answer["state"], "live",
            "submitted permit not live: {answer}"
        );
    }
    metric("submit.p50_ms", lat.median(), "ms", lat.len());
    metric("submit.p99_ms", lat.percentile(99.0), "ms", lat.len());
    metric("submit.max_ms", lat.percentile(100.0), "ms", lat.len());
    note(submit_breakdown(&d.log_text(), texts.len()));

    let mut fresh = tiny_elf();
    fresh.extend_from_slice(b"fresh");
    let program = write_program(&scratch.dir.join("tiny-fresh"), &fresh);
    let exec = Exec::new(&program, &["tiny"]);
    let text = signer.permit_for(&program);
    let _in = InCgroup::enter(&d.cgroup_dir);
    assert!(
        !exec.once().1,
        "exec allowed before its permit was submitted"
    );
    submit(d, &text);
    assert!(
        exec.once().1,
        "exec refused right after its permit was submitted"
    );
    metric("submit.exec_allowed_after_answer", 1.0, "bool", 1);
}

/// The medians of the phases the daemon logs with each of the last `n`
/// acceptances (`artifact accepted ... parse_us=.. verify_us=..`), as a note.
fn submit_breakdown(log: &str, n: usize) -> String {
    const PHASES: [&str; 4] = ["parse_us", "verify_us", "store_us", "kernel_us"];
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("artifact accepted"))
        .collect();
    let lines = &lines[lines.len().saturating_sub(n)..];
    let mut out = format!("submit, daemon side (median of {}):", lines.len());
    for phase in PHASES {
        let key = format!("{phase}=");
        let mut values = Samples::default();
        for l in lines {
            if let Some(v) = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key.as_str()))
                .and_then(|v| v.parse::<f64>().ok())
            {
                values.0.push(v);
            }
        }
        if !values.0.is_empty() {
            out.push_str(&format!(" {phase} {:.0}", values.median()));
        }
    }
    out
}

/// Item 5: the audit pipeline (kernel ring buffer -> daemon -> report).
///
/// Burst: with the daemon stopped (SIGSTOP), `event_burst` would-deny execs
/// fill the ring buffer; what does not fit is dropped and counted. Then the
/// daemon is resumed and timed until it has read everything: its drain rate
/// is the exec rate the pipeline sustains. Sustained: every core execs
/// would-deny programs for `event_secs`; the drops, if any, are counted.
fn event_throughput(plan: &Plan, d: &Daemon, programs: &Programs) {
    let _s = Step::new("audit pipeline throughput");
    set_mode(d, Mode::Audit);
    let pid = nix::unistd::Pid::from_raw(d.child.as_ref().expect("daemon running").id() as i32);
    let exec = Exec::new(&programs.unpermitted, &["tiny"]);
    let before = status(d);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP the daemon");
    let burst = {
        let _in = InCgroup::enter(&d.cgroup_dir);
        exec.samples(plan.event_burst)
    };
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT the daemon");
    let resumed = Instant::now();
    let (received, dropped) = wait_drained(d, &before, plan.event_burst as u64);
    let drain_secs = resumed.elapsed().as_secs_f64();
    metric("events.burst_execs", plan.event_burst as f64, "count", 1);
    metric("events.burst_exec_us", burst.median(), "us", burst.len());
    metric("events.ring_capacity", received as f64, "events", 1);
    metric("events.burst_dropped", dropped as f64, "events", 1);
    metric(
        "events.drain_per_s",
        received as f64 / drain_secs,
        "events/s",
        received as usize,
    );

    let before = status(d);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let execs: u64 = {
        let _in = InCgroup::enter(&d.cgroup_dir);
        let deadline = Instant::now() + Duration::from_secs_f64(plan.event_secs);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let exec = Exec::new(&programs.unpermitted, &["tiny"]);
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            assert!(exec.once().1, "audit mode refused an exec");
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("exec worker"))
                .sum()
        })
    };
    let rate = execs as f64 / plan.event_secs;
    let (received, dropped) = wait_drained(d, &before, execs);
    note(format!(
        "sustained: {execs} execs on {threads} threads, {received} events read, {dropped} dropped"
    ));
    metric("events.sustained_per_s", rate, "execs/s", execs as usize);
    metric(
        "events.sustained_dropped",
        dropped as f64,
        "events",
        execs as usize,
    );
    metric("events.threads", threads as f64, "count", 1);
    set_mode(d, Mode::Enforce);
}

/// Waits until the daemon has read or lost all `expected` events since
/// `before`; returns (read, dropped).
fn wait_drained(d: &Daemon, before: &Value, expected: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = status(d);
        let received = now["events_received"].as_u64().expect("events_received")
            - before["events_received"].as_u64().expect("events_received");
        let dropped = now["events_dropped"].as_u64().expect("events_dropped")
            - before["events_dropped"].as_u64().expect("events_dropped");
        if received + dropped >= expected {
            return (received, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "the daemon read {received} and lost {dropped} of {expected} events within 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
