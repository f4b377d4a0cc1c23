//! `cargo xtask deb`: the Debian package of the agent, built with dpkg-deb
//! from hand-written control files, then checked (its contents listed by
//! `dpkg-deb -c` against what it must hold, and lintian).
//!
//! What it installs:
//! - `/usr/sbin/authz-agent` (stripped);
//! - `/lib/systemd/system/authz-agent.service` (packaging/authz-agent.service);
//! - `/etc/authz/agent.toml`, the documented example config, as a conffile
//!   (dpkg keeps an administrator's edits across upgrades);
//! - man pages (section 8) and bash, zsh and fish completions, generated from
//!   the CLI definition ([`cli_docs`]);
//! - `/usr/share/doc/authz-agent/{copyright,changelog.Debian.gz}`.
//!
//! The maintainer scripts do what debhelper's would for a service: enable
//! the unit on first install (started at the next boot, or by hand once the
//! config names trust roots: the shipped config trusts nobody), restart it
//! after an upgrade if it was running (a restart re-adopts the pinned
//! programs: no gap), stop it on removal. Removal also unloads the pinned
//! programs (nothing could manage them once the binary is gone); purge
//! deletes the state directory and keeps the decision log.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    build,
    util::{self, stdout, target_dir, workspace_root},
};

/// The package's name (and the binary's, the unit's).
pub const PACKAGE: &str = "authz-agent";
/// Debian revision of the packaging around the upstream version.
const DEBIAN_REVISION: &str = "1";
/// Lintian tags accepted, each with the reason.
const LINTIAN_ACCEPTED: &[(&str, &str)] = &[(
    "initial-upload-closes-no-bugs",
    "built from the workspace, not uploaded to Debian: there is no ITP bug to close",
)];
/// The package's Maintainer (and the changelog's signer).
const MAINTAINER: &str = "authz developers <authz@example.org>";

/// Every path the package must install (besides the man pages of each
/// subcommand, checked by prefix).
pub const INSTALLED: &[&str] = &[
    "./usr/sbin/authz-agent",
    "./lib/systemd/system/authz-agent.service",
    "./etc/authz/agent.toml",
    "./usr/share/man/man8/authz-agent.8.gz",
    "./usr/share/bash-completion/completions/authz-agent",
    "./usr/share/zsh/vendor-completions/_authz-agent",
    "./usr/share/fish/vendor_completions.d/authz-agent.fish",
    "./usr/share/doc/authz-agent/copyright",
    "./usr/share/doc/authz-agent/changelog.Debian.gz",
];

#[derive(Debug, clap::Args)]
pub struct DebArgs {
    /// Package the debug build instead of the release build.
    #[arg(long)]
    pub debug: bool,
    /// Skip lintian (the contents are still checked).
    #[arg(long)]
    pub no_lintian: bool,
}

/// `cargo xtask deb`.
pub fn run(args: &DebArgs) -> Result<std::process::ExitCode> {
    crate::setup::deb_tools()?;
    let agent = build::build_agent(!args.debug)?;
    let deb = package(&agent, !args.debug)?;
    check(&deb, !args.no_lintian)?;
    println!("{}", deb.display());
    Ok(std::process::ExitCode::SUCCESS)
}

/// Builds the package around `agent` (a binary of the `release` or debug
/// profile, which also decides how the man pages are generated); returns
/// the .deb's path under target/deb/.
pub fn package(agent: &Path, release: bool) -> Result<PathBuf> {
    let version = format!("{}-{DEBIAN_REVISION}", env!("CARGO_PKG_VERSION"));
    let arch = stdout(
        Command::new("dpkg").arg("--print-architecture"),
        "asking dpkg for the architecture",
    )?;
    let out = target_dir().join("deb");
    let root = out.join("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(&root)?;
    let put = |dest: &str, contents: &[u8], mode: u32| -> Result<()> {
        let path = root.join(dest);
        fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let packaging = workspace_root().join("packaging");
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = packaging.join(name);
        fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };

    fs::create_dir_all(root.join("usr/sbin"))?;
    util::output(
        Command::new("strip")
            .arg("--strip-unneeded")
            .arg("-o")
            .arg(root.join("usr/sbin/authz-agent"))
            .arg(agent),
        "stripping the agent for the package",
    )?;
    fs::set_permissions(
        root.join("usr/sbin/authz-agent"),
        fs::Permissions::from_mode(0o755),
    )?;
    put(
        "lib/systemd/system/authz-agent.service",
        &read("authz-agent.service")?,
        0o644,
    )?;
    put("etc/authz/agent.toml", &read("agent.toml")?, 0o644)?;

    let docs = out.join("cli-docs");
    cli_docs(agent, release, &docs)?;
    let mut pages: Vec<PathBuf> = fs::read_dir(docs.join("man"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    if pages.is_empty() {
        bail!("no man page was generated");
    }
    for page in &pages {
        let name = page
            .file_name()
            .and_then(|n| n.to_str())
            .context("man page name")?;
        put(
            &format!("usr/share/man/man8/{name}.gz"),
            &gzip(&fs::read(page)?)?,
            0o644,
        )?;
    }
    let completions = docs.join("completions");
    for (file, dest) in [
        (
            "authz-agent.bash",
            "usr/share/bash-completion/completions/authz-agent",
        ),
        (
            "_authz-agent",
            "usr/share/zsh/vendor-completions/_authz-agent",
        ),
        (
            "authz-agent.fish",
            "usr/share/fish/vendor_completions.d/authz-agent.fish",
        ),
    ] {
        put(dest, &fs::read(completions.join(file))?, 0o644)?;
    }
    put(
        "usr/share/doc/authz-agent/copyright",
        COPYRIGHT.as_bytes(),
        0o644,
    )?;
    put(
        "usr/share/doc/authz-agent/changelog.Debian.gz",
        &gzip(changelog(&version).as_bytes())?,
        0o644,
    )?;

    // Control files.
    let depends = shlib_depends(&root.join("usr/sbin/authz-agent"), &out)?;
    let installed_kib = tree_kib(&root)?;
    let control = root.join("DEBIAN");
    fs::create_dir_all(&control)?;
    let put_control = |name: &str, text: &str, mode: u32| -> Result<()> {
        let path = control.join(name);
        fs::write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put_control(
        "control",
        &format!(
            "Package: {PACKAGE}\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: {MAINTAINER}\n\
             Installed-Size: {installed_kib}\n\
             Depends: {depends}, init-system-helpers (>= 1.54~), procps\n\
             Section: admin\n\
             Priority: optional\n\
             Description: fail-closed exec authorization for Linux (BPF LSM)\n \
             authz refuses every execve whose binary (by SHA-256, computed by the\n \
             kernel) carries no valid signed permit for the caller's cgroup. A BPF\n \
             LSM program decides every exec from kernel maps; this daemon verifies\n \
             signed, expiring, delegable permits and installs them, keeps a\n \
             hash-chained decision log, and leaves enforcement pinned in the kernel\n \
             when it stops or crashes.\n"
        ),
        0o644,
    )?;
    put_control("conffiles", "/etc/authz/agent.toml\n", 0o644)?;
    put_control("md5sums", &md5sums(&root)?, 0o644)?;
    put_control("postinst", POSTINST, 0o755)?;
    put_control("prerm", PRERM, 0o755)?;
    put_control("postrm", POSTRM, 0o755)?;

    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    util::output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb),
        "building the package with dpkg-deb",
    )?;
    Ok(deb)
}

/// Man pages (`DIR/man/*.8`) and completions (`DIR/completions/`) of the
/// agent's command line. The one place that knows how they are made: from
/// the binary itself when it has `man` and `completions` commands, else
/// from the CLI definition by `authz-agent/examples/cli-docs.rs` (clap_mangen,
/// clap_complete), built in the profile of `agent`.
pub fn cli_docs(agent: &Path, release: bool, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    let has = |sub: &str| {
        Command::new(agent)
            .args([sub, "--help"])
            .env("AUTHZ_LOG", "off")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("man") && has("completions") {
        let man = dir.join("man");
        fs::create_dir_all(&man)?;
        util::output(
            Command::new(agent)
                .args(["man", "--out"])
                .arg(&man)
                .env("AUTHZ_LOG", "off"),
            "generating the man pages (authz-agent man)",
        )?;
        let completions = dir.join("completions");
        fs::create_dir_all(&completions)?;
        for (shell, file) in [
            ("bash", "authz-agent.bash"),
            ("zsh", "_authz-agent"),
            ("fish", "authz-agent.fish"),
        ] {
            let out = util::output(
                Command::new(agent)
                    .args(["completions", shell])
                    .env("AUTHZ_LOG", "off"),
                &format!("generating the {shell} completions"),
            )?;
            fs::write(completions.join(file), out.stdout)?;
        }
        return Ok(());
    }
    let mut cmd = build::cargo();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "authz-agent",
        "--example",
        "cli-docs",
    ]);
    if release {
        cmd.arg("--release");
    }
    util::run(
        cmd.arg("--").arg(dir).current_dir(workspace_root()),
        "generating man pages and completions (examples/cli-docs.rs)",
    )
}

/// `Depends:` for the binary's shared libraries, from dpkg-shlibdeps.
fn shlib_depends(binary: &Path, scratch: &Path) -> Result<String> {
    // dpkg-shlibdeps wants to run in a source tree: give it the smallest one.
    let src = scratch.join("shlibdeps");
    fs::create_dir_all(src.join("debian"))?;
    fs::write(
        src.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let out = stdout(
        Command::new("dpkg-shlibdeps")
            .args(["-O", "--warnings=0"])
            .arg(binary)
            .current_dir(&src),
        "computing library dependencies (dpkg-shlibdeps)",
    )?;
    let depends = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?
        .trim()
        .to_owned();
    if depends.is_empty() {
        bail!("dpkg-shlibdeps found no library dependency for a dynamically linked binary");
    }
    Ok(depends)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// Every regular file below `root` outside DEBIAN/.
fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if path != root.join("DEBIAN") {
                    stack.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn md5sums(root: &Path) -> Result<String> {
    let mut text = String::new();
    for file in files(root)? {
        let rel = file.strip_prefix(root)?;
        if rel.starts_with("etc") {
            continue; // conffiles have their own sums
        }
        let sum = stdout(
            Command::new("md5sum").arg(&file),
            &format!("md5sum {}", file.display()),
        )?;
        let sum = sum.split_whitespace().next().unwrap_or_default();
        text.push_str(&format!("{sum}  {}\n", rel.display()));
    }
    Ok(text)
}

fn tree_kib(root: &Path) -> Result<u64> {
    let mut bytes = 0;
    for file in files(root)? {
        bytes += fs::metadata(&file)?.len().div_ceil(1024) * 1024;
    }
    Ok(bytes / 1024)
}

fn changelog(version: &str) -> String {
    format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
         * Built by cargo xtask deb from the authz workspace.\n\n \
         -- {MAINTAINER}  Thu, 01 Jan 2026 00:00:00 +0000\n"
    )
}

/// Checks a built package: `dpkg-deb -c` holds every path in [`INSTALLED`]
/// with the right owner and modes, the conffile is declared, and lintian
/// (when `lintian`) finds nothing beyond [`LINTIAN_ACCEPTED`].
pub fn check(deb: &Path, lintian: bool) -> Result<()> {
    let listing = stdout(
        Command::new("dpkg-deb").arg("-c").arg(deb),
        "listing the package (dpkg-deb -c)",
    )?;
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            // mode owner/group size date time path
            (fields.len() >= 6).then(|| (fields[0], fields[1], fields[5]))
        })
        .collect();
    for want in INSTALLED {
        let Some((mode, owner, _)) = entries.iter().find(|(_, _, p)| p == want) else {
            bail!("{} lacks {want}; it holds:\n{listing}", deb.display());
        };
        if *owner != "root/root" {
            bail!(
                "{want} in {} belongs to {owner}, not root/root",
                deb.display()
            );
        }
        let executable = *want == "./usr/sbin/authz-agent";
        let expected = if executable {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        if *mode != expected {
            bail!(
                "{want} in {} has mode {mode}, not {expected}",
                deb.display()
            );
        }
    }
    let pages = entries
        .iter()
        .filter(|(_, _, p)| p.starts_with("./usr/share/man/man8/authz-agent-"))
        .count();
    if pages == 0 {
        bail!("{} has no man page for any subcommand", deb.display());
    }
    let conffiles = stdout(
        Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"),
        "reading the package's conffiles",
    )?;
    if conffiles.trim() != "/etc/authz/agent.toml" {
        bail!("the package's conffiles are {conffiles:?}, not /etc/authz/agent.toml");
    }
    eprintln!(
        "deb: {} holds {} paths, {} man pages; conffile /etc/authz/agent.toml",
        deb.display(),
        entries.len(),
        pages + 1
    );
    if lintian {
        run_lintian(deb)?;
    }
    Ok(())
}

fn run_lintian(deb: &Path) -> Result<()> {
    let suppressed: Vec<&str> = LINTIAN_ACCEPTED.iter().map(|(tag, _)| *tag).collect();
    let mut cmd = Command::new("lintian");
    cmd.args(["--fail-on", "error,warning", "--tag-display-limit", "0"]);
    if !suppressed.is_empty() {
        cmd.arg("--suppress-tags").arg(suppressed.join(","));
    }
    let out = cmd
        .arg(deb)
        .output()
        .context("running lintian (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "lintian found problems in {}:\n{}{}",
            deb.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let notes = text.lines().count();
    eprintln!(
        "deb: lintian: no errors or warnings{}",
        if notes > 0 {
            format!(" ({notes} informational notes:\n{text})")
        } else {
            String::new()
        }
    );
    Ok(())
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: authz

Files: *
Copyright: 2025-2026 the authz developers
License: Apache-2.0

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
";

/// Enables the unit on first install (as dh_installsystemd does); after an
/// upgrade, restarts it if it runs (re-adopting the pinned programs: no gap).
/// Not started on first install: the shipped config trusts no key yet.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]; then
    deb-systemd-helper unmask 'authz-agent.service' >/dev/null || true
    if deb-systemd-helper --quiet was-enabled 'authz-agent.service'; then
        deb-systemd-helper enable 'authz-agent.service' >/dev/null || true
    else
        deb-systemd-helper update-state 'authz-agent.service' >/dev/null || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then
            deb-systemd-invoke try-restart 'authz-agent.service' >/dev/null || true
        else
            echo "authz-agent: add a [[trust.roots]] key to /etc/authz/agent.toml, then: systemctl start authz-agent"
        fi
    fi
fi
exit 0
"#;

/// Stops the agent on removal and unloads its pinned programs: with the
/// binary gone, nothing could manage them. An upgrade stops nothing.
const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = "remove" ]; then
    if [ -d /run/systemd/system ]; then
        deb-systemd-invoke stop 'authz-agent.service' >/dev/null || true
    fi
    if command -v authz-agent >/dev/null; then
        echo "authz-agent: removing the pinned programs: authz stops enforcing on this host"
        authz-agent unload || true
    fi
fi
exit 0
"#;

/// Purge removes the unit's enablement and the state (keys, permits,
/// revocations); the decision log in /var/log/authz is kept as evidence.
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ]; then
    deb-systemd-helper mask 'authz-agent.service' >/dev/null || true
fi
if [ "$1" = "purge" ]; then
    deb-systemd-helper purge 'authz-agent.service' >/dev/null || true
    deb-systemd-helper unmask 'authz-agent.service' >/dev/null || true
    rm -rf /var/lib/authz
fi
exit 0
"#;
