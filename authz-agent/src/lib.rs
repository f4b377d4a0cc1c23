//! authz agent library: everything the `authz-agent` binary does, usable from
//! the integration tests.
pub mod artifact;
pub mod cgroup;
pub mod cli;
pub mod enforcer;
pub mod trust;
