//! OAuth 2.1 for MCP servers built on axum.
//!
//! The resource-server side lives in [`resource`]: a chain of [`resource::Verifier`]s turns a
//! bearer token into a [`Principal`], and [`resource::layer`] puts that principal into the request
//! extensions or answers with a standard `WWW-Authenticate: Bearer` challenge.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::post, middleware};
//! use mcpgate_auth::resource::{Authenticator, StaticTokenVerifier, StaticToken, VerifierChain, layer};
//!
//! let tokens = StaticTokenVerifier::new(vec![StaticToken::new("ci", "s3cret", ["mcp:tools:read"])]);
//! let auth = Arc::new(Authenticator::new(VerifierChain::new(vec![Arc::new(tokens)])));
//! let app: Router = Router::new()
//!     .route("/mcp", post(|| async { "ok" }))
//!     .layer(middleware::from_fn_with_state(auth, layer::require_bearer));
//! ```

#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod periodic;
pub mod principal;
pub mod resource;
pub mod scope;
pub mod server;
pub mod store;
pub mod upstream;

pub use principal::{Principal, PrincipalKey};
pub use scope::ScopeSet;
