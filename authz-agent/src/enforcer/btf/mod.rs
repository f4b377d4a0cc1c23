//! Kernel structure offsets from the running kernel's BTF.
//!
//! The kernel program cannot carry the build machine's struct layouts (Rust BPF
//! has no CO-RE), so the agent reads each member offset here and hands the set to
//! the program as a read-only global.
use std::path::Path;

mod reader;

use authz_common::{offset_known, KernelOffsets};
use reader::{kind, FormatError, RawBtf};

/// The BTF authz reads the layout from.
pub type Btf = RawBtf;

/// Deepest nesting of anonymous structs and unions searched for a member.
const MAX_ANONYMOUS_DEPTH: u32 = 8;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's BTF as aya parses it for program loads, kept from
/// the start-up probe to the programs' load (parsing it costs about 0.2 s
/// under emulation) and dropped by [`forget_aya_kernel`] once they are
/// loaded, so that a running agent does not hold it.
static AYA_KERNEL: std::sync::Mutex<Option<std::sync::Arc<aya::Btf>>> = std::sync::Mutex::new(None);

/// The running kernel's BTF for aya (parsed on first use after a
/// [`forget_aya_kernel`]).
pub fn aya_kernel() -> Result<std::sync::Arc<aya::Btf>, aya::BtfError> {
    let mut cached = AYA_KERNEL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(btf) = cached.as_ref() {
        return Ok(btf.clone());
    }
    let btf = std::sync::Arc::new(aya::Btf::from_sys_fs()?);
    *cached = Some(btf.clone());
    Ok(btf)
}

/// Drops the BTF [`aya_kernel`] keeps.
pub fn forget_aya_kernel() {
    *AYA_KERNEL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF {path} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(&'static str),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember {
        strukt: &'static str,
        member: &'static str,
    },
    #[error("kernel BTF: {strukt}.{member} is a bitfield or not byte aligned")]
    Unaligned {
        strukt: &'static str,
        member: &'static str,
    },
    #[error("kernel BTF is malformed")]
    Malformed(#[from] FormatError),
    #[error("kernel BTF lacks fields authz cannot enforce without: {0}")]
    Required(&'static str),
}

/// Reads every offset the kernel program needs from `path` (normally
/// [`VMLINUX_BTF`]). Only `linux_binprm.file` is required; a missing optional
/// field is left at 0 and the program does without it (no ppid, no filename, or
/// no digest cache), which never weakens a decision.
#[tracing::instrument(level = "debug", skip_all, fields(path = %path.display()))]
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    kernel_layout(path).map(|l| l.offsets)
}

/// What the kernel program needs to know about the running kernel.
#[derive(Clone, Copy, Debug)]
pub struct KernelLayout {
    pub offsets: KernelOffsets,
    /// The `inode_setattr` hook takes a leading `idmap` argument (6.3 on).
    pub setattr_idmap: bool,
}

/// The running kernel's layout ([`VMLINUX_BTF`]), read once per process:
/// the kernel's own BTF cannot change while it runs, and reading it through
/// btf-rs costs about 3 s under emulation (a start used to pay that twice,
/// for the probe and for the object).
pub fn running_kernel_layout() -> Result<KernelLayout, BtfError> {
    static LAYOUT: std::sync::OnceLock<KernelLayout> = std::sync::OnceLock::new();
    if let Some(layout) = LAYOUT.get() {
        return Ok(*layout);
    }
    let layout = kernel_layout(Path::new(VMLINUX_BTF))?;
    Ok(*LAYOUT.get_or_init(|| layout))
}

/// Offsets and hook signatures from the BTF at `path`.
pub fn kernel_layout(path: &Path) -> Result<KernelLayout, BtfError> {
    let btf = Btf::from_file(path)?;
    let setattr_idmap = hook_argument(&btf, "inode_setattr", "dentry") == Some(1);
    Ok(KernelLayout {
        offsets: offsets_from(&btf)?,
        setattr_idmap,
    })
}

fn offsets_from(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let optional = |strukt: &'static str, candidates: &[&[&'static str]]| -> u32 {
        for members in candidates {
            match member_path_offset(btf, strukt, members) {
                Ok(offset) => return offset,
                Err(e) => tracing::debug!(error = %e, "offset candidate not found"),
            }
        }
        tracing::warn!(strukt, candidates = ?candidates, "kernel BTF lacks a field authz can use; doing without");
        0
    };
    let offsets = KernelOffsets {
        binprm_file: member_offset(btf, "linux_binprm", "file")?,
        binprm_filename: optional("linux_binprm", &[&["filename"]]),
        binprm_interp: optional("linux_binprm", &[&["interp"]]),
        task_real_parent: optional("task_struct", &[&["real_parent"]]),
        task_tgid: optional("task_struct", &[&["tgid"]]),
        file_inode: optional("file", &[&["f_inode"]]),
        file_mode: optional("file", &[&["f_mode"]]),
        inode_sb: optional("inode", &[&["i_sb"]]),
        inode_nlink: optional("inode", &[&["i_nlink"]]),
        inode_size: optional("inode", &[&["i_size"]]),
        inode_writecount: optional("inode", &[&["i_writecount", "counter"]]),
        inode_version: optional("inode", &[&["i_version", "counter"]]),
        // 6.11+: i_ctime_sec/i_ctime_nsec; 6.6-6.10: __i_ctime; before: i_ctime.
        inode_ctime_sec: optional(
            "inode",
            &[
                &["i_ctime_sec"],
                &["__i_ctime", "tv_sec"],
                &["i_ctime", "tv_sec"],
            ],
        ),
        inode_ctime_nsec: optional(
            "inode",
            &[
                &["i_ctime_nsec"],
                &["__i_ctime", "tv_nsec"],
                &["i_ctime", "tv_nsec"],
            ],
        ),
        sb_magic: optional("super_block", &[&["s_magic"]]),
        task_cgroups: optional("task_struct", &[&["cgroups"]]),
        css_set_dfl_cgrp: optional("css_set", &[&["dfl_cgrp"]]),
        cgroup_level: optional("cgroup", &[&["level"]]),
        cgroup_ancestors: optional("cgroup", &[&["ancestors"]]),
        cgroup_kn: optional("cgroup", &[&["kn"]]),
        kernfs_node_name: optional("kernfs_node", &[&["name"]]),
        dentry_inode: optional("dentry", &[&["d_inode"]]),
        iattr_valid: 0,
        shmem_seals_delta: 0,
        known: 0,
        vma_file: optional("vm_area_struct", &[&["vm_file"]]),
        vma_flags: 0,
        vma_anon_vma: optional("vm_area_struct", &[&["anon_vma"]]),
        file_path: optional("file", &[&["f_path"]]),
        file_dentry: optional("file", &[&["f_path", "dentry"]]),
        dentry_name: optional("dentry", &[&["d_name", "name"]]),
        bpf_map_id: optional("bpf_map", &[&["id"]]),
        bpf_prog_aux: optional("bpf_prog", &[&["aux"]]),
        bpf_prog_aux_id: optional("bpf_prog_aux", &[&["id"]]),
        vfsmount_sb: optional("vfsmount", &[&["mnt_sb"]]),
        sb_dev: optional("super_block", &[&["s_dev"]]),
        inode_ino: optional("inode", &[&["i_ino"]]),
    };
    let mut offsets = offsets;
    match member_offset(btf, "vm_area_struct", "vm_flags") {
        Ok(offset) => {
            offsets.vma_flags = offset;
            offsets.known |= offset_known::VMA_FLAGS;
        }
        Err(e) => {
            tracing::warn!(error = %e, "mapping flags cannot be read: executable mappings in scope will be refused")
        }
    }
    match member_offset(btf, "iattr", "ia_valid") {
        Ok(offset) => {
            offsets.iattr_valid = offset;
            offsets.known |= offset_known::IATTR_VALID;
        }
        Err(e) => {
            tracing::warn!(error = %e, "size changes cannot be seen: the digest cache is off")
        }
    }
    match (
        member_offset(btf, "shmem_inode_info", "seals"),
        member_offset(btf, "shmem_inode_info", "vfs_inode"),
    ) {
        (Ok(seals), Ok(vfs_inode)) => {
            offsets.shmem_seals_delta = seals as i32 - vfs_inode as i32;
            offsets.known |= offset_known::SHMEM_SEALS;
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "memfd seals cannot be read: every exec of a memfd will be refused")
        }
    }
    if !offsets.content_usable() {
        return Err(BtfError::Required(
            "the file checks (struct file f_inode, inode i_sb/i_nlink/i_writecount, super_block s_magic)",
        ));
    }
    if !offsets.scope_usable() {
        tracing::warn!("cgroup paths cannot be read: enforce_cgroups will enforce every cgroup");
    }
    if !offsets.cache_usable() {
        tracing::warn!("the per-inode digest cache is off: every exec will be hashed");
    }
    tracing::debug!(?offsets, "kernel offsets from BTF");
    Ok(offsets)
}

impl RawBtf {
    /// Reads and indexes the BTF at `path`.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(bytes)?)
    }
}

/// Position of the argument called `name` of the LSM hook `hook` (from the
/// BTF of its `bpf_lsm_<hook>` attach point), or `None` when it is not found.
pub fn hook_argument(btf: &Btf, hook: &str, name: &str) -> Option<u32> {
    let func = format!("bpf_lsm_{hook}");
    let proto = btf.ids_named(&func).into_iter().find_map(|id| {
        let f = btf.header(id).ok()?;
        let p = btf.header(f.size_or_type).ok()?;
        (f.kind == kind::FUNC && p.kind == kind::FUNC_PROTO).then_some(f.size_or_type)
    })?;
    btf.members(proto)
        .ok()?
        .iter()
        .position(|p| btf.name(p.name_off) == name)
        .map(|i| i as u32)
}

/// Byte offset of `member` in `struct strukt`, looking through anonymous
/// struct/union members the way C does.
pub fn member_offset(
    btf: &Btf,
    strukt: &'static str,
    member: &'static str,
) -> Result<u32, BtfError> {
    member_path_offset(btf, strukt, &[member])
}

/// Byte offset of a nested member (`["i_ctime", "tv_sec"]`) from the start of
/// `struct strukt`.
pub fn member_path_offset(
    btf: &Btf,
    strukt: &'static str,
    path: &[&'static str],
) -> Result<u32, BtfError> {
    let mut current = btf
        .ids_named(strukt)
        .into_iter()
        .find(|id| btf.header(*id).is_ok_and(|h| h.kind == kind::STRUCT))
        .ok_or(BtfError::NoStruct(strukt))?;
    let mut bits = 0u32;
    for (i, member) in path.iter().enumerate() {
        let (offset, member_type) = find_member(btf, current, member, 0, 0)?
            .ok_or(BtfError::NoMember { strukt, member })?;
        bits += offset;
        if i + 1 < path.len() {
            current = match strip(btf, member_type)? {
                (id, kind::STRUCT | kind::UNION) => id,
                _ => {
                    return Err(BtfError::NoMember {
                        strukt,
                        member: path[i + 1],
                    })
                }
            };
        }
    }
    if !bits.is_multiple_of(8) {
        return Err(BtfError::Unaligned {
            strukt,
            member: path[path.len() - 1],
        });
    }
    Ok(bits / 8)
}

/// Follows typedefs and qualifiers to the underlying type: (id, kind).
fn strip(btf: &Btf, id: u32) -> Result<(u32, u32), BtfError> {
    let mut id = id;
    for _ in 0..16 {
        let h = btf.header(id)?;
        match h.kind {
            kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG => {
                id = h.size_or_type;
            }
            k => return Ok((id, k)),
        }
    }
    Ok((id, btf.header(id)?.kind))
}

/// (bit offset, type id) of `name` inside struct or union `id` (plus
/// `base`), searching anonymous members.
fn find_member(
    btf: &Btf,
    id: u32,
    name: &str,
    base: u32,
    depth: u32,
) -> Result<Option<(u32, u32)>, BtfError> {
    for m in btf.members(id)? {
        if m.bitfield_size != 0 {
            continue;
        }
        let member_name = btf.name(m.name_off);
        if member_name == name {
            return Ok(Some((base + m.bit_offset, m.type_id)));
        }
        if member_name.is_empty() && depth < MAX_ANONYMOUS_DEPTH {
            if let (inner, kind::STRUCT | kind::UNION) = strip(btf, m.type_id)? {
                if let Some(found) = find_member(btf, inner, name, base + m.bit_offset, depth + 1)?
                {
                    return Ok(Some(found));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own BTF is a real kernel's: the offsets must be found and sane.
    #[test]
    fn reads_offsets_from_this_hosts_btf() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            panic!("{VMLINUX_BTF} missing on the build host; the unit test needs a BTF kernel");
        }
        let offsets = kernel_offsets(path).expect("offsets");
        assert!(offsets.binprm_file > 0 && offsets.binprm_file.is_multiple_of(8));
        assert!(offsets.binprm_filename > offsets.binprm_file);
        assert!(offsets.task_real_parent > 0 && offsets.task_tgid > 0);
        assert!(offsets.binprm_interp > 0, "{offsets:?}");
        // The digest cache needs every inode stamp field; this kernel has them.
        assert!(offsets.cache_usable(), "{offsets:?}");
        assert_ne!(offsets.inode_ctime_sec, offsets.inode_ctime_nsec);
        // The scope check reads the cgroup path; the content check reads seals.
        assert!(offsets.scope_usable(), "{offsets:?}");
        assert!(offsets.content_usable(), "{offsets:?}");
        assert_ne!(offsets.known & offset_known::SHMEM_SEALS, 0, "{offsets:?}");
        assert!(
            offsets.shmem_seals_delta < 0,
            "vfs_inode is embedded after seals"
        );
        assert_ne!(offsets.known & offset_known::IATTR_VALID, 0, "{offsets:?}");
        assert!(offsets.dentry_inode > 0);
    }

    /// The lean reader agrees with btf-rs, a full BTF parser, on this host's
    /// kernel: every named member of the structs authz reads, at the same
    /// offset (bitfields aside).
    #[test]
    fn offsets_agree_with_btf_rs_on_this_hosts_kernel() {
        let lean = Btf::from_file(Path::new(VMLINUX_BTF)).expect("lean");
        let full = btf_rs::Btf::from_file(VMLINUX_BTF).expect("btf-rs");
        let mut compared = 0;
        for strukt in [
            "linux_binprm",
            "task_struct",
            "file",
            "inode",
            "super_block",
            "css_set",
            "cgroup",
            "kernfs_node",
            "dentry",
            "vm_area_struct",
            "iattr",
            "shmem_inode_info",
            "bpf_map",
            "bpf_prog",
            "bpf_prog_aux",
            "vfsmount",
        ] {
            let s = full
                .resolve_types_by_name(strukt)
                .expect(strukt)
                .into_iter()
                .find_map(|t| match t {
                    btf_rs::Type::Struct(s) => Some(s),
                    _ => None,
                })
                .expect(strukt);
            for m in &s.members {
                let name = full.resolve_name(m).unwrap_or_default();
                if name.is_empty() || m.bitfield_size().is_some_and(|b| b != 0) {
                    continue;
                }
                let name: &'static str = Box::leak(name.into_boxed_str());
                let want = m.bit_offset();
                match member_offset(&lean, strukt, name) {
                    Ok(got) => assert_eq!(got * 8, want, "{strukt}.{name}"),
                    Err(BtfError::Unaligned { .. }) => assert_ne!(want % 8, 0, "{strukt}.{name}"),
                    Err(e) => panic!("{strukt}.{name}: {e}"),
                }
                compared += 1;
            }
        }
        assert!(compared > 300, "only {compared} members compared");
    }

    #[test]
    fn hook_arguments_are_found_by_name() {
        let btf = Btf::from_file(Path::new(VMLINUX_BTF)).expect("btf");
        let dentry = hook_argument(&btf, "inode_setattr", "dentry").expect("inode_setattr");
        // 6.1-6.2: (dentry, attr); from 6.3: (idmap, dentry, attr).
        assert!(dentry <= 1, "{dentry}");
        assert_eq!(hook_argument(&btf, "file_open", "file"), Some(0));
        assert_eq!(hook_argument(&btf, "no_such_hook_authz", "x"), None);
    }

    #[test]
    fn nested_members_resolve_through_typedefs_and_anonymous_unions() {
        let btf = Btf::from_file(Path::new(VMLINUX_BTF)).expect("btf");
        // i_nlink sits in an anonymous union; atomic_t.counter behind a typedef.
        let nlink = member_offset(&btf, "inode", "i_nlink").expect("i_nlink");
        let writers =
            member_path_offset(&btf, "inode", &["i_writecount", "counter"]).expect("i_writecount");
        assert!(nlink > 0 && writers > 0);
        assert_eq!(
            writers,
            member_offset(&btf, "inode", "i_writecount").expect("i_writecount"),
            "counter is the first member of atomic_t"
        );
    }

    #[test]
    fn unknown_member_is_a_typed_error() {
        let btf = Btf::from_file(Path::new(VMLINUX_BTF)).expect("btf");
        let err = member_offset(&btf, "linux_binprm", "no_such_member").unwrap_err();
        assert!(matches!(err, BtfError::NoMember { .. }), "{err}");
        let err = member_offset(&btf, "no_such_struct_authz", "x").unwrap_err();
        assert!(matches!(err, BtfError::NoStruct(_)), "{err}");
    }
}
