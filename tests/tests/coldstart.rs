//! The verified index (issue 18): a restart with an unchanged store loads
//! from the sealed index; an attacker who can write the state directory but
//! not read the index key cannot make a forged artifact load through it.
use std::fs;

use authz_tests::{
    daemon::{self, Daemon},
    *,
};
use sha2::{Digest as _, Sha256};

const INDEX: &str = "state/verified-index.json";
const USED: &str = "signatures are not checked again";
const BAD_SEAL: &str = "seal does not verify";

#[test]
fn a_forged_artifact_beside_a_valid_index_is_not_enforced_after_restart() {
    let mut d = Daemon::start("coldstart", "enforce");
    let scratch = Scratch::new("coldstart-jobs");
    let good = job(&scratch, "good");
    let evil = job(&scratch, "evil");
    let also = job(&scratch, "also");
    let p = d.issue(&good.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", p.to_str().unwrap()]);
    let q = d.issue(&also.path, &d.cgroup, "1h", &[]);
    d.ok(&["submit", q.to_str().unwrap()]);
    d.stop();
    // Unpinned: the next start creates empty maps and fills them in a batch.
    let out = std::process::Command::new(daemon::agent_bin())
        .args(["unload", "--pin-dir"])
        .arg(&d.pin_dir)
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ran(&evil.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // An unchanged store starts from the index.
    let index_path = d.dir.join(INDEX);
    assert!(index_path.exists(), "the index is written at stop");
    // The file's inode: the index is only ever replaced whole (renamed into
    // place), so a rewrite changes it even with the same bytes.
    let inode = || std::os::unix::fs::MetadataExt::ino(&fs::metadata(&index_path).unwrap());
    let before = inode();
    d.spawn();
    let log = d.log_text();
    assert_eq!(log.matches(USED).count(), 1, "{log}");
    // Rewriting it would cost a start as much as reading it (seconds at
    // 100,000 artifacts under emulation) for nothing.
    assert_eq!(inode(), before, "an unchanged start rewrote the index");
    assert!(
        log.contains("installed=2"),
        "both rows were written:\n{log}"
    );
    assert_ran(&good.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&also.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_eperm(&evil.run_in_cgroup(&d.cgroup_dir, &["true"]));
    d.stop();

    // While it is down, the attacker writes a forged permit for `evil` (the
    // good one's text with another id and digest: its signature no longer
    // matches) and lists it in the index, keeping the seal line, which they
    // cannot recompute without the key.
    let id = Daemon::artifact_id(&p);
    let forged_id = "00112233445566778899aabbccddeeff";
    let text = fs::read_to_string(&p).unwrap();
    let forged =
        text.replacen(&id, forged_id, 1)
            .replacen(&good.digest_hex(), &evil.digest_hex(), 1);
    assert!(forged.contains(forged_id) && forged.contains(&evil.digest_hex()));
    fs::write(
        d.dir.join(format!("state/artifacts/{forged_id}.toml")),
        &forged,
    )
    .unwrap();
    let raw = fs::read_to_string(&index_path).unwrap();
    let (seal, body) = raw.split_once('\n').unwrap();
    let mut index: serde_json::Value = serde_json::from_str(body).unwrap();
    let entries = index["entries"].as_array_mut().unwrap();
    assert_eq!(entries.len(), 2, "{body}");
    let mut entry = entries
        .iter()
        .find(|e| e["id"] == id.as_str())
        .unwrap()
        .clone();
    entry["id"] = forged_id.into();
    entry["digest"] = evil.digest_hex().into();
    entry["sha256"] = hex::encode(Sha256::digest(forged.as_bytes())).into();
    entries.push(entry);
    fs::write(&index_path, format!("{seal}\n{index}")).unwrap();

    d.spawn();
    let log = d.log_text();
    assert!(
        log.contains(BAD_SEAL),
        "the broken seal is reported:\n{log}"
    );
    assert_eq!(
        log.matches(USED).count(),
        1,
        "the edited index was used:\n{log}"
    );
    assert!(log.contains("no longer verifies"), "{log}");
    assert_eperm(&evil.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&good.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&also.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let list = d.json(&["list"]);
    assert_eq!(list["permits"].as_array().unwrap().len(), 2, "{list}");
}
