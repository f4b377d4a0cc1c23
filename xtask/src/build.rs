//! Building the agent and the integration test binaries.
use std::{
    io::BufReader,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use cargo_metadata::{Artifact, Message};

use crate::{setup, util::workspace_root};

#[derive(Debug, Default, clap::Args)]
pub struct BuildArgs {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct Built {
    pub agent: PathBuf,
    /// Integration test binaries: (test target name, path).
    pub tests: Vec<(String, PathBuf)>,
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let built = build(args.release)?;
    eprintln!("build: agent {}", built.agent.display());
    for (name, path) in &built.tests {
        eprintln!("build: test {name} {}", path.display());
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the agent and the integration tests (installing the toolchain first).
pub fn build(release: bool) -> Result<Built> {
    let agent = build_agent(release)?;
    let mut cmd = cargo();
    cmd.args(["test", "-p", "authz-tests", "--no-run"]);
    if release {
        cmd.arg("--release");
    }
    let tests: Vec<(String, PathBuf)> = artifacts(&mut cmd, "building the integration tests")?
        .into_iter()
        .filter(|(_, _, test)| *test)
        .map(|(name, path, _)| (name, path))
        .collect();
    if tests.is_empty() {
        bail!("cargo built no integration test binaries for authz-tests");
    }
    Ok(Built { agent, tests })
}

/// Sets up the toolchain and builds the `authz-agent` binary (which embeds
/// the BPF object); returns its path.
pub fn build_agent(release: bool) -> Result<PathBuf> {
    setup::toolchain()?;
    let mut cmd = cargo();
    cmd.args(["build", "-p", "authz-agent", "--bins"]);
    let what = if release {
        cmd.arg("--release");
        "building authz-agent (release)"
    } else {
        "building authz-agent"
    };
    artifacts(&mut cmd, what)?
        .into_iter()
        .find(|(name, _, _)| name == "authz-agent")
        .map(|(_, path, _)| path)
        .context("cargo built no authz-agent binary")
}

/// Runs a cargo build with JSON messages; returns (target name, executable,
/// is a test) for every executable produced.
fn artifacts(cmd: &mut Command, what: &str) -> Result<Vec<(String, PathBuf, bool)>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: cannot start cargo"))?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut out = Vec::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        if let Message::CompilerArtifact(Artifact {
            executable: Some(exe),
            target,
            profile,
            ..
        }) = message.context("reading cargo's JSON output")?
        {
            out.push((target.name.clone(), exe.into_std_path_buf(), profile.test));
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(out)
}

/// For `cargo xtask bench`: the agent built with the release profile and the
/// `authz` benchmark binary of authz-tests (bench profile, optimized).
pub fn build_bench() -> Result<(PathBuf, PathBuf)> {
    let agent = build_agent(true)?;
    let mut cmd = cargo();
    cmd.args(["bench", "--no-run", "-p", "authz-tests", "--bench", "authz"]);
    let bench = artifacts(&mut cmd, "building the benchmarks")?
        .into_iter()
        .find(|(name, _, _)| name == "authz")
        .map(|(_, path, _)| path)
        .context("cargo built no `authz` benchmark binary")?;
    Ok((agent, bench))
}

/// Where the C test programs live inside the VM (their libraries' rpath).
pub const C_TESTS_IN_VM: &str = "/authz/c";

/// Builds the C programs and libraries the code-execution tests use
/// (tests/c: a preloaded library, ten libraries of a dynamically linked
/// program, a dlopen caller, a JIT...) with the host's gcc; returns the
/// directory holding them.
pub fn c_tests() -> Result<PathBuf> {
    let src = workspace_root().join("tests/c");
    let out = crate::util::target_dir().join("c-tests");
    std::fs::create_dir_all(&out)?;
    let gcc = |args: &[&str], what: &str| -> Result<()> {
        crate::util::run(
            Command::new("gcc")
                .args(["-O1", "-Wall", "-Werror"])
                .args(args)
                .current_dir(&src),
            &format!("building the C test program {what} (needs gcc)"),
        )
    };
    let o = |name: &str| out.join(name).to_string_lossy().into_owned();
    for n in 1..=10 {
        let lib = o(&format!("libauthz{n}.so"));
        gcc(
            &["-shared", "-fPIC", &format!("-DN={n}"), "lib.c", "-o", &lib],
            "lib.c",
        )?;
    }
    gcc(
        &["-shared", "-fPIC", "evil.c", "-o", &o("evil.so")],
        "evil.c",
    )?;
    let rpath = format!("-Wl,-rpath,{C_TESTS_IN_VM}");
    let libdir = format!("-L{}", out.display());
    let mut dyn_args = vec!["dynprog.c", "-o"];
    let dynprog = o("dynprog");
    dyn_args.push(&dynprog);
    dyn_args.push(&libdir);
    dyn_args.push(&rpath);
    let libs: Vec<String> = (1..=10).map(|n| format!("-lauthz{n}")).collect();
    dyn_args.extend(libs.iter().map(String::as_str));
    gcc(&dyn_args, "dynprog.c")?;
    for prog in ["payload", "dl", "jit", "mapfile", "pokemem"] {
        gcc(
            &[&format!("{prog}.c"), "-o", &o(prog)],
            &format!("{prog}.c"),
        )?;
    }
    Ok(out)
}
