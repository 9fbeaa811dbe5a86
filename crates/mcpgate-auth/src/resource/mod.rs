//! The resource-server side: from an `Authorization` header to a [`Principal`](crate::Principal).

pub mod audience;
pub mod bearer;
pub mod challenge;
pub mod claims;
pub mod discovery;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod layer;
pub mod local;
pub mod metadata;
pub mod static_token;
pub mod token_cache;
pub mod verifier;

pub use audience::{AudiencePolicy, normalise_resource};
pub use challenge::{Challenge, ChallengeError};
pub use claims::ClaimRules;
pub use introspection::{IntrospectionSettings, IntrospectionVerifier};
pub use jwks::{JwksCache, JwksSettings};
pub use jwt::JwtVerifier;
pub use layer::{AuthEvent, AuthObserver, AuthOutcome, Authenticator};
pub use local::{LocalJwtVerifier, RevocationList};
pub use metadata::ProtectedResourceMetadata;
pub use static_token::{StaticToken, StaticTokenVerifier};
pub use token_cache::{TokenCacheSettings, VerifiedTokenCache};
pub use verifier::{Verifier, VerifierChain, VerifyError};
