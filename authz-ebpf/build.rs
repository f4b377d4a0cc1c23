//! The BPF object links with bpf-linker, an undeclared dependency: rebuild when it
//! changes (it is installed by `cargo xtask setup` under target/bpf-toolchain).
//! bpf-linker does the code generation, so the CPU level is a link argument.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let linker = manifest.join("../target/bpf-toolchain/bin/bpf-linker");
    println!("cargo:rerun-if-changed={}", linker.display());
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
