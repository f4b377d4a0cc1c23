//! Decision events for the agent, on the ring buffer.
use authz_common::{counter, decision, Digest, ExecEvent, ARTIFACT_ID_LEN, FILENAME_LEN};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::bpf_ktime_get_boot_ns,
};
use core::ffi::c_void;

use crate::{kernel, maps, verdict::Verdict};

/// Where an event's paths come from.
#[derive(Clone, Copy)]
pub enum Paths {
    /// An exec: `bprm->filename` and `bprm->interp`.
    Bprm(*const c_void),
    /// A file being mapped (a BTF `struct file *`, in a sleepable hook): its
    /// full path.
    File(*const c_void),
    /// A file in a hook that cannot resolve paths: its name.
    Name(*const c_void),
    /// Nothing to name (anonymous memory).
    None,
}

/// One decision, as the event reports it.
pub struct Decided<'a> {
    pub hook: u32,
    pub cgroup_id: u64,
    pub mode: u32,
    pub outcome: u32,
    pub verdict: &'a Verdict,
    pub hash_status: i32,
    pub flags: u32,
    pub digest: &'a Digest,
    pub parent_permit: &'a [u8; ARTIFACT_ID_LEN],
}

/// Sends the decision to the agent. Never blocks: a full ring buffer drops the
/// event and counts the drop.
#[inline(always)]
pub fn emit(d: &Decided, paths: Paths) {
    let Decided {
        hook,
        cgroup_id,
        mode,
        outcome,
        verdict,
        hash_status,
        flags,
        digest,
        parent_permit,
    } = *d;
    let Some(mut entry) = maps::EVENTS.reserve::<ExecEvent>(0) else {
        maps::count(counter::EVENTS_DROPPED);
        return;
    };
    let event = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `event` points at a reserved ring buffer slot of
    // `size_of::<ExecEvent>()` bytes, exclusively ours until submit.
    unsafe {
        (*event).boot_ns = bpf_ktime_get_boot_ns();
        (*event).cgroup_id = cgroup_id;
        (*event).permit_cgroup_id = verdict.permit_cgroup_id;
        (*event).permit_expires_boot_ns = verdict.expires_boot_ns;
        (*event).seq = maps::next_seq();
        (*event).instance = kernel::instance();
        (*event).hook = hook;
        (*event).pid = pid_tgid as u32;
        (*event).tgid = (pid_tgid >> 32) as u32;
        (*event).ppid = kernel::parent_tgid();
        (*event).uid = uid_gid as u32;
        (*event).gid = (uid_gid >> 32) as u32;
        (*event).decision = outcome;
        (*event).reason = verdict.reason;
        (*event).mode = mode;
        (*event).hash_status = hash_status;
        (*event).flags = flags;
        (*event).digest = *digest;
        (*event).permit_id = verdict.artifact_id;
        (*event).parent_permit_id = *parent_permit;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event).filename[0] = 0;
        (*event).interp[0] = 0;
        fill_paths(paths, &mut (*event).filename, &mut (*event).interp);
    }
    // Allowed execs are the bulk: queue them without waking the agent (it
    // drains the ring on a short timer); refusals wake it at once.
    let wakeup = if outcome == decision::ALLOW {
        u64::from(aya_ebpf::bindings::BPF_RB_NO_WAKEUP)
    } else {
        0
    };
    entry.submit(wakeup);
}

/// Copies the paths of `paths`: `filename` is what execve named, `interp` the
/// file the decision is about.
#[inline(always)]
fn fill_paths(paths: Paths, filename: &mut [u8; FILENAME_LEN], interp: &mut [u8; FILENAME_LEN]) {
    match paths {
        Paths::Bprm(bprm) => {
            // SAFETY: `bprm` is the exec hook's argument.
            unsafe {
                kernel::binprm_path(bprm, kernel::BinprmPath::Filename, filename);
                kernel::binprm_path(bprm, kernel::BinprmPath::Interp, interp);
            }
        }
        // SAFETY: a BTF `struct file *` in a sleepable hook.
        Paths::File(file) => unsafe { kernel::file_path(file, interp) },
        // SAFETY: a BTF `struct file *`.
        Paths::Name(file) => unsafe { kernel::file_name(file, interp) },
        Paths::None => {}
    }
}
