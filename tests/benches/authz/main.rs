//! What authz costs, measured with the real parts: `cargo xtask bench` runs
//! this binary once on the host (`host`: pure userspace figures, native speed)
//! and once inside the VM (`vm`: everything that needs the kernel program),
//! collects the `AUTHZ-BENCH` lines it prints and makes one table of them.
//!
//! Each measurement is printed as one line, `AUTHZ-BENCH {"metric":..,
//! "value":..,"unit":..,"n":..}`; progress as `AUTHZ-BENCH-NOTE text`; the
//! last line is `AUTHZ-BENCH-DONE`. A measurement that cannot be made panics:
//! the binary exits non-zero and the xtask reports what is missing.
//!
//! Run without `vm` (as `cargo bench -p authz-tests` does) it measures the
//! host part only. `--quick` shortens every loop.
mod daemon;
mod exec;
mod inbox;
mod scale;
mod verify;

use std::time::Instant;

/// Iteration counts and durations for one run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    /// fork+exec+wait per configuration (split into `rounds`).
    pub execs: usize,
    /// Rounds the exec configurations alternate in (drift hits all alike).
    pub rounds: usize,
    /// Fresh copies of the large binary, each exec'd once uncached.
    pub big_copies: usize,
    /// Cached execs of each copy.
    pub big_hits: usize,
    /// Artifacts submitted one by one through the control socket.
    pub submits: usize,
    /// Seconds per verification-throughput measurement.
    pub verify_secs: f64,
    /// Execs made while the daemon is stopped (ring buffer burst).
    pub event_burst: usize,
    /// Seconds of all-cores exec load in audit mode.
    pub event_secs: f64,
    /// Stored-artifact counts the daemon is started with.
    pub scale: Vec<usize>,
    /// Files dropped into the inbox at once.
    pub inbox_burst: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                execs: 400,
                rounds: 16,
                big_copies: 2,
                big_hits: 4,
                submits: 300,
                verify_secs: 1.0,
                event_burst: 2500,
                event_secs: 5.0,
                scale: vec![10_000],
                inbox_burst: 2_000,
            }
        } else {
            Self {
                quick,
                execs: 2000,
                rounds: 80,
                big_copies: 4,
                big_hits: 8,
                submits: 300,
                verify_secs: 3.0,
                event_burst: 2500,
                event_secs: 15.0,
                scale: vec![10_000, 100_000],
                inbox_burst: 10_000,
            }
        }
    }
}

/// Prints one measurement.
pub fn metric(name: &str, value: f64, unit: &str, n: usize) {
    assert!(value.is_finite(), "{name}: measured a non-finite value");
    println!(
        "AUTHZ-BENCH {}",
        serde_json::json!({ "metric": name, "value": value, "unit": unit, "n": n })
    );
}

/// Prints a progress line.
pub fn note(msg: impl AsRef<str>) {
    println!("AUTHZ-BENCH-NOTE {}", msg.as_ref());
}

/// Timed progress: prints `what` and, on drop, how long it took.
pub struct Step {
    what: String,
    start: Instant,
}

impl Step {
    pub fn new(what: impl Into<String>) -> Self {
        let what = what.into();
        note(format!("{what} ..."));
        Self {
            what,
            start: Instant::now(),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        note(format!(
            "{}: done in {:.1} s",
            self.what,
            self.start.elapsed().as_secs_f64()
        ));
    }
}

/// Measurements of one quantity.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The `p`-th percentile (0..=100), nearest rank.
    pub fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        assert!(!v.is_empty(), "no samples");
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        assert!(!v.is_empty(), "no samples");
        let mid = v.len() / 2;
        if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = Plan::new(args.iter().any(|a| a == "--quick"));
    let start = Instant::now();
    if args.iter().any(|a| a == "vm") {
        authz_tests::require_environment();
        daemon::run(&plan);
        inbox::run(&plan);
        scale::run(&plan);
        verify::run(&plan, "vm");
        scale::map_memory();
    } else {
        if !args.iter().any(|a| a == "host") {
            note("host part only (userspace); `cargo xtask bench` runs the kernel part in the VM and prints the table");
        }
        verify::run(&plan, "host");
    }
    metric(
        if args.iter().any(|a| a == "vm") {
            "vm.seconds"
        } else {
            "host.seconds"
        },
        start.elapsed().as_secs_f64(),
        "s",
        1,
    );
    println!("AUTHZ-BENCH-DONE");
}
