//! Host-side face of the kernel programs crate: nothing but a marker, so that
//! `authz-agent` can declare a build-dependency on this crate (cargo then rebuilds
//! the BPF object when any source here changes). The programs are in `main.rs`.
#![no_std]
