//! Benchmarks for issue 3's two figures:
//!
//! - permit verification throughput on one core (goal: >= 40,000/s), for a
//!   root-signed permit and for a permit carrying a one-link delegation chain,
//!   with and without the [`Verifier`]'s cache of checked links, and with
//!   ed25519 batch verification ([`Verifier::verify_batch`]);
//! - streaming SHA-256 of a 256 MiB file against `sha256sum` on the same file
//!   in the same run (goal: at least as fast);
//! - issue 18's cold start, natively and without the kernel: loading 10,000
//!   stored permits with every signature verified (`verify_store`, every
//!   core) against loading them from the sealed verified index (`index::read`
//!   and `check_indexed`: one HMAC, a SHA-256 of each stored text, expiry and
//!   revocation checks).
//!
//! `cargo bench -p authz-agent --bench artifact` runs criterion's measurements
//! and then prints a summary with the headline numbers and the ratio.
//! `AUTHZ_BENCH_HASH_MIB` changes the file size (default 256).
use std::{
    hint::black_box,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use authz_agent::{
    artifact::{
        issue::hash_file, Artifact, ArtifactId, Body, CgroupPath, Provenance, Scope, Subject,
        Timestamp, Validity,
    },
    trust::{keys::generate, policy::RootKey, verify, TrustPolicy, Verifier},
    vocab::{
        delegation::{Delegation, Grant},
        keyid::KeyId,
    },
};
use criterion::{criterion_group, Criterion, Throughput};
use ed25519_dalek::SigningKey;

/// Distinct permits verified in turn, so that nothing is trivially cached.
const PERMITS: usize = 256;

struct Fixture {
    policy: TrustPolicy,
    root_signed: Vec<Artifact>,
    delegated: Vec<Artifact>,
    texts: Vec<String>,
    now: SystemTime,
}

fn cg(p: &str) -> CgroupPath {
    CgroupPath::normalize(p).expect("valid cgroup")
}

fn body(key: &SigningKey, now: Timestamp, chain: &Delegation) -> Body {
    Body {
        id: ArtifactId::random(),
        issued_at: now,
        policy_version: 1,
        issuer: KeyId::of(&key.verifying_key()),
        subject: Subject {
            sha256: [0x5a; 32],
            path: Some("/usr/bin/make".into()),
            name: Some("make".into()),
            exec_memory: false,
        },
        scope: Scope {
            cgroup: cg("/jobs.slice/team-a/build"),
            descendants: true,
        },
        validity: Validity {
            not_before: now,
            expires: now.checked_add(3_600).expect("in range"),
        },
        provenance: Provenance {
            requested_by: Some("ci-bot".into()),
            on_behalf_of: Some("team-a".into()),
            reason: Some("nightly build".into()),
        },
        libraries: Vec::new(),
        chain: chain.links().to_vec(),
        hosts: None,
    }
}

/// A policy trusting `root` for `/jobs.slice`.
fn policy_of(root: &SigningKey) -> TrustPolicy {
    TrustPolicy::new(
        1,
        vec![RootKey::new(
            Some("root".into()),
            root.verifying_key(),
            vec![cg("/jobs.slice")],
            7 * 86_400,
        )],
    )
}

/// `root` delegating `/jobs.slice/team-a` to `team` for 30 days.
fn team_delegation(root: &SigningKey, team: &SigningKey, now: Timestamp) -> Delegation {
    let grant = Grant {
        id: ArtifactId::random(),
        issued_at: now,
        policy_version: 1,
        issuer: KeyId::of(&root.verifying_key()),
        delegate_key: team.verifying_key(),
        cgroup_prefixes: vec![cg("/jobs.slice/team-a")],
        max_ttl_seconds: 86_400,
        not_before: now,
        expires: now.checked_add(30 * 86_400).expect("in range"),
        exec_memory: false,
        hosts: None,
    };
    Delegation::extend(None, grant, root).expect("valid delegation")
}

impl Fixture {
    fn new() -> Self {
        let (root, team) = (generate(), generate());
        let now = Timestamp::now();
        let policy = policy_of(&root);
        let delegation = team_delegation(&root, &team, now);
        let root_signed: Vec<Artifact> = (0..PERMITS)
            .map(|_| {
                let mut b = body(&root, now, &delegation);
                b.chain.clear();
                b.sign(&root).expect("signs")
            })
            .collect();
        let delegated: Vec<Artifact> = (0..PERMITS)
            .map(|_| body(&team, now, &delegation).sign(&team).expect("signs"))
            .collect();
        let texts = delegated.iter().map(Artifact::to_toml).collect();
        Self {
            policy,
            root_signed,
            delegated,
            texts,
            now: SystemTime::now(),
        }
    }
}

fn no_revocations(_: &ArtifactId) -> bool {
    false
}

fn bench_verify(c: &mut Criterion) {
    let f = Fixture::new();
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("root-signed", |b| {
        b.iter(|| {
            i = (i + 1) % PERMITS;
            verify(
                black_box(&f.root_signed[i]),
                &f.policy,
                &no_revocations,
                f.now,
            )
            .expect("valid")
        })
    });
    g.bench_function("one-link chain, every signature", |b| {
        b.iter(|| {
            i = (i + 1) % PERMITS;
            verify(
                black_box(&f.delegated[i]),
                &f.policy,
                &no_revocations,
                f.now,
            )
            .expect("valid")
        })
    });
    let verifier = Verifier::new(f.policy.clone());
    g.bench_function("one-link chain, Verifier (cached links)", |b| {
        b.iter(|| {
            i = (i + 1) % PERMITS;
            verifier
                .verify(black_box(&f.delegated[i]), &no_revocations, f.now)
                .expect("valid")
        })
    });
    g.throughput(Throughput::Elements(PERMITS as u64));
    g.bench_function("Verifier::verify_batch, root-signed", |b| {
        b.iter(|| verifier.verify_batch(black_box(&f.root_signed), &no_revocations, f.now))
    });
    g.bench_function("Verifier::verify_batch, one-link chain", |b| {
        b.iter(|| verifier.verify_batch(black_box(&f.delegated), &no_revocations, f.now))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse + Verifier, one-link chain", |b| {
        b.iter(|| {
            i = (i + 1) % PERMITS;
            let a = Artifact::parse(black_box(&f.texts[i])).expect("parses");
            verifier.verify(&a, &no_revocations, f.now).expect("valid")
        })
    });
    g.finish();
}

fn hash_mib() -> u64 {
    std::env::var("AUTHZ_BENCH_HASH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// A file of `mib` MiB of pseudo-random bytes, written once and reused.
fn hash_input(mib: u64) -> PathBuf {
    // Cargo names a scratch directory under target/ for benchmarks.
    let dir = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let path = dir.join(format!("authz-bench-{mib}MiB.bin"));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == mib << 20) {
        return path;
    }
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&path).expect("create bench file"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_exact_mut(8) {
            // xorshift64: incompressible enough for a hash benchmark.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&chunk).expect("write bench file");
    }
    file.flush().expect("flush bench file");
    path
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn bench_hash(c: &mut Criterion) {
    let mib = hash_mib();
    let path = hash_input(mib);
    assert_eq!(
        hex::encode(hash_file(&path).expect("hash")),
        sha256sum(&path),
        "digests differ"
    );
    let mut g = c.benchmark_group("sha256 file");
    g.throughput(Throughput::Bytes(mib << 20));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function(format!("authz hash_file {mib} MiB"), |b| {
        b.iter(|| hash_file(&path).expect("hash"))
    });
    g.bench_function(format!("sha256sum {mib} MiB"), |b| {
        b.iter(|| sha256sum(&path))
    });
    g.finish();
}

/// Stored permits in the cold-start comparison.
const STORED: usize = 10_000;

fn bench_coldstart(c: &mut Criterion) {
    use authz_agent::{
        daemon::{index, loader},
        store::StoredArtifact,
        trust::HostIdentity,
    };
    let root = generate();
    let now = Timestamp::now();
    let policy = policy_of(&root);
    let unused = team_delegation(&root, &generate(), now);
    let stored: Vec<StoredArtifact> = (0..STORED)
        .map(|i| {
            let mut b = body(&root, now, &unused);
            b.chain.clear();
            b.subject.sha256[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let a = b.sign(&root).expect("signs");
            StoredArtifact {
                id: a.id,
                path: PathBuf::from("x"),
                text: a.to_toml(),
            }
        })
        .collect();
    let verifier = Verifier::new(policy.clone());
    let at = SystemTime::now();
    let verified: Vec<_> = loader::verify_store(&verifier, &no_revocations, &stored, at)
        .into_iter()
        .map(|r| r.expect("valid"))
        .collect();
    let dir = std::env::temp_dir().join(format!("authz-bench-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = index::IndexKey::load_or_create(&dir).expect("index key");
    let bound = index::Bound::new(&policy, &HostIdentity::unknown(), [], &Default::default());
    index::write(
        &dir,
        &key,
        &bound,
        stored.iter().map(|s| s.text.as_str()).zip(&verified),
    )
    .expect("write the index");
    let mut g = c.benchmark_group("coldstart");
    g.sample_size(10);
    g.throughput(Throughput::Elements(STORED as u64));
    g.bench_function("every signature verified (verify_store)", |b| {
        b.iter(|| loader::verify_store(&verifier, &no_revocations, black_box(&stored), at))
    });
    g.bench_function("sealed index (read + check_indexed)", |b| {
        b.iter(|| {
            let index = index::read(&dir, &key, &bound).expect("usable index");
            let r = loader::check_indexed(&index, &no_revocations, black_box(&stored), at);
            assert!(r.iter().all(|r| matches!(r, Some(Ok(_)))));
            r
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_verify, bench_hash, bench_coldstart);

/// Per second for `f`, measured over at least `for_at_least`.
fn rate(for_at_least: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_at_least {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The headline figures, measured back to back in this process.
fn summary() {
    let f = Fixture::new();
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % PERMITS;
        i
    };
    let second = Duration::from_secs(2);
    let root = rate(second, || {
        black_box(
            verify(&f.root_signed[next()], &f.policy, &no_revocations, f.now).expect("valid"),
        );
    });
    let chain = rate(second, || {
        black_box(verify(&f.delegated[next()], &f.policy, &no_revocations, f.now).expect("valid"));
    });
    let verifier = Verifier::new(f.policy.clone());
    let cached = rate(second, || {
        black_box(
            verifier
                .verify(&f.delegated[next()], &no_revocations, f.now)
                .expect("valid"),
        );
    });
    let batch_root = PERMITS as f64
        * rate(second, || {
            black_box(verifier.verify_batch(&f.root_signed, &no_revocations, f.now));
        });
    let batch_chain = PERMITS as f64
        * rate(second, || {
            black_box(verifier.verify_batch(&f.delegated, &no_revocations, f.now));
        });
    println!("\n== summary (one thread) ==");
    println!("verify, root-signed:                 {root:>9.0} permits/s (goal 40000)");
    println!("verify, one-link chain:              {chain:>9.0} permits/s");
    println!("Verifier, one-link chain (cached):   {cached:>9.0} permits/s");
    println!("verify_batch, root-signed:           {batch_root:>9.0} permits/s");
    println!("verify_batch, one-link chain:        {batch_chain:>9.0} permits/s");

    let mib = hash_mib();
    let path = hash_input(mib);
    let bytes = (mib << 20) as f64;
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let ours = best(&|| {
        black_box(hash_file(&path).expect("hash"));
    });
    let theirs = best(&|| {
        black_box(sha256sum(&path));
    });
    let mb = |secs: f64| bytes / secs / 1e6;
    println!(
        "sha256 {mib} MiB, authz hash_file:     {:>9.0} MB/s",
        mb(ours)
    );
    println!(
        "sha256 {mib} MiB, sha256sum:           {:>9.0} MB/s",
        mb(theirs)
    );
    println!(
        "ratio authz / sha256sum:             {:>9.2}x (goal >= 1)",
        theirs / ours
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
