//! RFC 8414 authorization-server metadata and the JWKS.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderValue, header};

use super::AuthServer;

pub fn router() -> Router<Arc<AuthServer>> {
    // Public documents: any origin may read them, including preflighted requests that carry
    // `MCP-Protocol-Version`.
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([http::Method::GET, http::Method::OPTIONS])
        .allow_headers(tower_http::cors::Any)
        .max_age(std::time::Duration::from_secs(3600));
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(document))
        .route("/jwks", get(jwks))
        .layer(cors)
}

/// The metadata document. `issuer` is byte-identical to the protected-resource metadata's
/// `authorization_servers` entry.
pub fn metadata(server: &AuthServer) -> serde_json::Value {
    let c = &server.config;
    let mut doc = serde_json::json!({
        "issuer": c.issuer,
        "authorization_endpoint": c.endpoint("/authorize"),
        "token_endpoint": c.endpoint("/token"),
        "jwks_uri": c.endpoint("/jwks"),
        "revocation_endpoint": c.endpoint("/revoke"),
        "introspection_endpoint": c.endpoint("/introspect"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "PS256", "EdDSA"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "scopes_supported": c.scopes_supported,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": c.metadata_documents.enabled,
        "resource_indicators_supported": true,
        "prompt_values_supported": ["none", "login", "consent"],
    });
    if c.registration.enabled {
        doc["registration_endpoint"] = c.endpoint("/register").into();
    }
    doc
}

async fn document(State(server): State<Arc<AuthServer>>) -> Response {
    public_json(metadata(&server))
}

pub async fn jwks(State(server): State<Arc<AuthServer>>) -> Response {
    public_json(serde_json::to_value(server.keys.jwks()).unwrap_or_default())
}

fn public_json(value: serde_json::Value) -> Response {
    let mut response = Json(value).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
