//! RevocationList::parse on arbitrary bytes must never panic; whatever it
//! accepts must survive to_toml -> parse unchanged and verify without
//! panicking.
#![no_main]

#[path = "common.rs"]
mod common;

use authz_agent::{
    revocation_list::RevocationList,
    trust::{revocations::verify_list, HostCheck},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(list) = RevocationList::parse(text) else {
        return;
    };
    let again = RevocationList::parse(&list.to_toml()).expect("to_toml output must parse");
    assert_eq!(again, list, "round trip changed the list");
    let _ = verify_list(&list, common::policy(), HostCheck::Anywhere, &|_| false, common::now());
});
