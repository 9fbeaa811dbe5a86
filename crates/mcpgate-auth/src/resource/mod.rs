//! The resource-server side: from an `Authorization` header to a [`Principal`](crate::Principal).

pub mod bearer;
pub mod challenge;
pub mod layer;
pub mod static_token;
pub mod verifier;

pub use challenge::{Challenge, ChallengeError};
pub use layer::{AuthEvent, AuthObserver, AuthOutcome, Authenticator};
pub use static_token::{StaticToken, StaticTokenVerifier};
pub use verifier::{Verifier, VerifierChain, VerifyError};
