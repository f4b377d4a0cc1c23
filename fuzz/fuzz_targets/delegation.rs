//! Delegation::parse on arbitrary bytes must never panic; whatever it accepts
//! must survive to_toml -> parse unchanged and verify without panicking.
#![no_main]

#[path = "common.rs"]
mod common;

use authz_agent::{trust::verify_delegation, vocab::delegation::Delegation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(delegation) = Delegation::parse(text) else {
        return;
    };
    let again = Delegation::parse(&delegation.to_toml()).expect("to_toml output must parse");
    assert_eq!(again, delegation, "round trip changed the delegation");
    let _ = verify_delegation(&delegation, common::policy(), &|_| false, common::now());
});
