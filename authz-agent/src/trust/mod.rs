//! Keys, trust and delegation: who may sign permits, and checking that a
//! permit was signed by someone with the authority to allow what it allows.
//!
//! - [`keys`]: ed25519 key generation and key files (`.key`, `.pub`).
//! - [`policy`]: the `[trust]` table of the agent's config: root keys with
//!   their limits, retired keys, policy versions.
//! - [`verify`](mod@verify): the decision, with one [`VerifyError`] per
//!   reason, including whether each delegation link narrows the one before.
//! - [`revocations`]: whether a signed revocation list may be applied, and
//!   what a delegate's list may revoke.
//!
//! What a permit and a delegation *are* (their fields, text and signed bytes)
//! is [`crate::artifact`] and [`crate::vocab`]; this module only depends on them.
pub mod host;
pub mod keys;
pub mod policy;
pub mod revocations;
pub mod verify;

pub use self::{
    host::{HostCheck, HostIdentity},
    keys::PublicKey,
    policy::{PolicyError, RootKey, TrustPolicy},
    verify::{
        effective_window, verify, verify_delegation, verify_delegation_on, verify_on, Authority,
        Part, Verified, VerifiedDelegation, Verifier, VerifyError, Window,
    },
};
#[cfg(test)]
mod props;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod worked_example;
