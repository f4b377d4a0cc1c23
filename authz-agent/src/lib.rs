//! authz agent library: everything the `authz-agent` binary does, usable from
//! the integration tests.
pub mod artifact;
pub mod audit;
pub mod cgroup;
pub mod cgroup_writers;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod defaults;
pub mod elf;
pub mod enforcer;
pub mod lockdown;
pub mod logging;
pub mod parallel;
pub mod revocation_list;
pub mod store;
pub mod trust;
pub mod vocab;

/// "outer: inner: innermost" for an error and its sources, each cause once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if parts.last().is_none_or(|last| !last.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}
