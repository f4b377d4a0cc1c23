//! Control API: a versioned, bounded JSON-lines protocol on a Unix socket,
//! authorized by the peer's kernel credentials.
pub mod access;
pub mod admission;
pub mod client;
pub mod protocol;
pub mod server;
