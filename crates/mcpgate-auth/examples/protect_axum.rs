//! Protecting any axum (or rmcp Streamable HTTP) endpoint with mcpgate-auth in a few lines:
//! static tokens plus JWT access tokens from an external issuer, protected-resource metadata,
//! and the principal in the request extensions.
//!
//! ```text
//! ISSUER=https://as.example JWKS_URI=https://as.example/jwks cargo run -p mcpgate-auth --example protect_axum
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::{Extension, Router, middleware};
use mcpgate_auth::Principal;
use mcpgate_auth::resource::metadata::{self, ProtectedResourceMetadata, well_known_url};
use mcpgate_auth::resource::{
    AudiencePolicy, Authenticator, ClaimRules, JwksCache, JwksSettings, JwtVerifier, StaticToken,
    StaticTokenVerifier, VerifierChain, layer,
};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let issuer = std::env::var("ISSUER").unwrap_or_else(|_| "http://127.0.0.1:4400".into());
    let jwks_uri = std::env::var("JWKS_URI").unwrap_or_else(|_| format!("{issuer}/jwks"));
    let resource = "http://127.0.0.1:3000/mcp".to_owned();

    let rules = ClaimRules {
        issuer: issuer.clone(),
        audiences: AudiencePolicy::new([resource.clone()], []),
        leeway: Duration::from_secs(60),
        exposed_claims: vec!["email".into()],
    };
    let jwks = Arc::new(JwksCache::new(
        jwks_uri,
        reqwest::Client::new(),
        JwksSettings::default(),
    ));
    let chain = VerifierChain::new(vec![
        Arc::new(StaticTokenVerifier::new(vec![StaticToken::new(
            "ci",
            "change-me",
            ["mcp:tools:read"],
        )])),
        Arc::new(JwtVerifier::new(jwks, rules, false)),
    ]);
    let auth = Arc::new(
        Authenticator::new(chain)
            .with_resource_metadata("/mcp", well_known_url(&resource))
            .with_challenge_scope("mcp:tools:read"),
    );

    let app = Router::new()
        // Put rmcp's StreamableHttpService here with `.route_service("/mcp", service)`; tools then
        // read `Arc<Principal>` from the `http::request::Parts` in their request context.
        .route(
            "/mcp",
            post(|Extension(who): Extension<Arc<Principal>>| async move {
                format!("hello {}", who.subject)
            }),
        )
        .layer(middleware::from_fn_with_state(auth, layer::require_bearer))
        .merge(metadata::router(vec![ProtectedResourceMetadata::new(
            resource,
            issuer,
            &["mcp:tools:read".into()],
        )]));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await
}
