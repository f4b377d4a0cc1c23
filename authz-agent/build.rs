//! Builds the kernel programs (`authz-ebpf`) for the BPF target with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`. `cargo xtask setup` installs what this needs.
use std::path::Path;

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let linker = Path::new(&manifest_dir).join("../target/bpf-toolchain/bin/bpf-linker");
    println!("cargo:rerun-if-changed={}", linker.display());
    if std::env::var_os("AYA_BUILD_SKIP").is_none() && !linker.exists() {
        return Err(anyhow!(
            "bpf-linker is not installed at {}: run `cargo xtask setup` (it builds the \
             eBPF toolchain under target/), then build again",
            linker.display()
        ));
    }

    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "authz-ebpf")
        .ok_or_else(|| anyhow!("authz-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("authz-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
