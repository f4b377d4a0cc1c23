//! The vocabulary every signed authz file is written in, below both
//! [`crate::artifact`] (the permit) and [`crate::trust`] (who may sign what).
//!
//! - [`text`]: the TOML side of every file: size limits, the `format`/`version`
//!   header, strict parsing with field and line in errors, a fixed-order writer.
//! - [`encoding`]: the canonical bytes a signature covers.
//! - [`fields`]: artifact ids, digests, cgroup paths, text limits.
//! - [`time`]: UTC timestamps and durations.
//! - [`keyid`]: key ids and the canonical spelling of public keys.
//! - [`statement`]: lockdown statements (unlock, adopt an agent binary).
//! - [`delegation`]: delegation links and chains as data (signing, parsing,
//!   writing); whether a chain grants anything is [`crate::trust`]'s to decide.
//! - [`code`]: what a permit allows beyond exec (libraries, executable memory)
//!   and its optional part of the signed messages.
//! - [`hosts`]: the optional host binding of permits and links.
//!
//! Nothing here depends on `artifact` or `trust`.
pub mod code;
pub mod delegation;
pub mod encoding;
pub mod fields;
pub mod hosts;
pub mod keyid;
pub mod statement;
pub mod text;
pub mod time;
