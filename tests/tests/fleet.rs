//! Issue 17 on a real kernel: signed revocation lists, applied through the
//! real CLI (`revocations issue`, `submit`).
use std::path::Path;

use authz_tests::{daemon::Daemon, *};

fn refused(d: &Daemon, file: &Path) -> String {
    let out = d.cli(&["submit", file.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "{} was applied: {}",
        file.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_revocation_list_revokes_everything_it_names_and_an_older_serial_is_refused() {
    let mut d = Daemon::start("revlist", "enforce");
    let scratch = Scratch::new("revlist-jobs");
    let (a, b, c) = (job(&scratch, "a"), job(&scratch, "b"), job(&scratch, "c"));
    let team = d.delegate("team", &d.cgroup, "1h", "2h", &[]);
    let pa = d.issue(&a.path, &d.cgroup, "1h", &[]);
    let pb = d.issue_as(&team, &b.path, &d.cgroup, "1h", &[]);
    let pc = d.issue(&c.path, &d.cgroup, "1h", &[]);
    for p in [&pa, &pb, &pc] {
        d.ok(&["submit", p.to_str().unwrap()]);
    }
    for j in [&a, &b, &c] {
        assert_ran(&j.run_in_cgroup(&d.cgroup_dir, &["true"]));
    }
    let entries = |d: &Daemon| {
        d.json(&["status"])["kernel_permit_entries"]
            .as_u64()
            .unwrap()
    };
    let before = entries(&d);

    // Root-signed list 5: permit a, and the team's delegation (so permit b).
    let a_id = Daemon::artifact_id(&pa);
    let five = d.revocation_list(&d.root.key, 5, &[&a_id, &team.link_id], &[]);
    let out = d.ok(&["submit", five.to_str().unwrap()]);
    assert!(
        out.contains("2 revoked") && out.contains("2 artifacts removed"),
        "{out}"
    );
    assert_eperm(&a.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_eperm(&b.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&c.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let after = entries(&d);
    assert!(
        after < before && after > 0,
        "kernel entries {before} -> {after}"
    );
    let permits = d.json(&["list"])["permits"].as_array().unwrap().clone();
    assert_eq!(permits.len(), 1, "{permits:?}");
    assert_eq!(permits[0]["id"], Daemon::artifact_id(&pc).as_str());

    // The same list again changes nothing; an older serial is refused.
    let out = d.ok(&["submit", five.to_str().unwrap()]);
    assert!(out.contains("applied before"), "{out}");
    let c_id = Daemon::artifact_id(&pc);
    let four = d.revocation_list(&d.root.key, 4, &[&c_id], &[]);
    let err = refused(&d, &four);
    assert!(err.contains("[stale-serial]"), "{err}");
    assert_ran(&c.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // A revoked delegate can no longer sign lists.
    let team_key = team.keys.key.clone();
    let delegation = team.delegation.to_str().unwrap().to_owned();
    let by_team = d.revocation_list(&team_key, 1, &[&c_id], &["--delegation", &delegation]);
    let err = refused(&d, &by_team);
    assert!(err.contains("[revoked]"), "{err}");
    assert_ran(&c.run_in_cgroup(&d.cgroup_dir, &["true"]));

    // Resubmitting a revoked permit is refused; all of it survives a restart.
    let err = refused(&d, &pa);
    assert!(err.contains("[revoked]"), "{err}");
    d.stop();
    d.spawn();
    assert_eperm(&a.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_eperm(&b.run_in_cgroup(&d.cgroup_dir, &["true"]));
    assert_ran(&c.run_in_cgroup(&d.cgroup_dir, &["true"]));
    let err = refused(&d, &four);
    assert!(err.contains("[stale-serial]"), "{err}");
    let err = refused(&d, &pb);
    assert!(err.contains("[revoked]"), "{err}");
}
