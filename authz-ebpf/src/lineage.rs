//! Lineage: which permit each process image was started under, kept in task
//! storage, inherited across fork and updated when an exec commits, so every
//! decision can name the permit of the process that asked for it.
use authz_common::{TaskLabel, ARTIFACT_ID_LEN};
use aya_ebpf::{bindings::task_struct, helpers::generated::bpf_get_current_task_btf};

use crate::maps::TASK_LABELS;

const NONE: [u8; ARTIFACT_ID_LEN] = [0; ARTIFACT_ID_LEN];

fn current() -> *mut task_struct {
    // SAFETY: helper without arguments; returns the trusted current task.
    unsafe { bpf_get_current_task_btf() }
}

/// The permit the current process's image was started under (zeros: none).
#[inline(always)]
pub fn current_permit() -> [u8; ARTIFACT_ID_LEN] {
    // SAFETY: `current()` is a trusted task pointer.
    let label = unsafe { TASK_LABELS.get(current(), None) };
    if label.is_null() {
        return NONE;
    }
    // SAFETY: non-null pointer to this task's storage value.
    unsafe { (*label).permit_id }
}

/// Records the permit the exec in progress runs under (made current on
/// commit). Called at the first check of every exec that reaches the
/// program, decided or not, so a stale pending value never survives into
/// another exec.
#[inline(always)]
pub fn set_pending(permit_id: [u8; ARTIFACT_ID_LEN], allowed: bool, flags: u32) {
    let mut init = TaskLabel::default();
    // SAFETY: trusted task pointer; `init` seeds a new entry.
    let label = unsafe { TASK_LABELS.get(current(), Some(&mut init)) };
    if label.is_null() {
        return;
    }
    // SAFETY: this task's own storage; only this task writes it during its exec.
    unsafe {
        (*label).pending_id = if allowed { permit_id } else { NONE };
        (*label).pending_flags = if allowed { flags } else { 0 };
        (*label).pending = 1;
    }
}

/// `bprm_committed_creds`: the exec went through; the permit recorded at its
/// check becomes current. Idempotent (the pending value is left in place), so
/// two attached copies of the programs (a restart's overlap) agree.
#[inline(always)]
pub fn commit() {
    // SAFETY: trusted task pointer, lookup only.
    let label = unsafe { TASK_LABELS.get(current(), None) };
    if label.is_null() {
        return;
    }
    // SAFETY: this task's own storage value.
    unsafe {
        if (*label).pending == 1 {
            (*label).permit_id = (*label).pending_id;
            (*label).flags = (*label).pending_flags;
        } else {
            (*label).permit_id = NONE;
            (*label).flags = 0;
        }
    }
}

/// The current task's [`authz_common::label_flags`] (0 without a label).
#[inline(always)]
pub fn current_flags() -> u32 {
    // SAFETY: `current()` is a trusted task pointer.
    let label = unsafe { TASK_LABELS.get(current(), None) };
    if label.is_null() {
        return 0;
    }
    // SAFETY: non-null pointer to this task's storage value.
    unsafe { (*label).flags }
}

/// The [`authz_common::label_flags`] of `task` (0 without a label).
///
/// # Safety
/// `task` must be a BTF `struct task_struct *` the verifier trusts (a hook
/// argument).
#[inline(always)]
pub unsafe fn flags_of(task: *mut task_struct) -> u32 {
    // SAFETY: per the contract; lookup only.
    let label = unsafe { TASK_LABELS.get(task, None) };
    if label.is_null() {
        return 0;
    }
    // SAFETY: non-null pointer to that task's storage value.
    unsafe { (*label).flags }
}

/// `task_alloc`: a new task inherits its parent's permit.
///
/// # Safety
/// `child` must be the hook's `struct task_struct *` argument.
#[inline(always)]
pub unsafe fn inherit(child: *mut task_struct) {
    let permit_id = current_permit();
    let flags = current_flags();
    if permit_id == NONE && flags == 0 {
        return;
    }
    let mut init = TaskLabel {
        permit_id,
        flags,
        ..TaskLabel::default()
    };
    // SAFETY: `child` is a trusted BTF task pointer (per the contract).
    let _ = unsafe { TASK_LABELS.get(child, Some(&mut init)) };
}
