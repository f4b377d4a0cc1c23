//! `cargo xtask test`: unit tests on the host, then the integration tests
//! against a real kernel, one test per process, one at a time.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    build::{self, cargo},
    setup,
    util::workspace_root,
    vm::{self, Boot, Initramfs},
};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
    /// Run only the integration tests whose `binary::test` name contains this
    /// string (e.g. `daemon::` or `revoke`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Skip the host unit tests.
    #[arg(long)]
    pub vm_only: bool,
    /// Run the integration tests in the VM even if this host could run them.
    #[arg(long)]
    pub force_vm: bool,
    /// Seconds of fuzzing per fuzz target (0: skip fuzzing).
    #[arg(long, default_value_t = 20)]
    pub fuzz_seconds: u64,
    /// Kill a VM boot after this many seconds (0: 5 minutes plus 90 s per
    /// test it runs; a test taking over 10 minutes is killed inside the VM).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
}

/// Running totals.
#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(name.to_owned());
        }
    }
}

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let setup = setup::run()?;
    let mut tally = Tally::default();

    if !args.vm_only {
        unit_tests(&mut tally)?;
        if args.fuzz_seconds > 0 {
            eprintln!(
                "test: fuzzing every parser for {} s per target",
                args.fuzz_seconds
            );
            let fuzz = crate::fuzz::run(&crate::fuzz::FuzzArgs {
                seconds: args.fuzz_seconds,
                targets: Vec::new(),
                quiet: true,
            });
            match fuzz {
                Ok(code) if code == ExitCode::SUCCESS => tally.record("fuzz: every target", true),
                Ok(_) => tally.record("fuzz: every target", false),
                Err(e) => {
                    eprintln!("test: fuzz: {e:#}");
                    tally.record("fuzz: every target", false);
                }
            }
        }
    }

    let built = build::build(args.release)?;
    let filter = args.filter.clone().unwrap_or_default();
    let problem = match host_can_enforce(&built.agent) {
        Ok(()) if !args.force_vm => {
            eprintln!("test: this host runs BPF LSM programs; integration tests run here");
            host_integration_tests(&built, &filter, &mut tally)
        }
        other => {
            if let Err(reason) = other {
                eprintln!("test: this host cannot run the BPF LSM program ({reason}); integration tests run in the VM");
            }
            vm_integration_tests(
                &setup,
                &built,
                &filter,
                args.timeout,
                args.release,
                &mut tally,
            )
        }
    };

    if !tally.failures.is_empty() {
        eprintln!("\nfailed:");
        for f in &tally.failures {
            eprintln!("    {f}");
        }
    }
    if let Err(e) = &problem {
        eprintln!("\ntest: error: {e:#}");
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 && problem.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo test` over every host-side crate; counts libtest's summary lines.
fn unit_tests(tally: &mut Tally) -> Result<()> {
    eprintln!("test: unit tests (host)");
    let mut child = cargo()
        .args([
            "test",
            "--workspace",
            "--exclude",
            "authz-tests",
            "--exclude",
            "authz-ebpf",
            "--no-fail-fast",
        ])
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut summaries = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((passed, failed)) = parse_summary(&line) {
            summaries += 1;
            tally.passed += passed;
            tally.failed += failed;
        }
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            tally.failures.push(format!("unit: {name}"));
        }
    }
    let status = child.wait()?;
    if !status.success() && tally.failed == 0 {
        // A build failure or a crashed test binary: count it, never hide it.
        tally.record(
            "unit tests: cargo test failed before reporting results",
            false,
        );
    }
    if summaries == 0 {
        tally.record("unit tests: no test results reported", false);
    }
    Ok(())
}

/// `test result: ok. 12 passed; 0 failed; ...` -> (12, 0).
fn parse_summary(line: &str) -> Option<(usize, usize)> {
    let rest = line.strip_prefix("test result: ")?;
    let number_before = |word: &str| -> Option<usize> {
        let idx = rest.find(word)?;
        rest[..idx]
            .trim_end()
            .rsplit([' ', '.', ';'])
            .next()?
            .parse()
            .ok()
    };
    Some((number_before(" passed")?, number_before(" failed")?))
}

/// Whether this host can load, attach and self-test the program.
fn host_can_enforce(agent: &Path) -> Result<()> {
    let out = Command::new(agent)
        .args(["check", "--json"])
        .env("AUTHZ_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .context("running authz-agent check")?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    bail!("{}", msg.trim().trim_start_matches("authz-agent: error: "))
}

fn host_integration_tests(built: &build::Built, filter: &str, tally: &mut Tally) -> Result<()> {
    let mut ran = 0;
    // The `ima` tests need a kernel booted with an IMA policy, the `systemd`
    // ones systemd as PID 1 and the package installed: the VM's job.
    for (name, bin) in built
        .tests
        .iter()
        .filter(|(name, _)| name != "ima" && name != "systemd")
    {
        for test in list_tests(bin)? {
            if !format!("{name}::{test}").contains(filter) {
                continue;
            }
            ran += 1;
            let status = Command::new(bin)
                .args(["--exact", &test, "--test-threads=1", "--nocapture"])
                .env("AUTHZ_AGENT_BIN", &built.agent)
                .status()?;
            tally.record(&format!("{name}::{test}"), status.success());
        }
    }
    if ran == 0 {
        bail!("no integration test matched the filter {filter:?}");
    }
    Ok(())
}

fn list_tests(bin: &Path) -> Result<Vec<String>> {
    let out = crate::util::output(
        Command::new(bin).args(["--list", "--format", "terse"]),
        &format!("listing the tests in {}", bin.display()),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

/// Runs inside the VM: each test of each binary in its own process.
const RUNNER: &str = r#"filter="$1"
export AUTHZ_AGENT_BIN=/usr/local/bin/authz-agent RUST_BACKTRACE=1 AUTHZ_IN_VM=1
for bin in /authz/tests/*; do
    name=$(basename "$bin")
    tests=$("$bin" --list --format terse | sed -n 's/: test$//p')
    for t in $tests; do
        case "$name::$t" in *"$filter"*) ;; *) continue ;; esac
        echo "AUTHZ-TEST-START $name $t"
        timeout 600 "$bin" --exact "$t" --test-threads=1 --nocapture
        echo "AUTHZ-TEST-RESULT $name $t $?"
    done
done
echo AUTHZ-TESTS-DONE
"#;

/// One VM boot of the integration tests: which test binaries run in it,
/// on which image and with which kernel command line. Tests that need no
/// particular setup share the first boot.
struct VmBoot {
    /// Prefix of the test names this boot reports (empty for the first).
    label: &'static str,
    cmdline: &'static str,
    image: Image,
    /// Test binaries (`tests/tests/<name>.rs`) that run in this boot.
    runs: fn(&str) -> bool,
}

/// What a boot runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Image {
    /// busybox as /init, the agent in /usr/local/bin (xtask/src/vm.rs).
    Busybox,
    /// Debian with systemd as PID 1 and the agent's Debian package to
    /// install (xtask/src/systemd_vm.rs).
    Systemd,
}

/// The boots, in order. The second proves the content checks and the digest
/// cache under an IMA policy that measures (and caches hashes of) executed
/// files; the `ima` binary's tests need that policy and run only there. The
/// third runs the real service under systemd, from the Debian package.
const BOOTS: &[VmBoot] = &[
    VmBoot {
        label: "",
        cmdline: "",
        image: Image::Busybox,
        runs: |bin| bin != "ima" && bin != "systemd",
    },
    VmBoot {
        label: "ima_policy=tcb/",
        cmdline: "ima_policy=tcb",
        image: Image::Busybox,
        runs: |bin| matches!(bin, "ima" | "digest_cache" | "content"),
    },
    VmBoot {
        label: "systemd/",
        cmdline: crate::systemd_vm::CMDLINE,
        image: Image::Systemd,
        runs: |bin| bin == "systemd",
    },
];

/// The longest a systemd boot may take: its tests take minutes, and a boot
/// that hangs should fail well before the suite's own limit.
const SYSTEMD_BOOT_TIMEOUT_SECS: u64 = 900;

/// A VM boot's time limit when none is given: boot and setup, plus
/// [`PER_TEST_SECS`] for each test it runs.
const BOOT_BASE_SECS: u64 = 300;
const PER_TEST_SECS: u64 = 90;

fn vm_integration_tests(
    setup: &setup::Setup,
    built: &build::Built,
    filter: &str,
    timeout: u64,
    release: bool,
    tally: &mut Tally,
) -> Result<()> {
    let mut any = false;
    for boot in BOOTS {
        let tests: Vec<(String, std::path::PathBuf, usize)> = built
            .tests
            .iter()
            .filter(|(name, _)| (boot.runs)(name))
            .map(|(name, bin)| {
                let n = list_tests(bin)?
                    .iter()
                    .filter(|t| format!("{}{name}::{t}", boot.label).contains(filter))
                    .count();
                Ok((name.clone(), bin.clone(), n))
            })
            .collect::<Result<_>>()?;
        let expected: usize = tests.iter().map(|(_, _, n)| n).sum();
        if expected == 0 {
            continue;
        }
        any = true;
        // A boot runs dozens of tests one after another (each under its own
        // 10-minute limit inside the VM): a fixed limit that fit 40 tests cut
        // a run of 86 short on a loaded machine.
        let timeout = if timeout == 0 {
            BOOT_BASE_SECS + PER_TEST_SECS * expected as u64
        } else {
            timeout
        };
        let (initrd, timeout) = match boot.image {
            Image::Busybox => (
                busybox_image(setup, &built.agent, &tests, filter, boot)?,
                timeout,
            ),
            Image::Systemd => {
                // The package the VM installs, checked first (a result of its own).
                let deb = crate::deb::package(&built.agent, release)
                    .and_then(|deb| crate::deb::check(&deb, true).map(|()| deb));
                tally.record("deb::package_contents_and_lintian", deb.is_ok());
                let deb = deb?;
                (
                    systemd_image(&deb, &tests, filter, boot)?,
                    timeout.min(SYSTEMD_BOOT_TIMEOUT_SECS),
                )
            }
        };
        let started = std::time::Instant::now();
        let ran = vm_boot_tests(setup, initrd, boot, expected, timeout, tally);
        eprintln!(
            "test: {} boot took {:.0} s",
            if boot.label.is_empty() {
                "first"
            } else {
                boot.label.trim_end_matches('/')
            },
            started.elapsed().as_secs_f64()
        );
        ran?;
    }
    if !any {
        bail!("no integration test matched the filter {filter:?}");
    }
    Ok(())
}

/// The test binaries and C programs (without filtering) with /authz/cmd.
fn add_tests(
    image: &mut Initramfs,
    tests: &[(String, std::path::PathBuf, usize)],
    filter: &str,
    boot: &VmBoot,
    with_libraries: bool,
) -> Result<()> {
    for (name, bin, n) in tests {
        if *n > 0 {
            let dest = format!("/authz/tests/{name}");
            if with_libraries {
                image.add_binary(bin, &dest)?;
            } else {
                image.add_executable(bin, &dest)?;
            }
        }
    }
    image.add_file("/authz/run-tests.sh", RUNNER.as_bytes(), 0o755)?;
    // The runner matches `binary::test`: this boot's label is not part of it.
    let inner = filter.strip_prefix(boot.label).unwrap_or(filter);
    let cmd = format!(
        "sh /authz/run-tests.sh {}\n",
        crate::util::shell_quote(inner)
    );
    image.add_file("/authz/cmd", cmd.as_bytes(), 0o644)
}

/// The busybox initramfs for a boot: the agent, the tests, the C programs.
fn busybox_image(
    setup: &setup::Setup,
    agent: &Path,
    tests: &[(String, std::path::PathBuf, usize)],
    filter: &str,
    boot: &VmBoot,
) -> Result<std::path::PathBuf> {
    let mut initramfs = Initramfs::new("test", agent, setup)?;
    add_tests(&mut initramfs, tests, filter, boot, true)?;
    let c_tests = build::c_tests()?;
    for entry in std::fs::read_dir(&c_tests)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        initramfs.add_file(
            &format!("{}/{name}", build::C_TESTS_IN_VM),
            &std::fs::read(&path)?,
            0o755,
        )?;
    }
    initramfs.pack()
}

/// The systemd image for a boot: Debian's root filesystem (cached), the
/// package to install at /authz/authz-agent.deb, the tests.
fn systemd_image(
    deb: &Path,
    tests: &[(String, std::path::PathBuf, usize)],
    filter: &str,
    boot: &VmBoot,
) -> Result<std::path::PathBuf> {
    let base = crate::systemd_vm::base_image()?;
    let mut overlay = crate::systemd_vm::overlay("systemd-test")?;
    overlay.add_file(
        "/authz/authz-agent.deb",
        &std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?,
        0o644,
    )?;
    // The image's own libraries serve the test binary (same Debian release).
    add_tests(&mut overlay, tests, filter, boot, false)?;
    crate::systemd_vm::initrd(&base, &overlay.pack()?)
}

fn vm_boot_tests(
    setup: &setup::Setup,
    initrd: std::path::PathBuf,
    boot: &VmBoot,
    expected: usize,
    timeout: u64,
    tally: &mut Tally,
) -> Result<()> {
    let boot_cfg = Boot {
        kernel: setup.kernel.clone(),
        initrd,
        memory: 2048,
        cpus: 2,
        timeout: Some(Duration::from_secs(timeout)),
        cmdline: boot.cmdline.to_owned(),
    };
    eprintln!(
        "test: booting {}{} for {expected} integration tests",
        setup.kernel_package,
        if boot.cmdline.is_empty() {
            String::new()
        } else {
            format!(" with {}", boot.cmdline)
        }
    );

    let mut results = 0;
    let mut done = false;
    let mut inside = false;
    let outcome = vm::boot(&boot_cfg, |line| {
        if line.starts_with(vm::READY) {
            inside = true;
            eprintln!("{line}");
            return;
        }
        if let Some(rest) = line.strip_prefix("AUTHZ-TEST-RESULT ") {
            let mut parts = rest.rsplitn(2, ' ');
            let rc = parts.next().unwrap_or_default();
            let name = format!(
                "{}{}",
                boot.label,
                parts.next().unwrap_or_default().replacen(' ', "::", 1)
            );
            let ok = rc == "0";
            results += 1;
            tally.record(&name, ok);
            println!("{} {name}", if ok { "PASS" } else { "FAIL" });
        } else if line == "AUTHZ-TESTS-DONE" {
            done = true;
        } else if inside {
            println!("    {line}");
        }
    })?;
    let code = outcome.require_completed()?;
    if code != 0 {
        bail!("the test runner inside the VM exited with {code}");
    }
    if !done {
        bail!("the VM stopped before the test runner finished");
    }
    if results != expected {
        bail!("expected {expected} integration test results from the VM, got {results}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summaries() {
        assert_eq!(
            parse_summary("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"),
            Some((12, 0))
        );
        assert_eq!(
            parse_summary(
                "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((3, 2))
        );
        assert_eq!(parse_summary("running 3 tests"), None);
    }
}
