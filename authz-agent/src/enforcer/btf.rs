//! Kernel structure offsets from the running kernel's BTF.
//!
//! The kernel program cannot carry the build machine's struct layouts (Rust BPF
//! has no CO-RE), so the agent reads each member offset here and hands the set to
//! the program as a read-only global.
use std::path::Path;

use authz_common::KernelOffsets;
use btf_rs::{Btf, Type};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF {path} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
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
    Malformed(#[source] btf_rs::Error),
}

/// Reads every offset the kernel program needs from `path` (normally
/// [`VMLINUX_BTF`]).
#[tracing::instrument(level = "debug", skip_all, fields(path = %path.display()))]
pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let offsets = KernelOffsets {
        binprm_file: member_offset(&btf, "linux_binprm", "file")?,
        binprm_filename: member_offset(&btf, "linux_binprm", "filename")?,
        task_real_parent: member_offset(&btf, "task_struct", "real_parent")?,
        task_tgid: member_offset(&btf, "task_struct", "tgid")?,
    };
    tracing::debug!(?offsets, "kernel offsets from BTF");
    Ok(offsets)
}

/// Byte offset of `member` in `struct strukt`, looking through anonymous
/// struct/union members the way C does.
pub fn member_offset(
    btf: &Btf,
    strukt: &'static str,
    member: &'static str,
) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct(strukt))?;
    let mut found_struct = false;
    for ty in types {
        if let Type::Struct(s) = ty {
            found_struct = true;
            if let Some(bits) = find_member(btf, &s, member, 0)? {
                if bits % 8 != 0 {
                    return Err(BtfError::Unaligned { strukt, member });
                }
                return Ok(bits / 8);
            }
        }
    }
    if found_struct {
        Err(BtfError::NoMember { strukt, member })
    } else {
        Err(BtfError::NoStruct(strukt))
    }
}

/// Bit offset of `name` inside `s` (plus `base`), searching anonymous members.
fn find_member(
    btf: &Btf,
    s: &btf_rs::Struct,
    name: &str,
    base: u32,
) -> Result<Option<u32>, BtfError> {
    for m in &s.members {
        if m.bitfield_size().is_some_and(|size| size != 0) {
            continue;
        }
        let member_name = btf.resolve_name(m).unwrap_or_default();
        if member_name == name {
            return Ok(Some(base + m.bit_offset()));
        }
        if member_name.is_empty() {
            let inner = btf.resolve_chained_type(m).map_err(BtfError::Malformed)?;
            if let Type::Struct(inner) | Type::Union(inner) = inner {
                if let Some(bits) = find_member(btf, &inner, name, base + m.bit_offset())? {
                    return Ok(Some(bits));
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
        assert!(offsets.binprm_file > 0 && offsets.binprm_file % 8 == 0);
        assert!(offsets.binprm_filename > offsets.binprm_file);
        assert!(offsets.task_real_parent > 0 && offsets.task_tgid > 0);
    }

    #[test]
    fn unknown_member_is_a_typed_error() {
        let btf = Btf::from_file(VMLINUX_BTF).expect("btf");
        let err = member_offset(&btf, "linux_binprm", "no_such_member").unwrap_err();
        assert!(matches!(err, BtfError::NoMember { .. }), "{err}");
        let err = member_offset(&btf, "no_such_struct_authz", "x").unwrap_err();
        assert!(matches!(err, BtfError::NoStruct(_)), "{err}");
    }
}
