//! Proof that the attached hook fires, computes a digest and refuses.
//!
//! An attached program that never runs (wrong hook, LSM disabled at boot, a
//! kernel that accepts but ignores it) would otherwise look exactly like a
//! working one. So after attaching, the agent execs a probe from a private
//! cgroup the program is told to always refuse, and checks three things: the
//! exec failed with EPERM, the kernel reported the decision *from the copy
//! just attached* (its instance id: on a restart the previous copy is still
//! attached and refuses the probe too), and the digest it computed equals the
//! probe's SHA-256 computed here.
//!
//! The probe is a memfd sealed against writes, shrinking and growth: the
//! kernel refuses to run content that can still change after the check
//! (`mutable-content`), and a sealed memfd is exactly content that cannot.
use std::{
    ffi::CString,
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use sha2::{Digest as _, Sha256};

use super::{Enforcer, EnforcerError, Reason};
use crate::cgroup::Hierarchy;

/// How long the kernel's event may take to arrive (generous: TCG VMs are slow).
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Probe attempts when the kernel dropped the probe's event because the ring
/// was full (events queued while no agent was running, or a flood of execs).
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SelfTestError {
    #[error("cannot prepare the self-test cgroup")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("cannot create the self-test probe file")]
    Probe(#[source] io::Error),
    #[error("the probe exec was not refused: {0}. The program attached but did not deny, so it cannot be trusted to enforce")]
    NotDenied(String),
    #[error("the probe exec was refused but the kernel reported no decision within {0:?}")]
    NoEvent(Duration),
    #[error("the probe exec was refused but its decision event was dropped on all {0} attempts (event ring full); something is flooding the ring with execs")]
    EventsDropped(u32),
    #[error("cannot read the kernel's dropped-event counter")]
    Counters(#[source] Box<EnforcerError>),
    #[error("the probe exec was refused for another reason than the self-test ({0}); the program cannot be trusted to decide")]
    WrongReason(String),
    #[error("the kernel could not compute the probe's SHA-256 (bpf_ima_file_hash returned {0}); every exec would be refused")]
    NoDigest(i32),
    #[error("the kernel's SHA-256 of the probe ({kernel}) differs from userspace's ({user})")]
    DigestMismatch { kernel: String, user: String },
}

/// What the self-test saw.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SelfTestReport {
    pub digest: String,
}

/// Runs the self-test; leaves no cgroup and no configuration behind.
#[tracing::instrument(skip_all)]
pub fn run(enforcer: &mut Enforcer, cgroup_root: &Path) -> Result<SelfTestReport, EnforcerError> {
    let hierarchy = Hierarchy::open(cgroup_root).map_err(SelfTestError::Cgroup)?;
    let name = format!("/authz-selftest-{}", std::process::id());
    let cgroup_id = hierarchy.create(&name).map_err(SelfTestError::Cgroup)?;
    enforcer.set_selftest_cgroup(cgroup_id)?;
    let result = probe(enforcer, &hierarchy, &name, cgroup_id);
    let cleared = enforcer.set_selftest_cgroup(0);
    let removed = hierarchy.remove(&name);
    let report = result?;
    cleared?;
    removed.map_err(SelfTestError::Cgroup)?;
    tracing::info!(digest = %report.digest, "self-test passed: the hook refused the probe exec");
    Ok(report)
}

fn probe(
    enforcer: &mut Enforcer,
    hierarchy: &Hierarchy,
    cgroup: &str,
    cgroup_id: u64,
) -> Result<SelfTestReport, SelfTestError> {
    // The probe is not in any executable format: even if the hook did not fire,
    // nothing would run (the exec would fail with ENOEXEC instead of EPERM).
    let nonce: [u8; 16] = rand_bytes();
    let content = format!(
        "authz self-test probe {}: not an executable format\n",
        hex::encode(nonce)
    );
    let user_digest = hex::encode(Sha256::digest(content.as_bytes()));

    let name = CString::new("authz-selftest").expect("no NUL");
    let fd = nix::sys::memfd::memfd_create(
        name.as_c_str(),
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| SelfTestError::Probe(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(content.as_bytes())
        .map_err(SelfTestError::Probe)?;
    seal(&file).map_err(SelfTestError::Probe)?;
    let probe_path = format!("/proc/self/fd/{}", file.as_raw_fd());

    let mut attempt = 1;
    let event = loop {
        // Room on the ring first: after a restart it may hold what the kernel
        // queued while no agent was running. Those events stay queued here
        // for the daemon's log.
        enforcer.absorb_events();
        let dropped = events_dropped(enforcer)?;
        exec_probe(hierarchy, cgroup, &probe_path)?;
        let instance = enforcer.instance();
        let found = enforcer.wait_event(EVENT_TIMEOUT, |ev| {
            ev.cgroup_id == cgroup_id && ev.instance == instance
        });
        if let Some(event) = found {
            break event;
        }
        let dropped_now = events_dropped(enforcer)?;
        if dropped_now == dropped {
            return Err(SelfTestError::NoEvent(EVENT_TIMEOUT));
        }
        if attempt == ATTEMPTS {
            return Err(SelfTestError::EventsDropped(ATTEMPTS));
        }
        tracing::warn!(
            attempt,
            "the probe's decision event was dropped (event ring full); probing again"
        );
        attempt += 1;
    };
    if event.reason != Reason::Selftest {
        return Err(SelfTestError::WrongReason(event.reason.to_string()));
    }
    let kernel_digest = event
        .digest
        .ok_or(SelfTestError::NoDigest(event.hash_status))?;
    if kernel_digest != user_digest {
        return Err(SelfTestError::DigestMismatch {
            kernel: kernel_digest,
            user: user_digest,
        });
    }
    // Keep the file alive until here: the exec path refers to its fd.
    drop(file);
    Ok(SelfTestReport {
        digest: kernel_digest,
    })
}

fn events_dropped(enforcer: &Enforcer) -> Result<u64, SelfTestError> {
    enforcer
        .events_dropped()
        .map_err(|e| SelfTestError::Counters(Box::new(e)))
}

/// Execs the probe from the self-test cgroup; Ok only if the exec was
/// refused with EPERM.
fn exec_probe(hierarchy: &Hierarchy, cgroup: &str, probe_path: &str) -> Result<(), SelfTestError> {
    let procs = hierarchy.procs_file(cgroup)?;
    let procs_fd = procs.as_raw_fd();
    let mut cmd = Command::new(probe_path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls
    // write(2) on an fd opened before the fork, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let zero = b"0";
            let n = libc::write(procs_fd, zero.as_ptr().cast(), zero.len());
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.spawn() {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => {
            return Err(SelfTestError::NotDenied(format!(
                "the exec failed with {e}"
            )))
        }
        Ok(mut child) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SelfTestError::NotDenied("the exec succeeded".into()));
        }
    }
    drop(procs);
    Ok(())
}

/// Seals the probe's content: no write (through any descriptor), no shrink,
/// no growth, no further seals.
fn seal(file: &std::fs::File) -> io::Result<()> {
    let seals = authz_common::seals::IMMUTABLE | authz_common::seals::SEAL;
    // SAFETY: fcntl(2) on a descriptor we own, with an integer argument.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Random bytes from the kernel.
pub(crate) fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: writes at most N - filled bytes into the tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    buf
}
