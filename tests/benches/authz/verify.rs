//! Issue 7, item 3, throughput: artifact verifications per second on one
//! core and on every core, measured on the host (native speed, what the goal
//! is about) and in the VM (the same code under emulation: the ratio of the
//! two is how much emulation slows userspace down in this run). The criterion
//! benchmark `cargo bench -p authz-agent --bench artifact` breaks the cost
//! down further (delegation chains, batch verification, hashing).
use std::{
    hint::black_box,
    time::{Duration, Instant, SystemTime},
};

use authz_agent::{
    artifact::{
        issue::{issue, Request},
        Artifact, Provenance, Scope, Subject,
    },
    trust::{keys::generate, RootKey, TrustPolicy, Verifier},
    vocab::time::Timestamp,
};

use crate::{metric, scale::digest_of, Plan, Step};

/// Distinct permits verified in turn.
const PERMITS: usize = 256;
/// Permits per `verify_batch` call (the daemon's batch size).
const BATCH: usize = authz_agent::trust::verify::BATCH;

/// Windows each rate is measured in; the best counts (the host is shared:
/// the best window is the one least disturbed by other work).
const WINDOWS: u32 = 5;

/// Calls `f(i)` for i = 0, 1, ... for `secs` in all; returns the calls per
/// second of the best window.
fn rate(secs: f64, mut f: impl FnMut(usize)) -> f64 {
    let window = Duration::from_secs_f64(secs / f64::from(WINDOWS));
    let mut n = 0;
    let mut best: f64 = 0.0;
    for _ in 0..WINDOWS {
        let start = Instant::now();
        let first = n;
        while start.elapsed() < window {
            for _ in 0..16 {
                f(n);
                n += 1;
            }
        }
        best = best.max((n - first) as f64 / start.elapsed().as_secs_f64());
    }
    best
}

pub fn run(plan: &Plan, place: &str) {
    let _s = Step::new(format!("artifact verification throughput ({place})"));
    let root = generate();
    let jobs = "/jobs.slice".parse().expect("cgroup");
    let policy = TrustPolicy::new(
        1,
        vec![RootKey::new(
            Some("bench".into()),
            root.verifying_key(),
            vec![jobs],
            7 * 86_400,
        )],
    );
    let now = Timestamp::now();
    let artifacts: Vec<Artifact> = (0..PERMITS as u64)
        .map(|i| {
            let request = Request {
                subject: Subject {
                    sha256: digest_of(i),
                    path: Some("/usr/bin/make".into()),
                    name: Some("make".into()),
                    exec_memory: false,
                },
                scope: Scope {
                    cgroup: "/jobs.slice/team-a/build".parse().expect("cgroup"),
                    descendants: true,
                },
                not_before: now,
                ttl_seconds: 3_600,
                policy_version: 1,
                provenance: Provenance {
                    requested_by: Some("ci-bot".into()),
                    on_behalf_of: Some("team-a".into()),
                    reason: Some("nightly build".into()),
                },
                libraries: Vec::new(),
            };
            issue(request, &root, None, now).expect("issue")
        })
        .collect();
    let texts: Vec<String> = artifacts.iter().map(Artifact::to_toml).collect();
    let verifier = Verifier::new(policy);
    let at = SystemTime::now();
    let verify_one = |i: usize| {
        black_box(
            verifier
                .verify(&artifacts[i % PERMITS], &|_| false, at)
                .expect("valid"),
        );
    };

    let one = rate(plan.verify_secs, verify_one);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all: f64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..cores)
            .map(|_| s.spawn(|| rate(plan.verify_secs, verify_one)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("verifier thread"))
            .sum()
    });
    let parsed = rate(plan.verify_secs, |i| {
        let a = Artifact::parse(&texts[i % PERMITS]).expect("parses");
        black_box(verifier.verify(&a, &|_| false, at).expect("valid"));
    });
    let batches = rate(plan.verify_secs, |i| {
        let from = (i * BATCH) % PERMITS;
        black_box(verifier.verify_batch(&artifacts[from..from + BATCH], &|_| false, at));
    }) * BATCH as f64;
    metric(&format!("verify.{place}.one_core_per_s"), one, "1/s", 1);
    metric(
        &format!("verify.{place}.batch_one_core_per_s"),
        batches,
        "1/s",
        1,
    );
    metric(
        &format!("verify.{place}.all_cores_per_s"),
        all,
        "1/s",
        cores,
    );
    metric(
        &format!("verify.{place}.cores"),
        cores as f64,
        "count",
        cores,
    );
    metric(
        &format!("verify.{place}.parse_one_core_per_s"),
        parsed,
        "1/s",
        1,
    );
}
