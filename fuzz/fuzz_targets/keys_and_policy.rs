//! The other files authz reads: public and secret key files and the [trust]
//! table of the agent's config. No input may panic them.
#![no_main]

use authz_agent::trust::{keys, PublicKey, TrustPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(public) = PublicKey::parse(text) {
        assert_eq!(PublicKey::parse(&public.to_toml()).as_ref(), Ok(&public));
    }
    if let Ok(secret) = keys::parse_secret_key(text) {
        let again = keys::parse_secret_key(&keys::secret_key_toml(&secret)).expect("written key parses");
        assert_eq!(again.to_bytes(), secret.to_bytes());
    }
    let _ = TrustPolicy::from_config_str(text);
});
