//! `cargo xtask`: everything around the code — toolchain setup, builds, the QEMU
//! VM that runs a real kernel with BPF LSM, the test suite, the demo.
mod bench;
mod build;
mod deb;
mod fuzz;
mod setup;
mod systemd_vm;
mod test;
mod util;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what building and testing need; quick when already done.
    ///
    /// nightly's rust-src (for `-Z build-std=core`), bpf-linker built against the
    /// nightly toolchain's own LLVM (under target/bpf-toolchain), QEMU, busybox and
    /// cpio from Debian packages, dpkg-dev, lintian and mmdebstrap (the Debian
    /// package and the systemd VM image), and Debian's kernel image (resolved
    /// through apt, cached under target/vm). build, test, vm and demo run it first.
    Setup,
    /// Build the agent (with the BPF object embedded) and the integration tests.
    Build(build::BuildArgs),
    /// Run every test: unit tests on the host, then the integration tests against
    /// a real kernel (inside the QEMU VM unless this host can run BPF LSM).
    ///
    /// Ends with the line `N passed, N failed`; exits non-zero on any failure, or
    /// when the VM did not boot, timed out, or reported no results.
    Test(test::TestArgs),
    /// Boot the VM (Debian's kernel, BPF LSM active) with the freshly built agent.
    ///
    /// `cargo xtask vm -- CMD...` runs CMD (through `sh -c` when it is a single
    /// word list) and passes back its output and exit status; without CMD it gives
    /// an interactive shell on the VM's console (leave with `exit` or Ctrl-D).
    /// Inside: authz-agent in PATH; cgroup2, bpffs and securityfs mounted.
    Vm(vm::VmArgs),
    /// Build the Debian package (agent in /usr/sbin, the systemd unit, the
    /// example config as a conffile, man pages, completions) and check it.
    ///
    /// Writes target/deb/authz-agent_<version>_<arch>.deb and prints its
    /// path; checks its contents (dpkg-deb -c) and runs lintian. The
    /// systemd VM boot of `cargo xtask test` installs it.
    Deb(deb::DebArgs),
    /// Show authz working: boot the VM and run the scripted demo.
    Demo(vm::DemoArgs),
    /// Fuzz the artifact, delegation, key and trust-policy parsers for a
    /// bounded time; fail loudly on a crash.
    ///
    /// Installs cargo-fuzz under target/fuzz-tools when missing, builds every
    /// target in fuzz/ with nightly and AddressSanitizer, then runs each for
    /// --seconds (default 60) from the seeds in fuzz/seeds. Exits non-zero
    /// when any target crashes; the crashing input is kept in fuzz/artifacts.
    ///
    /// Example: cargo xtask fuzz --seconds 30
    Fuzz(fuzz::FuzzArgs),
    /// Measure what authz costs and print one table (see docs/benchmarks.md).
    ///
    /// Exec overhead (no agent / enforce / audit), first exec of a 50 MB
    /// binary, verification throughput, submit-to-enforced latency, daemon
    /// start with 10,000 and 100,000 artifacts, map memory per permit and
    /// decision-event throughput: userspace figures natively on the host, the
    /// rest in the VM with the real daemon, side by side in one run. Writes
    /// the figures to target/bench/latest.json; exits non-zero when the VM
    /// failed or a figure is missing (missed goals are reported, not failed).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| ExitCode::SUCCESS),
        Command::Build(args) => build::run(&args).map(|_| ExitCode::SUCCESS),
        Command::Test(args) => test::run(&args),
        Command::Vm(args) => vm::run(&args),
        Command::Demo(args) => vm::demo(&args),
        Command::Deb(args) => deb::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
