//! Artifact::parse on arbitrary bytes must never panic; whatever it accepts
//! must survive to_toml -> parse unchanged, and must get the same verdict from
//! verify, the caching Verifier and batch verification.
#![no_main]

#[path = "common.rs"]
mod common;

use authz_agent::{artifact::Artifact, trust::verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(artifact) = Artifact::parse(text) else {
        return;
    };
    let written = artifact.to_toml();
    let again = Artifact::parse(&written).expect("to_toml output must parse");
    assert_eq!(again, artifact, "round trip changed the artifact");
    let single = verify(&artifact, common::policy(), &|_| false, common::now());
    let cached = common::verifier().verify(&artifact, &|_| false, common::now());
    let batch = common::verifier().verify_batch(std::slice::from_ref(&artifact), &|_| false, common::now());
    assert_eq!(single, cached);
    assert_eq!(batch.first(), Some(&single));
});
