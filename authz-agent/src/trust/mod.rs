//! Keys, trust and delegation: who may sign permits, and checking that a
//! permit was signed by someone with the authority to allow what it allows.
//!
//! - [`keys`]: ed25519 keys, key ids (SHA-256 of the public key), key files.
//! - [`policy`]: the `[trust]` table of the agent's config: root keys with
//!   their limits, retired keys, policy versions.
//! - [`delegation`]: a root key handing narrower authority to a team key.
//! - [`verify`](mod@verify): the decision, with one [`VerifyError`] per reason.
pub mod delegation;
pub mod keys;
pub mod policy;
pub mod verify;

pub use self::{
    delegation::{Delegation, DelegationLink, Grant},
    keys::{KeyId, PublicKey},
    policy::{PolicyError, RootKey, TrustPolicy},
    verify::{
        effective_window, verify, verify_delegation, Authority, Part, Verified, VerifiedDelegation,
        Verifier, VerifyError, Window,
    },
};
#[cfg(test)]
pub(crate) mod testkit;
