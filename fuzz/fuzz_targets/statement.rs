//! Statement::parse (lockdown statements) on arbitrary bytes must never
//! panic; whatever it accepts must survive to_toml -> parse unchanged, and
//! its signature check must not panic either.
#![no_main]

use authz_agent::vocab::statement::Statement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(statement) = Statement::parse(text) else {
        return;
    };
    let again = Statement::parse(&statement.to_toml()).expect("to_toml output must parse");
    assert_eq!(again, statement, "round trip changed the statement");
    let _ = statement.verify_signature();
});
