//! Issue 17's figures: how soon a permit dropped into the inbox directory is
//! enforced, against `submit` through the control socket in the same run;
//! and a burst of files dropped at once, per artifact, against the same
//! number submitted one by one.
//!
//! "Enforced" is read where the kernel reads it: the permit's row in the
//! pinned permit map, polled every 100 µs.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use authz_agent::enforcer::maps;
use authz_common::{Permit, PermitKey};
use authz_tests::daemon::Daemon;
use aya::maps::{HashMap, Map, MapData};

use crate::{
    daemon::submit,
    metric,
    scale::{digest_of, sign, Signer},
    Plan, Samples, Step,
};

/// How long a drop may take before the benchmark gives up.
const GIVE_UP: Duration = Duration::from_secs(600);

pub fn run(plan: &Plan) {
    let scratch = authz_tests::Scratch::new("bench-inbox");
    let inbox = scratch.dir.join("inbox");
    fs::create_dir_all(&inbox).expect("create the inbox");
    let d = {
        let _s = Step::new("starting the daemon with an inbox (enforce)");
        Daemon::start_with(
            "bench-inbox",
            "enforce",
            &format!("inbox_dir = \"{}\"\nmax_permits = 40000", inbox.display()),
        )
    };
    let signer = Signer::new(&d);
    let cgroup_id = fs::metadata(&d.cgroup_dir).expect("cgroup").ino();
    let permits = permit_map(&d.pin_dir);
    drop_latency(plan, &d, &signer, &inbox, &permits, cgroup_id);
    burst(plan, &d, &signer, &inbox, &scratch.dir, &permits, cgroup_id);
}

/// The daemon's pinned permit map, read-only use.
fn permit_map(pin_dir: &Path) -> HashMap<MapData, PermitKey, Permit> {
    let data = MapData::from_pin(authz_tests::daemon::maps_dir(pin_dir).join(maps::PERMITS))
        .expect("open the permit map");
    HashMap::try_from(Map::from_map_data(data).expect("map")).expect("permit map")
}

/// Waits for the row of `digest` to be in the kernel's map.
fn wait_enforced(permits: &HashMap<MapData, PermitKey, Permit>, digest: [u8; 32], cgroup_id: u64) {
    let key = PermitKey { digest, cgroup_id };
    let start = Instant::now();
    while permits.get(&key, 0).is_err() {
        assert!(
            start.elapsed() < GIVE_UP,
            "a dropped permit never went live"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// `n` permits in `cgroup` for the digests numbered from `base` (no file
/// has them: each its own kernel row), with those digests.
fn permits_for_new_digests(
    signer: &Signer,
    cgroup: &str,
    base: u64,
    n: usize,
) -> (
    Vec<[u8; 32]>,
    Vec<(authz_agent::artifact::ArtifactId, String)>,
) {
    let digests: Vec<[u8; 32]> = (0..n as u64).map(|i| digest_of(base + i)).collect();
    let texts = sign(&signer.key, cgroup, digests.iter().copied());
    (digests, texts)
}

/// Drops `text` as `name` the way config management does: a hidden
/// temporary file, renamed into place.
fn drop_file(inbox: &Path, name: &str, text: &str) {
    let temp = inbox.join(format!(".{name}.tmp"));
    fs::write(&temp, text).expect("write");
    fs::rename(&temp, inbox.join(name)).expect("rename into place");
}

/// Alternates one inbox drop and one socket submit, `plan.submits` of each.
fn drop_latency(
    plan: &Plan,
    d: &Daemon,
    signer: &Signer,
    inbox: &Path,
    permits: &HashMap<MapData, PermitKey, Permit>,
    cgroup_id: u64,
) {
    let n = plan.submits;
    let _s = Step::new(format!(
        "inbox drop to enforced, {n} drops alternating with {n} submits"
    ));
    let (digests, texts) = permits_for_new_digests(signer, &d.cgroup, 3 << 40, 2 * n);
    let (mut dropped, mut submitted) = (Samples::default(), Samples::default());
    for (i, pair) in texts.chunks(2).enumerate() {
        let t = Instant::now();
        drop_file(inbox, &format!("lat-{i:05}.permit"), &pair[0].1);
        wait_enforced(permits, digests[2 * i], cgroup_id);
        dropped.0.push(t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        let answer = submit(d, &pair[1].1);
        submitted.0.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(answer["state"], "live", "{answer}");
    }
    metric("inbox.drop_p50_ms", dropped.median(), "ms", dropped.len());
    metric(
        "inbox.drop_p99_ms",
        dropped.percentile(99.0),
        "ms",
        dropped.len(),
    );
    metric(
        "inbox.submit_p50_ms",
        submitted.median(),
        "ms",
        submitted.len(),
    );
    metric(
        "inbox.submit_p99_ms",
        submitted.percentile(99.0),
        "ms",
        submitted.len(),
    );
}

/// `plan.inbox_burst` files renamed in at once, timed until every row is in
/// the kernel; then as many submitted one by one through the socket.
#[allow(clippy::too_many_arguments)]
fn burst(
    plan: &Plan,
    d: &Daemon,
    signer: &Signer,
    inbox: &Path,
    scratch: &Path,
    permits: &HashMap<MapData, PermitKey, Permit>,
    cgroup_id: u64,
) {
    let n = plan.inbox_burst;
    let _s = Step::new(format!("{n} files dropped at once, then {n} submits"));
    let (digests, texts) = permits_for_new_digests(signer, &d.cgroup, 4 << 40, 2 * n);
    let staging = scratch.join("staging");
    fs::create_dir_all(&staging).expect("staging");
    for (i, (_, text)) in texts[..n].iter().enumerate() {
        fs::write(staging.join(format!("burst-{i:05}.permit")), text).expect("write");
    }
    let t = Instant::now();
    for i in 0..n {
        let name = format!("burst-{i:05}.permit");
        fs::rename(staging.join(&name), inbox.join(&name)).expect("rename");
    }
    let mut pending: Vec<[u8; 32]> = digests[..n].to_vec();
    while !pending.is_empty() {
        assert!(
            t.elapsed() < GIVE_UP,
            "{} of {n} dropped permits never went live",
            pending.len()
        );
        pending.retain(|digest| {
            permits
                .get(
                    &PermitKey {
                        digest: *digest,
                        cgroup_id,
                    },
                    0,
                )
                .is_err()
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for (_, text) in &texts[n..] {
        let answer = submit(d, text);
        assert_eq!(answer["state"], "live", "{answer}");
    }
    let submitted = t.elapsed().as_secs_f64();
    metric("inbox.burst_files", n as f64, "files", n);
    metric("inbox.burst_s", dropped, "s", n);
    metric(
        "inbox.burst_per_artifact_ms",
        dropped * 1e3 / n as f64,
        "ms",
        n,
    );
    metric(
        "inbox.submits_per_artifact_ms",
        submitted * 1e3 / n as f64,
        "ms",
        n,
    );
}
