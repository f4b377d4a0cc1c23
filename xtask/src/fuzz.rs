//! `cargo xtask fuzz`: runs every cargo-fuzz target in fuzz/ for a bounded
//! time, with nightly and AddressSanitizer, and fails loudly on any crash.
//!
//! cargo-fuzz is installed under target/fuzz-tools the first time. Each target
//! keeps its growing corpus in fuzz/corpus/TARGET (git-ignored), starts from the
//! committed seeds in fuzz/seeds/TARGET, and uses the dictionary
//! fuzz/authz.dict. A crash leaves its input in fuzz/artifacts/TARGET/.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::util::{self, target_dir, workspace_root};

/// cargo-fuzz release installed when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// How long to fuzz each target, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Fuzz only this target (repeatable); default: every target in fuzz/.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Send libFuzzer's progress to target/fuzz/<target>.log instead of the
    /// terminal (used by `cargo xtask test`); a crash still prints its tail.
    #[arg(skip)]
    pub quiet: bool,
}

pub fn run(args: &FuzzArgs) -> Result<ExitCode> {
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    // The fuzz targets link the agent, whose build compiles the eBPF object.
    crate::setup::toolchain()?;
    let cargo_fuzz = cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("fuzz");
    let all = list_targets(&cargo_fuzz, &fuzz_dir)?;
    let targets = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?} (there are: {})", all.join(", "));
            }
        }
        args.targets.clone()
    };

    eprintln!("fuzz: building the fuzz targets with nightly and AddressSanitizer");
    util::run(
        nightly(&cargo_fuzz, &fuzz_dir)
            .arg("build")
            .arg("--target-dir")
            .arg(fuzz_target_dir()),
        "building the fuzz targets",
    )?;

    let mut crashed = Vec::new();
    for target in &targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        let seeds = fuzz_dir.join("seeds").join(target);
        eprintln!("fuzz: {target}: {} s", args.seconds);
        let started = Instant::now();
        let mut cmd = nightly(&cargo_fuzz, &fuzz_dir);
        cmd.args(["run", target])
            .arg("--target-dir")
            .arg(fuzz_target_dir())
            .arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-dict={}", fuzz_dir.join("authz.dict").display()))
            // An input that takes seconds is a bug too (a quadratic parser).
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-print_funcs=0")
            .arg("-print_final_stats=1");
        let log = fuzz_target_dir().join(format!("{target}.log"));
        if args.quiet {
            fs::create_dir_all(fuzz_target_dir())?;
            let f = fs::File::create(&log)
                .with_context(|| format!("cannot create {}", log.display()))?;
            cmd.stdout(f.try_clone()?).stderr(f);
        }
        let status = cmd
            .status()
            .with_context(|| format!("cannot start {}", util::describe(&cmd)))?;
        if args.quiet && !status.success() {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        if status.success() {
            eprintln!(
                "fuzz: {target}: no crash in {:.0} s ({} inputs in the corpus)",
                started.elapsed().as_secs_f64(),
                count_files(&corpus)
            );
        } else {
            let artifacts = fuzz_dir.join("artifacts").join(target);
            eprintln!(
                "fuzz: {target}: CRASHED ({status}); inputs kept in {}",
                artifacts.display()
            );
            eprintln!(
                "fuzz: reproduce with: cd fuzz && cargo +nightly fuzz run {target} {}/<crash file>",
                artifacts.display()
            );
            crashed.push(target.clone());
        }
    }
    if !crashed.is_empty() {
        bail!("fuzz target(s) crashed: {}", crashed.join(", "));
    }
    eprintln!(
        "fuzz: {} target(s), {} s each: no crashes",
        targets.len(),
        args.seconds
    );
    Ok(ExitCode::SUCCESS)
}

/// Where fuzz builds go: under target/, which CI caches.
fn fuzz_target_dir() -> PathBuf {
    target_dir().join("fuzz")
}

/// `cargo fuzz` run with the nightly toolchain in `fuzz_dir`.
fn nightly(cargo_fuzz: &Path, fuzz_dir: &Path) -> Command {
    // `rustup run nightly` puts nightly's cargo first on PATH, which is the
    // `cargo` cargo-fuzz runs, even when this process was started by stable.
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly"])
        .arg(cargo_fuzz)
        .arg("fuzz")
        .current_dir(fuzz_dir)
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// The cargo-fuzz binary, installed under target/fuzz-tools when missing.
fn cargo_fuzz() -> Result<PathBuf> {
    let root = target_dir().join("fuzz-tools");
    let binary = root.join("bin/cargo-fuzz");
    if Command::new(&binary)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(binary);
    }
    eprintln!(
        "fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} under {}",
        root.display()
    );
    util::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
                "--root",
            ])
            .arg(&root)
            .env("CARGO_TARGET_DIR", root.join("build")),
        "installing cargo-fuzz",
    )?;
    Ok(binary)
}

/// Target names, as `cargo fuzz list` prints them.
fn list_targets(cargo_fuzz: &Path, fuzz_dir: &Path) -> Result<Vec<String>> {
    let out = util::stdout(
        nightly(cargo_fuzz, fuzz_dir).arg("list"),
        "listing fuzz targets",
    )?;
    let targets: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("fuzz/ has no fuzz targets");
    }
    Ok(targets)
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.filter(|e| e.is_ok()).count())
}
