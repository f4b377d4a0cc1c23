//! Issue 7, item 4: the daemon started on a store of 10,000 and 100,000
//! artifacts (time until it answers on its socket, i.e. enforcing with every
//! permit installed), exec overhead with that many permits in the kernel's
//! map, and the kernel memory a permit costs.
use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use authz_agent::{
    artifact::{
        issue::{self, subject_for_binary},
        ArtifactId, Provenance, Scope, Subject,
    },
    enforcer::{pin, Enforcer, LoadOptions, Mode},
    store::Store,
    vocab::time::Timestamp,
};
use authz_tests::{daemon::Daemon, Scratch, TestCgroups};
use ed25519_dalek::SigningKey;

use crate::{
    daemon::{fmt_list, status, submit, Programs},
    exec::{Exec, InCgroup},
    metric, note, Plan, Samples, Step,
};

/// Signs permits with the daemon's root key, in process.
pub struct Signer {
    pub key: SigningKey,
    cgroup: String,
}

impl Signer {
    pub fn new(d: &Daemon) -> Self {
        Self {
            key: authz_agent::trust::keys::read_secret_key(&d.root.key).expect("read the root key"),
            cgroup: d.cgroup.clone(),
        }
    }

    /// A permit (TOML) for the program at `path` in the daemon's cgroup.
    pub fn permit_for(&self, path: &Path) -> String {
        let subject = subject_for_binary(path).expect("hash the program");
        artifact(&self.key, &self.cgroup, subject).1
    }
}

fn artifact(key: &SigningKey, cgroup: &str, subject: Subject) -> (ArtifactId, String) {
    let request = issue::Request {
        subject,
        scope: Scope {
            cgroup: cgroup.parse().expect("cgroup path"),
            descendants: false,
        },
        not_before: Timestamp::now(),
        ttl_seconds: 86_400,
        policy_version: 1,
        provenance: Provenance {
            requested_by: Some("bench".into()),
            on_behalf_of: None,
            reason: Some("cargo xtask bench".into()),
        },
        libraries: Vec::new(),
    };
    let a = issue::issue(request, key, None, Timestamp::now()).expect("issue");
    (a.id, a.to_toml())
}

/// A distinct digest for each `i` (no file has it).
pub fn digest_of(i: u64) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(i.to_le_bytes()).into()
}

/// Permits for `digests` in `cgroup`, signed on every core.
pub fn sign(
    key: &SigningKey,
    cgroup: &str,
    digests: impl Iterator<Item = [u8; 32]>,
) -> Vec<(ArtifactId, String)> {
    let digests: Vec<[u8; 32]> = digests.collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = digests.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = digests
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|d| {
                            artifact(
                                key,
                                cgroup,
                                Subject {
                                    sha256: *d,
                                    path: None,
                                    name: None,
                                    exec_memory: false,
                                },
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("signer"))
            .collect()
    })
}

/// For each count in `plan.scale`: fills the store of a stopped daemon up to
/// that many artifacts (each for another digest, so each a kernel entry),
/// times a cold start (no pinned state), then compares execs in its cgroup
/// with execs in the cgroup of a second daemon that holds one permit, in
/// alternating rounds. Both daemons' programs run on every exec (each
/// decides only for its own cgroup), so the comparison is symmetric.
pub fn run(plan: &Plan) {
    let scratch = Scratch::new("bench-scale");
    let programs = Programs::new(&scratch);
    let (mut d, few) = {
        let _s = Step::new("scale: preparing two daemons");
        (
            Daemon::start("scale", "enforce"),
            Daemon::start("few", "enforce"),
        )
    };
    submit(&few, &Signer::new(&few).permit_for(&programs.tiny));
    let signer = Signer::new(&d);
    d.kill9();
    pin::unload(&d.pin_dir).expect("unload");
    let store = Store::open(&d.dir.join("state")).expect("open the daemon's store");
    let (id, text) = artifact(
        &signer.key,
        &d.cgroup,
        subject_for_binary(&programs.tiny).expect("hash"),
    );
    store.save_artifact(&id, &text).expect("store");
    let mut stored = 1;
    let mut one = Samples::default();
    for &n in &plan.scale {
        {
            let _s = Step::new(format!(
                "scale: signing and storing {} more artifacts",
                n - stored
            ));
            let texts = sign(
                &signer.key,
                &d.cgroup,
                (stored as u64..n as u64).map(digest_of),
            );
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            std::thread::scope(|s| {
                for part in texts.chunks(texts.len().div_ceil(threads).max(1)) {
                    let store = &store;
                    s.spawn(move || {
                        for (id, text) in part {
                            store.save_artifact(id, text).expect("store");
                        }
                    });
                }
            });
            stored = n;
        }
        // The same store started twice, cold (no pinned state): first with
        // the verified index removed, so every signature is checked (and the
        // index written, as any start after a change does), then from the
        // sealed index that start wrote.
        let full = {
            let _s = Step::new(format!(
                "scale: cold start with {n} stored artifacts, every signature verified"
            ));
            match fs::remove_file(d.dir.join(INDEX)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("remove the verified index: {e}"),
            }
            start_timed(&mut d)
        };
        note_phases(&d, &format!("{n}, every signature verified"));
        expect_permits(&d, n);
        metric(&format!("scale.start_{n}_full_s"), full, "s", n);
        d.kill9();
        pin::unload(&d.pin_dir).expect("unload");
        let used = d.log_text().matches(INDEX_USED).count();
        let secs = {
            let _s = Step::new(format!(
                "scale: cold start with {n} stored artifacts, from the sealed index"
            ));
            start_timed(&mut d)
        };
        note_phases(&d, &format!("{n}, sealed index"));
        assert_eq!(
            d.log_text().matches(INDEX_USED).count(),
            used + 1,
            "the start did not use the verified index"
        );
        expect_permits(&d, n);
        metric(&format!("scale.start_{n}_s"), secs, "s", n);

        let _s = Step::new(format!(
            "exec with {n} permits against 1 permit, {} each",
            plan.execs
        ));
        let exec = Exec::new(&programs.tiny, &["tiny"]);
        let per_round = plan.execs / plan.rounds;
        let (mut few_samples, mut many, mut ratios) =
            (Samples::default(), Samples::default(), Vec::new());
        for dir in [&few.cgroup_dir, &d.cgroup_dir] {
            let _in = InCgroup::enter(dir);
            exec.samples(per_round / 5);
        }
        for _ in 0..plan.rounds {
            let a = {
                let _in = InCgroup::enter(&few.cgroup_dir);
                exec.once();
                exec.samples(per_round)
            };
            let b = {
                let _in = InCgroup::enter(&d.cgroup_dir);
                exec.once();
                exec.samples(per_round)
            };
            ratios.push(b.median() / a.median());
            few_samples.extend(a);
            many.extend(b);
        }
        metric(
            &format!("exec.permits_{n}_ratio_p10"),
            many.percentile(10.0) / few_samples.percentile(10.0),
            "ratio",
            many.len(),
        );
        one.extend(few_samples);
        note(format!(
            "per-round ({n} permits)/(1 permit): {}",
            fmt_list(&ratios)
        ));
        metric(
            &format!("exec.permits_{n}_us"),
            many.median(),
            "us",
            many.len(),
        );
        metric(
            &format!("exec.permits_{n}_ratio"),
            Samples(ratios).median(),
            "ratio",
            plan.rounds,
        );
        d.kill9();
        pin::unload(&d.pin_dir).expect("unload");
    }
    metric("exec.permits_1_us", one.median(), "us", one.len());
}

/// The verified index in the daemon's directory.
const INDEX: &str = "state/verified-index.json";
/// What the daemon logs when it starts from the verified index.
const INDEX_USED: &str = "signatures are not checked again";

/// Every one of the `n` stored artifacts is a kernel permit.
fn expect_permits(d: &Daemon, n: usize) {
    let st = status(d);
    assert_eq!(
        st["kernel_permit_entries"].as_u64(),
        Some(n as u64),
        "not every stored artifact became a kernel permit: {st}"
    );
}

/// Starts the daemon and returns the seconds until it is enforcing (it answers
/// on its control socket once every stored permit is in the kernel).
/// Prints where the daemon's last start spent its time, as it logged it
/// (milliseconds per phase, and within the store's load).
fn note_phases(d: &Daemon, what: &str) {
    let log = d.log_text();
    let last = |field: &str, line_has: &str| {
        log.lines()
            .rev()
            .find(|l| l.contains(line_has))
            .and_then(|l| l.split_once(field))
            .map_or_else(|| "-".to_owned(), |(_, v)| v.trim().to_owned())
    };
    note(format!(
        "start phases, ms ({what}): {}; store: {}",
        last("startup_ms=", "authz-agent enforcing"),
        last(" ms=", "store loaded")
    ));
}

fn start_timed(d: &mut Daemon) -> f64 {
    d.spawn_within(Duration::from_secs(900)).as_secs_f64()
}

/// Kernel memory per permit: the memory cgroup charge of loading the
/// programs with a small and with a large permit capacity, compared (median
/// of three loads each). The permit maps are preallocated, so this is the
/// cost of each slot of capacity (`agent.max_permits`), used or not.
pub fn map_memory() {
    const SMALL: u32 = 1024;
    const LARGE: u32 = 262_144;
    const DEFAULT: u32 = authz_common::DEFAULT_MAX_PERMITS;
    let _s = Step::new("kernel map memory per permit");
    fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")
        .expect("enable the memory controller");
    let cgroups = TestCgroups::new("bench-mem");
    let dir = cgroups.hierarchy.dir(&cgroups.base).expect("dir");
    let path = cgroups.base.clone();
    let _in = InCgroup::enter(&dir);
    let current = || -> i64 {
        fs::read_to_string(dir.join("memory.current"))
            .expect("memory.current")
            .trim()
            .parse()
            .expect("a number")
    };
    // Freed maps leave after an RCU grace period: wait until the charge
    // stops moving (or 5 s) before each reading.
    let settled = || -> i64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = current();
        let mut still = 0;
        while still < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = current();
            still = if (now - last).abs() < 64 * 1024 {
                still + 1
            } else {
                0
            };
            last = now;
        }
        last
    };
    let charge = |max_permits: u32| -> f64 {
        let runs: Vec<f64> = (0..3)
            .map(|_| {
                let before = settled();
                let enforcer = Enforcer::load(&LoadOptions {
                    mode: Mode::Off,
                    selftest: false,
                    max_permits,
                    enforced_paths: vec![path.clone()],
                    ..LoadOptions::default()
                })
                .expect("load the enforcer");
                let after = current();
                drop(enforcer);
                (after - before) as f64
            })
            .collect();
        Samples(runs).median()
    };
    charge(SMALL);
    let small = charge(SMALL);
    let large = charge(LARGE);
    let per = (large - small) / f64::from(LARGE - SMALL);
    note(format!(
        "memcg charge of a load: {small:.0} B at {SMALL} permits, {large:.0} B at {LARGE}"
    ));
    metric("map.bytes_per_permit", per, "B", 6);
    metric(
        "map.default_capacity_mib",
        per * f64::from(DEFAULT) / (1 << 20) as f64,
        "MiB",
        6,
    );
}
