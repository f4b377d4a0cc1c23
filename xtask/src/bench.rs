//! `cargo xtask bench`: what authz costs, in one table.
//!
//! Builds the release agent and the `authz` benchmark binary (tests/benches/
//! authz), runs the binary's userspace part on the host (native speed), then
//! boots the VM and runs its kernel part there, with the real daemon and
//! kernel program. Every figure arrives as an `AUTHZ-BENCH {json}` line;
//! the ratios are computed here from figures measured side by side in the
//! same run. Writes the figures as JSON (default target/bench/latest.json,
//! plus a copy under target/bench/history/) and exits non-zero when the VM
//! did not boot or finish, or any figure is missing. Missed goals are
//! reported, not failed: this is a measurement, not a test.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::{
    build, setup,
    util::{target_dir, workspace_root},
    vm::{self, Boot, Initramfs},
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Shorter loops, and the scale test with 10,000 artifacts only (about
    /// a third of the time; figures are noisier).
    #[arg(long)]
    pub quick: bool,
    /// Where to write the figures as JSON (default: target/bench/latest.json).
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 1500)]
    pub timeout: u64,
    /// Memory for the VM, in MiB (100,000 stored artifacts live on its tmpfs).
    #[arg(long, default_value_t = 4096)]
    pub memory: u32,
    /// Measure nothing: print the table of a run saved earlier (a
    /// latest.json or history file).
    #[arg(long, value_name = "JSON")]
    pub show: Option<PathBuf>,
}

/// The VM's virtual CPUs.
const VM_CPUS: u32 = 2;
/// Where the benchmark binary lives inside the VM.
const BENCH_IN_VM: &str = "/authz/bench/authz-bench";
const METRIC: &str = "AUTHZ-BENCH ";
const NOTE: &str = "AUTHZ-BENCH-NOTE ";
const DONE: &str = "AUTHZ-BENCH-DONE";

/// One figure as the benchmark binary reported it.
#[derive(Clone, Debug)]
struct Figure {
    value: f64,
    unit: String,
    /// Samples behind it.
    n: u64,
}

type Figures = BTreeMap<String, Figure>;

/// Parses an `AUTHZ-BENCH {json}` line.
fn parse_metric(line: &str) -> Option<(String, Figure)> {
    let v: Value = serde_json::from_str(line.strip_prefix(METRIC)?).ok()?;
    Some((
        v["metric"].as_str()?.to_owned(),
        Figure {
            value: v["value"].as_f64()?,
            unit: v["unit"].as_str()?.to_owned(),
            n: v["n"].as_u64()?,
        },
    ))
}

/// Collects one run's lines; progress goes to stderr.
#[derive(Default)]
struct Collector {
    figures: Figures,
    done: bool,
    garbled: Vec<String>,
}

impl Collector {
    fn line(&mut self, start: Instant, line: &str) {
        if let Some(note) = line.strip_prefix(NOTE) {
            eprintln!("bench: [{:>4.0} s] {note}", start.elapsed().as_secs_f64());
        } else if line.starts_with(METRIC) {
            match parse_metric(line) {
                Some((name, figure)) => {
                    self.figures.insert(name, figure);
                }
                None => self.garbled.push(line.to_owned()),
            }
        } else if line == DONE {
            self.done = true;
        } else if !line.trim().is_empty() {
            eprintln!("bench:        | {line}");
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if let Some(path) = &args.show {
        return show(path);
    }
    let start = Instant::now();
    // The tree as it is built (it may change while the benchmark runs).
    let git = git_describe();
    let setup = setup::run()?;
    let (agent, bench) = build::build_bench()?;
    let quick = if args.quick {
        vec!["--quick"]
    } else {
        Vec::new()
    };

    eprintln!("bench: host part (userspace, native speed)");
    let loadavg = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut host = Collector::default();
    let mut child = Command::new(&bench)
        .arg("host")
        .args(&quick)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bench.display()))?;
    for line in BufReader::new(child.stdout.take().context("bench stdout")?).lines() {
        host.line(start, &line?);
    }
    let status = child.wait()?;
    if !status.success() || !host.done {
        bail!("the host part of the benchmark failed ({status})");
    }

    let mut initramfs = Initramfs::new("bench", &agent, &setup)?;
    initramfs.add_binary(&bench, BENCH_IN_VM)?;
    let cmd = format!(
        "AUTHZ_AGENT_BIN={} RUST_BACKTRACE=1 {BENCH_IN_VM} vm {}\n",
        vm::AGENT_IN_VM,
        quick.join(" ")
    );
    initramfs.add_file("/authz/cmd", cmd.as_bytes(), 0o644)?;
    let boot = Boot {
        kernel: setup.kernel.clone(),
        initrd: initramfs.pack()?,
        memory: args.memory,
        cpus: VM_CPUS,
        timeout: Some(Duration::from_secs(args.timeout)),
        cmdline: String::new(),
    };
    eprintln!(
        "bench: booting {} under QEMU TCG (software emulation){}",
        setup.kernel_package,
        if args.quick {
            ", quick run"
        } else {
            "; a full run takes 6 to 8 minutes"
        }
    );
    let mut guest = Collector::default();
    let vm_start = Instant::now();
    let cpu_before = CpuTicks::now();
    let outcome = vm::boot(&boot, |line| {
        if line.starts_with(vm::READY) {
            eprintln!("bench: {line}");
        } else if !line.starts_with(vm::EXIT_PREFIX) {
            guest.line(vm_start, line);
        }
    })?;
    let code = outcome.require_completed()?;
    let other_cpu = cpu_before.and_then(|b| Some(CpuTicks::now()?.other_share_since(&b)));

    let mut figures = host.figures;
    figures.extend(guest.figures);
    let report = Report {
        figures: &figures,
        quick: args.quick,
        other_cpu,
    };
    print!("{}", report.table(&setup.kernel_package));
    for g in host.garbled.iter().chain(&guest.garbled) {
        eprintln!("bench: unreadable result line: {g}");
    }
    let missing = report.missing();
    if code != 0 || !guest.done {
        bail!("the benchmark failed inside the VM (exit status {code}); see the lines above");
    }
    if !missing.is_empty() {
        bail!("measurements missing: {}", missing.join(", "));
    }

    let doc = report.json(&setup.kernel_package, &loadavg, git, args, start.elapsed());
    let out = args
        .json_out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench/latest.json"));
    write_json(&out, &doc)?;
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    write_json(
        &target_dir().join(format!("bench/history/{stamp}.json")),
        &doc,
    )?;
    eprintln!(
        "bench: figures written to {} ({:.0} s in all)",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `--show`: the table of a saved run.
fn show(path: &std::path::Path) -> Result<ExitCode> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let mut figures = Figures::new();
    for (name, f) in doc["metrics"]
        .as_object()
        .context("no `metrics` in the file")?
    {
        let figure = Figure {
            value: f["value"].as_f64().context("a metric without a value")?,
            unit: f["unit"].as_str().unwrap_or_default().to_owned(),
            n: f["n"].as_u64().unwrap_or(0),
        };
        figures.insert(name.clone(), figure);
    }
    let report = Report {
        figures: &figures,
        quick: doc["quick"].as_bool().unwrap_or(false),
        other_cpu: doc["host"]["other_cpu_share_during_vm"].as_f64(),
    };
    print!(
        "{}",
        report.table(doc["vm"]["kernel_package"].as_str().unwrap_or("?"))
    );
    Ok(ExitCode::SUCCESS)
}

fn write_json(path: &std::path::Path, doc: &Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, serde_json::to_string_pretty(doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// A goal of issue 7: `value` compared with `target`.
struct Goal {
    id: &'static str,
    what: &'static str,
    value: Option<f64>,
    target: f64,
    /// true: value must be at most `target`; false: at least.
    at_most: bool,
    /// Where it was measured (`vm` figures are inflated by emulation).
    place: &'static str,
}

impl Goal {
    fn met(&self) -> Option<bool> {
        self.value.map(|v| {
            if self.at_most {
                v <= self.target
            } else {
                v >= self.target
            }
        })
    }

    fn target_text(&self) -> String {
        format!(
            "{} {}",
            if self.at_most { "<=" } else { ">=" },
            num(self.target)
        )
    }
}

struct Report<'a> {
    figures: &'a Figures,
    quick: bool,
    /// Share of the host's CPU time used by processes other than the VM
    /// while it ran (0..1): other work disturbs every figure.
    other_cpu: Option<f64>,
}

/// CPU time counters of the host, in clock ticks.
struct CpuTicks {
    /// Busy time of every CPU (/proc/stat).
    busy: u64,
    /// Busy plus idle time of every CPU.
    total: u64,
    /// CPU time of this process's waited-for children (the VM).
    children: u64,
}

impl CpuTicks {
    fn now() -> Option<Self> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4)?;
        let own = fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<u64> = own
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .skip(13)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        Some(Self {
            busy: total - idle,
            total,
            children: fields.iter().sum(),
        })
    }

    fn other_share_since(&self, before: &Self) -> f64 {
        let other = (self.busy - before.busy).saturating_sub(self.children - before.children);
        other as f64 / (self.total - before.total).max(1) as f64
    }
}

/// Issue 18's goals: submit-to-enforced p99 and a start with 100,000 stored
/// artifacts, both in the VM.
const SUBMIT_P99_GOAL_MS: f64 = 5.0;
const START_100K_GOAL_S: f64 = 6.0;

/// Stored-artifact counts of the scale test.
fn scale_counts(quick: bool) -> &'static [u64] {
    if quick {
        &[10_000]
    } else {
        &[10_000, 100_000]
    }
}

impl Report<'_> {
    fn get(&self, name: &str) -> Option<f64> {
        self.figures.get(name).map(|f| f.value)
    }

    fn n(&self, name: &str) -> u64 {
        self.figures.get(name).map_or(0, |f| f.n)
    }

    fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.get(a)? / self.get(b)?)
    }

    /// Host-native over VM verification rate: how much emulation slows
    /// CPU-bound userspace code down in this run.
    fn emulation_factor(&self) -> Option<f64> {
        self.ratio("verify.host.one_core_per_s", "verify.vm.one_core_per_s")
    }

    /// Seconds the host needs at least to parse and batch-verify `n`
    /// artifacts on all its cores (what the daemon does at start-up), from
    /// the host's own rates: a floor for a native start, not an estimate.
    fn native_start_floor(&self, n: f64) -> Option<f64> {
        let cores = self.get("verify.host.cores")?;
        let parse = 1.0 / self.get("verify.host.parse_one_core_per_s")?
            - 1.0 / self.get("verify.host.one_core_per_s")?;
        let verify = 1.0 / self.get("verify.host.batch_one_core_per_s")?;
        Some(n * (parse.max(0.0) + verify) / cores)
    }

    /// Every figure the table and the goals need.
    fn expected(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            "exec.none_us",
            "exec.none_p90_us",
            "exec.none_spread",
            "exec.enforce_us",
            "exec.enforce_p90_us",
            "exec.enforce_ratio",
            "exec.audit_us",
            "exec.audit_p90_us",
            "exec.audit_ratio",
            "exec.cache_misses",
            "exec.enforce_ratio_p10",
            "exec.audit_ratio_p10",
            "exec.busybox_none_us",
            "exec.busybox_enforce_us",
            "exec.busybox_ratio",
            "exec.permits_1_us",
            "big.bytes",
            "big.first_ms",
            "big.cached_ms",
            "big.kernel_mb_s",
            "big.user_mb_s",
            "submit.p50_ms",
            "submit.p99_ms",
            "submit.max_ms",
            "submit.exec_allowed_after_answer",
            "events.burst_execs",
            "events.burst_exec_us",
            "events.ring_capacity",
            "events.burst_dropped",
            "events.drain_per_s",
            "events.sustained_per_s",
            "events.sustained_dropped",
            "events.threads",
            "map.bytes_per_permit",
            "map.default_capacity_mib",
            "host.seconds",
            "vm.seconds",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for place in ["host", "vm"] {
            for m in [
                "one_core_per_s",
                "batch_one_core_per_s",
                "all_cores_per_s",
                "cores",
                "parse_one_core_per_s",
            ] {
                names.push(format!("verify.{place}.{m}"));
            }
        }
        for m in [
            "drop_p50_ms",
            "drop_p99_ms",
            "submit_p50_ms",
            "submit_p99_ms",
            "burst_files",
            "burst_s",
            "burst_per_artifact_ms",
            "submits_per_artifact_ms",
        ] {
            names.push(format!("inbox.{m}"));
        }
        for n in scale_counts(self.quick) {
            names.push(format!("scale.start_{n}_s"));
            names.push(format!("scale.start_{n}_full_s"));
            names.push(format!("exec.permits_{n}_us"));
            names.push(format!("exec.permits_{n}_ratio"));
            names.push(format!("exec.permits_{n}_ratio_p10"));
        }
        names
    }

    fn missing(&self) -> Vec<String> {
        self.expected()
            .into_iter()
            .filter(|n| !self.figures.contains_key(n))
            .collect()
    }

    fn goals(&self) -> Vec<Goal> {
        let last = *scale_counts(self.quick).last().expect("a scale count");
        vec![
            Goal {
                id: "exec-overhead",
                what: "exec, enforce + cached permit, over no agent",
                value: self.get("exec.enforce_ratio"),
                target: 1.05,
                at_most: true,
                place: "vm",
            },
            Goal {
                id: "verify-per-core",
                what: "artifact verifications/s on one core (native)",
                value: self.get("verify.host.one_core_per_s"),
                target: 40_000.0,
                at_most: false,
                place: "host",
            },
            Goal {
                id: "submit-p99",
                what: "submit-to-enforced p99, ms",
                value: self.get("submit.p99_ms"),
                target: SUBMIT_P99_GOAL_MS,
                at_most: true,
                place: "vm",
            },
            Goal {
                id: "inbox-burst",
                what: "inbox burst per artifact over submit per artifact",
                value: self.ratio(
                    "inbox.burst_per_artifact_ms",
                    "inbox.submits_per_artifact_ms",
                ),
                target: 1.0,
                at_most: true,
                place: "vm",
            },
            Goal {
                id: "start-100k",
                what: "daemon start with 100,000 artifacts, s",
                value: if last == 100_000 {
                    self.get("scale.start_100000_s")
                } else {
                    None
                },
                target: START_100K_GOAL_S,
                at_most: true,
                place: "vm",
            },
            Goal {
                id: "exec-vs-permit-count",
                what: "exec with the most permits over exec with one",
                value: self.get(&format!("exec.permits_{last}_ratio")),
                target: 1.05,
                at_most: true,
                place: "vm",
            },
        ]
    }

    fn table(&self, kernel: &str) -> String {
        let mut t = Table::default();
        let us = |v: Option<f64>| v.map_or("missing".into(), |v| format!("{} µs", num(v)));
        let none = self.get("exec.none_us");
        let execs = self.n("exec.enforce_us");
        let rounds = self.n("exec.enforce_ratio");

        t.section(&format!(
            "1. exec overhead: fork+exec+wait of a 129-byte static program, median of {execs} in {rounds} rounds; ratio: of the medians, (a) measured before the agent starts and after it stops"
        ));
        t.row("(a) no agent", us(none), "", Some(1.0), "");
        t.row(
            "(b) enforce, permit, digest cached",
            us(self.get("exec.enforce_us")),
            "(a)",
            self.get("exec.enforce_ratio"),
            "<= 1.05",
        );
        t.row(
            "(c) audit, no permit (would-deny event)",
            us(self.get("exec.audit_us")),
            "(a)",
            self.get("exec.audit_ratio"),
            "",
        );
        t.row(
            "(a') busybox true (2 MB static), no agent",
            us(self.get("exec.busybox_none_us")),
            "",
            Some(1.0),
            "",
        );
        t.row(
            "(b') busybox true, enforce, permit, cached",
            us(self.get("exec.busybox_enforce_us")),
            "(a')",
            self.get("exec.busybox_ratio"),
            "",
        );

        let mb = self.get("big.bytes").map_or(50.0, |b| b / 1e6);
        t.section(&format!(
            "2. first exec of a {mb:.0} MB binary (SHA-256 in the kernel), median of {} copies",
            self.n("big.first_ms")
        ));
        t.row(
            "first exec (hashed)",
            self.get("big.first_ms")
                .map_or("missing".into(), |v| format!("{} ms", num(v))),
            "cached exec",
            self.ratio("big.first_ms", "big.cached_ms"),
            "",
        );
        t.row(
            "later exec (digest cached)",
            self.get("big.cached_ms")
                .map_or("missing".into(), |v| format!("{} ms", num(v))),
            "",
            None,
            "",
        );
        t.row(
            "in-kernel hashing rate",
            self.get("big.kernel_mb_s")
                .map_or("missing".into(), |v| format!("{} MB/s", num(v))),
            "userspace SHA-256",
            self.ratio("big.kernel_mb_s", "big.user_mb_s"),
            "",
        );

        t.section("3. artifact verification and submit-to-enforced latency");
        let cores = |p: &str| self.get(&format!("verify.{p}.cores")).unwrap_or(0.0);
        let per_s = |v: Option<f64>| v.map_or("missing".into(), |v| format!("{} /s", num(v)));
        t.row(
            "verify, 1 core, host (native)",
            per_s(self.get("verify.host.one_core_per_s")),
            "goal",
            self.get("verify.host.one_core_per_s").map(|v| v / 40_000.0),
            ">= 40,000/s",
        );
        t.row(
            &format!("verify, all {} cores, host", cores("host")),
            per_s(self.get("verify.host.all_cores_per_s")),
            "1 core",
            self.ratio("verify.host.all_cores_per_s", "verify.host.one_core_per_s"),
            "",
        );
        t.row(
            "verify_batch, 1 core, host",
            per_s(self.get("verify.host.batch_one_core_per_s")),
            "verify",
            self.ratio(
                "verify.host.batch_one_core_per_s",
                "verify.host.one_core_per_s",
            ),
            "",
        );
        t.row(
            "parse + verify, 1 core, host",
            per_s(self.get("verify.host.parse_one_core_per_s")),
            "verify",
            self.ratio(
                "verify.host.parse_one_core_per_s",
                "verify.host.one_core_per_s",
            ),
            "",
        );
        t.row(
            "verify, 1 core, VM",
            per_s(self.get("verify.vm.one_core_per_s")),
            "host",
            self.ratio("verify.vm.one_core_per_s", "verify.host.one_core_per_s"),
            "",
        );
        t.row(
            &format!("verify, all {} cores, VM", cores("vm")),
            per_s(self.get("verify.vm.all_cores_per_s")),
            "1 core",
            self.ratio("verify.vm.all_cores_per_s", "verify.vm.one_core_per_s"),
            "",
        );
        let ms = |v: Option<f64>| v.map_or("missing".into(), |v| format!("{} ms", num(v)));
        t.row(
            &format!(
                "submit-to-enforced p50, VM ({} submits)",
                self.n("submit.p50_ms")
            ),
            ms(self.get("submit.p50_ms")),
            "",
            None,
            "",
        );
        t.row(
            "submit-to-enforced p99, VM",
            ms(self.get("submit.p99_ms")),
            "goal",
            self.get("submit.p99_ms").map(|v| v / SUBMIT_P99_GOAL_MS),
            "<= 5 ms",
        );

        t.section("4. scale");
        let secs = |v: Option<f64>| v.map_or("missing".into(), |v| format!("{} s", num(v)));
        for n in scale_counts(self.quick) {
            let index = format!("scale.start_{n}_s");
            let full = format!("scale.start_{n}_full_s");
            let goal = *n == 100_000;
            t.row(
                &format!("daemon start, {} artifacts, sealed index", thousands(*n)),
                secs(self.get(&index)),
                if goal { "goal" } else { "" },
                if goal {
                    self.get(&index).map(|v| v / START_100K_GOAL_S)
                } else {
                    None
                },
                if goal { "<= 6 s" } else { "" },
            );
            t.row(
                "  every signature verified (no index)",
                secs(self.get(&full)),
                "sealed",
                self.ratio(&full, &index),
                "",
            );
            t.row(
                "  native floor: parse + batch-verify, all cores",
                secs(self.native_start_floor(*n as f64)),
                "",
                None,
                "",
            );
        }
        if self.quick {
            t.row(
                "daemon start, 100,000 artifacts",
                "not run (--quick)".into(),
                "",
                None,
                "<= 6 s",
            );
        }
        t.row(
            "kernel map memory per permit slot",
            self.get("map.bytes_per_permit")
                .map_or("missing".into(), |v| format!("{} B", num(v))),
            "",
            None,
            "",
        );
        t.row(
            "  at the default capacity (131,072)",
            self.get("map.default_capacity_mib")
                .map_or("missing".into(), |v| format!("{} MiB", num(v))),
            "",
            None,
            "",
        );
        t.row(
            "(d) exec, 1 permit (two daemons attached)",
            us(self.get("exec.permits_1_us")),
            "",
            None,
            "",
        );
        for n in scale_counts(self.quick) {
            let name = format!("exec.permits_{n}_us");
            t.row(
                &format!("(d) exec, {} permits loaded", thousands(*n)),
                us(self.get(&name)),
                "1 permit",
                self.get(&format!("exec.permits_{n}_ratio")),
                "<= 1.05",
            );
        }

        t.section("5. decision events (audit mode, the daemon reading the ring buffer)");
        t.row(
            "daemon drain rate",
            self.get("events.drain_per_s")
                .map_or("missing".into(), |v| format!("{} events/s", num(v))),
            "exec rate",
            self.ratio("events.drain_per_s", "events.sustained_per_s"),
            "",
        );
        t.row(
            &format!(
                "execs/s on {} threads, audit",
                self.get("events.threads").unwrap_or(0.0)
            ),
            self.get("events.sustained_per_s")
                .map_or("missing".into(), |v| format!("{} /s", num(v))),
            "",
            None,
            "",
        );
        t.row(
            "  events dropped meanwhile",
            self.get("events.sustained_dropped")
                .map_or("missing".into(), num),
            "",
            None,
            "0",
        );
        let burst = self.get("events.burst_execs").unwrap_or(0.0);
        let capacity = match (
            self.get("events.ring_capacity"),
            self.get("events.burst_dropped"),
        ) {
            (Some(c), Some(d)) if d > 0.0 => format!("{} events", num(c)),
            (Some(c), Some(_)) => format!(">= {} events", num(c)),
            _ => "missing".into(),
        };
        t.row(
            &format!("ring buffer, daemon stopped, {} execs", num(burst)),
            capacity,
            "",
            None,
            "",
        );

        t.section("6. fleet intake: the inbox directory");
        let ms = |v: Option<f64>| v.map_or("missing".into(), |v| format!("{} ms", num(v)));
        t.row(
            &format!(
                "inbox drop -> enforced p50, VM ({} drops)",
                self.n("inbox.drop_p50_ms")
            ),
            ms(self.get("inbox.drop_p50_ms")),
            "submit p50",
            self.ratio("inbox.drop_p50_ms", "inbox.submit_p50_ms"),
            "",
        );
        t.row(
            "inbox drop -> enforced p99, VM",
            ms(self.get("inbox.drop_p99_ms")),
            "submit p99",
            self.ratio("inbox.drop_p99_ms", "inbox.submit_p99_ms"),
            "",
        );
        t.row(
            &format!(
                "{} files dropped at once -> all live",
                self.get("inbox.burst_files").map_or("?".into(), num)
            ),
            self.get("inbox.burst_s")
                .map_or("missing".into(), |v| format!("{} s", num(v))),
            "",
            None,
            "",
        );
        t.row(
            "  per artifact",
            ms(self.get("inbox.burst_per_artifact_ms")),
            "submit",
            self.ratio(
                "inbox.burst_per_artifact_ms",
                "inbox.submits_per_artifact_ms",
            ),
            "<= 1.0",
        );

        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nauthz benchmarks{} — {kernel} under QEMU TCG, {VM_CPUS} vCPUs",
            if self.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(
            out,
            "Software emulation inflates absolute times (signature verification here: {}x slower in the VM than",
            self.emulation_factor().map_or("?".into(), num)
        );
        let _ = writeln!(
            out,
            "on the host); ratios of figures measured side by side in this run are what matter.\n"
        );
        out.push_str(&t.render());
        let _ = writeln!(out, "\ngoals:");
        for g in self.goals() {
            let verdict = match g.met() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let mut line = format!(
                "  {:<8} {:<46} {:>10} (goal {}, measured {})",
                verdict,
                g.what,
                g.value.map_or("-".into(), num),
                g.target_text(),
                if g.place == "vm" {
                    "in the VM"
                } else {
                    "on the host"
                }
            );
            if g.id == "start-100k" && g.met() == Some(false) {
                if let Some(floor) = self.native_start_floor(100_000.0) {
                    let _ = write!(
                        line,
                        "; natively >= {} s of CPU: parsing + batch-verifying on every core",
                        num(floor)
                    );
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let spread = self.get("exec.none_spread");
        let _ = writeln!(
            out,
            "\n(a) was measured in {} rounds; the slowest round's median is {} the fastest's (drift, noise).",
            self.n("exec.none_spread"),
            spread.map_or("?".into(), |s| format!("{}x", num(s)))
        );
        let last = scale_counts(self.quick).last().copied().unwrap_or(0);
        let p10 = |name: &str| self.get(name).map_or("?".into(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "Cross-check, ratios of the fastest 10% (load on the host only adds time): (b)/(a) {}, (c)/(a) {}, (d) {} permits / 1: {}.",
            p10("exec.enforce_ratio_p10"),
            p10("exec.audit_ratio_p10"),
            thousands(last),
            p10(&format!("exec.permits_{last}_ratio_p10"))
        );
        if let Some(share) = self.other_cpu.filter(|s| *s > 0.05) {
            let _ = writeln!(
                out,
                "warning: other processes used {:.0}% of the host's CPU time while the VM ran: the figures are noisy; run again on a quiet host.",
                share * 100.0
            );
        }
        if self.get("exec.cache_misses").is_some_and(|m| m > 0.0) {
            let _ = writeln!(
                out,
                "warning: {} digest cache misses during (b)/(c): those execs were hashed",
                num(self.get("exec.cache_misses").unwrap_or(0.0))
            );
        }
        out
    }

    fn json(
        &self,
        kernel: &str,
        loadavg: &str,
        git: Value,
        args: &BenchArgs,
        took: Duration,
    ) -> Value {
        let goals: Vec<Value> = self
            .goals()
            .iter()
            .map(|g| {
                json!({
                    "id": g.id, "what": g.what, "value": g.value, "target": g.target,
                    "at_most": g.at_most, "met": g.met(), "measured_in": g.place,
                })
            })
            .collect();
        let ratios = json!({
            "exec.enforce_over_none": self.get("exec.enforce_ratio"),
            "exec.audit_over_none": self.get("exec.audit_ratio"),
            "exec.busybox_enforce_over_none": self.get("exec.busybox_ratio"),
            "exec.enforce_over_none_p10": self.get("exec.enforce_ratio_p10"),
            "exec.audit_over_none_p10": self.get("exec.audit_ratio_p10"),
            "big.first_over_cached": self.ratio("big.first_ms", "big.cached_ms"),
            "big.kernel_over_user_hashing": self.ratio("big.kernel_mb_s", "big.user_mb_s"),
            "verify.host_all_over_one_core": self.ratio("verify.host.all_cores_per_s", "verify.host.one_core_per_s"),
            "emulation_factor": self.emulation_factor(),
            "native_start_100k_floor_s": self.native_start_floor(100_000.0),
            "exec.most_permits_over_one": self.goals().last().and_then(|g| g.value),
        });
        json!({
            "schema": 1,
            "quick": self.quick,
            "finished_unix": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "duration_s": took.as_secs_f64(),
            "git": git,
            "host": {
                "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "loadavg_before": loadavg,
                "other_cpu_share_during_vm": self.other_cpu,
            },
            "vm": { "kernel_package": kernel, "accel": "tcg", "cpus": VM_CPUS, "memory_mib": args.memory },
            "metrics": self
                .figures
                .iter()
                .map(|(k, f)| (k.clone(), json!({ "value": f.value, "unit": f.unit, "n": f.n })))
                .collect::<serde_json::Map<String, Value>>(),
            "ratios": ratios,
            "goals": goals,
        })
    }
}

/// `git rev-parse HEAD` and whether the tree had changes.
fn git_describe() -> Value {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    json!({
        "commit": run(&["rev-parse", "HEAD"]),
        "dirty": run(&["status", "--porcelain"]).map(|s| !s.is_empty()),
    })
}

/// A number with 3 significant digits (thousands separated when large).
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        let s = thousands(v.round().abs() as u64);
        if v < 0.0 {
            format!("-{s}")
        } else {
            s
        }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table: sections of rows (what, value, compared with, ratio, goal).
#[derive(Default)]
struct Table {
    lines: Vec<Option<[String; 5]>>,
    titles: Vec<String>,
}

impl Table {
    fn section(&mut self, title: &str) {
        self.titles.push(title.to_owned());
        self.lines.push(None);
    }

    fn row(&mut self, what: &str, value: String, vs: &str, ratio: Option<f64>, goal: &str) {
        let ratio = ratio.map_or(String::new(), |r| format!("{r:.3}"));
        self.lines.push(Some([
            what.to_owned(),
            value,
            vs.to_owned(),
            ratio,
            goal.to_owned(),
        ]));
    }

    fn render(&self) -> String {
        let head = ["measurement", "value", "vs", "ratio", "goal"];
        let mut w = head.map(|h| h.chars().count());
        for cells in self.lines.iter().flatten() {
            for (i, c) in cells.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let fmt = |cells: [&str; 5]| {
            let pad = |s: &str, n: usize| {
                format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())))
            };
            let lpad = |s: &str, n: usize| {
                format!("{}{s}", " ".repeat(n.saturating_sub(s.chars().count())))
            };
            format!(
                "  {}  {}  {}  {}  {}\n",
                pad(cells[0], w[0]),
                lpad(cells[1], w[1]),
                pad(cells[2], w[2]),
                lpad(cells[3], w[3]),
                cells[4]
            )
            .trim_end()
            .to_owned()
                + "\n"
        };
        let mut out = fmt(head);
        out.push_str(&format!(
            "  {}\n",
            "-".repeat(w.iter().sum::<usize>() + 8 + w[4].max(6) - w[4])
        ));
        let mut titles = self.titles.iter();
        for line in &self.lines {
            match line {
                None => out.push_str(&format!("{}\n", titles.next().map_or("", String::as_str))),
                Some(c) => out.push_str(&fmt([&c[0], &c[1], &c[2], &c[3], &c[4]])),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_result_lines() {
        let (name, f) = parse_metric(
            r#"AUTHZ-BENCH {"metric":"exec.none_us","n":3,"unit":"us","value":812.5}"#,
        )
        .unwrap();
        assert_eq!(name, "exec.none_us");
        assert_eq!((f.value, f.unit.as_str(), f.n), (812.5, "us", 3));
        assert!(parse_metric("AUTHZ-BENCH {garbled").is_none());
        assert!(parse_metric("something else").is_none());
    }

    #[test]
    fn a_missing_figure_is_reported() {
        let mut figures = Figures::new();
        let report = Report {
            figures: &figures,
            quick: true,
            other_cpu: None,
        };
        assert!(report.missing().contains(&"exec.none_us".to_owned()));
        for name in report.expected() {
            figures.insert(
                name,
                Figure {
                    value: 1.0,
                    unit: "x".into(),
                    n: 1,
                },
            );
        }
        let report = Report {
            figures: &figures,
            quick: true,
            other_cpu: None,
        };
        assert!(report.missing().is_empty());
        let full = Report {
            figures: &figures,
            quick: false,
            other_cpu: None,
        };
        assert!(full.missing().contains(&"scale.start_100000_s".to_owned()));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(40_000.4), "40,000");
        assert_eq!(num(812.46), "812");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.0412), "1.04");
        assert_eq!(num(0.0412), "0.041");
        assert_eq!(thousands(100_000), "100,000");
    }
}
