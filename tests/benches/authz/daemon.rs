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
    attach::Switch,
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
    let d = {
        let _s = Step::new("starting the daemon (enforce)");
        Daemon::start("bench", "enforce")
    };
    let signer = Signer::new(&d);
    submit(&d, &signer.permit_for(&programs.tiny));
    let busybox = scratch.program("busybox").path;
    submit(&d, &signer.permit_for(&busybox));
    exec_overhead(plan, &d, &programs, &busybox);
    big_binary(plan, &d, &signer, &scratch);
    submit_latency(plan, &d, &signer, &scratch);
    event_throughput(plan, &d, &programs);
}

/// Item 1, in `plan.rounds` rounds so that drift (the host is shared, the
/// VM ages) hits every configuration alike. Each round, from the same cgroup:
/// (a) the daemon's programs detached from their hooks, no agent in the exec
/// path at all; (b) attached, enforce mode, a permit, digest cached; (c)
/// audit mode, a binary without a permit (every exec a would-deny event the
/// daemon reads and records). Ratios are per round, then the median. (a)
/// and (b) are also measured for `busybox true` (2 MB, static), a small real
/// program whose own start-up is part of what an exec costs.
fn exec_overhead(plan: &Plan, d: &Daemon, programs: &Programs, busybox: &Path) {
    let _s = Step::new(format!(
        "exec: no agent / enforce / audit, {} each in {} rounds",
        plan.execs, plan.rounds
    ));
    let tiny = Exec::new(&programs.tiny, &["tiny"]);
    let other = Exec::new(&programs.unpermitted, &["tiny"]);
    let real = Exec::new(busybox, &["busybox", "true"]);
    let (mut real_none, mut real_enforce, mut real_ratios) =
        (Samples::default(), Samples::default(), Vec::new());
    let per_round = plan.execs / plan.rounds;
    let (mut none, mut enforce, mut audit) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut none_medians, mut b_ratios, mut c_ratios) = (Vec::new(), Vec::new(), Vec::new());
    // The agent keeps a descriptor of each link it pins (so that removing
    // the pins does not stop enforcement): closing the bench's would detach
    // nothing, and there would be no baseline. Say so and go on with the
    // rest of the run rather than abort it (or leave the agent unpinned).
    if let Some(pid) = d.child.as_ref().map(std::process::Child::id) {
        if crate::attach::holds_bpf_links(pid) {
            note(
                "exec overhead NOT measured: the running agent holds its own BPF link \
                 descriptors, so the bench cannot detach its programs; rows (a)-(c) are missing",
            );
            return;
        }
    }
    let mut switch = Switch::take(&d.pin_dir);
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
    // After a switch the kernel frees the old trampoline in the background
    // (after RCU grace periods): let that finish first. And the first exec
    // after a switch is not counted: attaching or detaching patches kernel
    // code, which the emulator translates again.
    let settle = || std::thread::sleep(Duration::from_millis(150));
    for _ in 0..plan.rounds {
        switch.detach();
        settle();
        assert!(
            other.once().1,
            "an exec was refused with the programs detached"
        );
        let a = tiny.samples(per_round);
        let real_a = real.samples(per_round);
        switch.attach();
        settle();
        tiny.once();
        let b = tiny.samples(per_round);
        let real_b = real.samples(per_round);
        real_ratios.push(real_b.median() / real_a.median());
        real_none.extend(real_a);
        real_enforce.extend(real_b);
        set_mode(d, Mode::Audit);
        other.once();
        let c = other.samples(per_round);
        set_mode(d, Mode::Enforce);
        b_ratios.push(b.median() / a.median());
        c_ratios.push(c.median() / a.median());
        none_medians.push(a.median());
        none.extend(a);
        enforce.extend(b);
        audit.extend(c);
    }
    let after = status(d);
    switch.restore();
    let misses = counter(&after, "cache_misses") - counter(&before, "cache_misses");
    let max = none_medians.iter().copied().fold(f64::MIN, f64::max);
    let min = none_medians.iter().copied().fold(f64::MAX, f64::min);
    note(format!("per-round (b)/(a): {}", fmt_list(&b_ratios)));
    note(format!("per-round (c)/(a): {}", fmt_list(&c_ratios)));
    metric(
        "exec.cache_misses",
        misses as f64,
        "count",
        enforce.len() + audit.len(),
    );
    metric("exec.none_us", none.median(), "us", none.len());
    metric("exec.none_p90_us", none.percentile(90.0), "us", none.len());
    metric("exec.none_spread", max / min, "ratio", none_medians.len());
    metric("exec.enforce_us", enforce.median(), "us", enforce.len());
    metric(
        "exec.enforce_p90_us",
        enforce.percentile(90.0),
        "us",
        enforce.len(),
    );
    metric(
        "exec.enforce_ratio",
        Samples(b_ratios).median(),
        "ratio",
        plan.rounds,
    );
    metric("exec.audit_us", audit.median(), "us", audit.len());
    metric(
        "exec.audit_p90_us",
        audit.percentile(90.0),
        "us",
        audit.len(),
    );
    metric(
        "exec.audit_ratio",
        Samples(c_ratios).median(),
        "ratio",
        plan.rounds,
    );
    metric(
        "exec.busybox_none_us",
        real_none.median(),
        "us",
        real_none.len(),
    );
    metric(
        "exec.busybox_enforce_us",
        real_enforce.median(),
        "us",
        real_enforce.len(),
    );
    metric(
        "exec.busybox_ratio",
        Samples(real_ratios).median(),
        "ratio",
        plan.rounds,
    );
    // Load on the host only ever adds time: the fast tails of finely
    // interleaved samples are the least disturbed comparison.
    let p10 = none.percentile(10.0);
    metric(
        "exec.enforce_ratio_p10",
        enforce.percentile(10.0) / p10,
        "ratio",
        enforce.len(),
    );
    metric(
        "exec.audit_ratio_p10",
        audit.percentile(10.0) / p10,
        "ratio",
        audit.len(),
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
