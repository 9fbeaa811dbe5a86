//! Protected-resource metadata (RFC 9728), served at the path-inserted well-known URL of each
//! protected endpoint and at the root.

use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, Method, StatusCode, header};
use tower_http::cors::{Any, CorsLayer};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProtectedResourceMetadata {
    pub resource: String,
    pub authorization_servers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    pub bearer_methods_supported: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_documentation: Option<String>,
}

impl ProtectedResourceMetadata {
    /// Metadata for `resource`; `offline_access` never appears in `scopes_supported` (refresh is
    /// not a resource concern).
    pub fn new(resource: impl Into<String>, issuer: impl Into<String>, scopes: &[String]) -> Self {
        Self {
            resource: resource.into(),
            authorization_servers: vec![issuer.into()],
            scopes_supported: scopes
                .iter()
                .filter(|s| *s != "offline_access")
                .cloned()
                .collect(),
            bearer_methods_supported: vec!["header".into()],
            resource_name: None,
            resource_documentation: None,
        }
    }
}

/// The well-known path for a resource URL: `https://h/a/mcp` → `/.well-known/oauth-protected-resource/a/mcp`.
pub fn well_known_path(resource: &str) -> String {
    let path = url::Url::parse(resource)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    format!("/.well-known/oauth-protected-resource{path}")
}

/// The absolute metadata URL a challenge points at.
pub fn well_known_url(resource: &str) -> String {
    match url::Url::parse(resource) {
        Ok(u) => format!(
            "{}{}",
            u.origin().ascii_serialization(),
            well_known_path(resource)
        ),
        Err(_) => String::new(),
    }
}

/// Routes serving each document at its path; the first one also at the root. Unknown
/// `/.well-known/…` paths get a JSON 404 (clients fall back on 4xx, but give up on 5xx).
pub fn router(documents: Vec<ProtectedResourceMetadata>) -> Router {
    let mut router = Router::new();
    if let Some(first) = documents.first().cloned() {
        router = router.route(
            "/.well-known/oauth-protected-resource",
            get(move || serve(first.clone())),
        );
    }
    for doc in documents {
        let path = well_known_path(&doc.resource);
        if path != "/.well-known/oauth-protected-resource" {
            router = router.route(&path, get(move || serve(doc.clone())));
        }
    }
    // Metadata is public: any origin may read it, and browser clients send `MCP-Protocol-Version`.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers(Any)
        .max_age(std::time::Duration::from_secs(3600));
    router
        .route("/.well-known/{*rest}", get(not_found))
        .layer(cors)
}

async fn serve(doc: ProtectedResourceMetadata) -> Response {
    let mut response = Json(doc).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": "not_found", "error_description": "no such metadata document" })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_inserted_after_the_well_known_prefix() {
        assert_eq!(
            well_known_path("https://h/mcp"),
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            well_known_path("https://h/base/sse"),
            "/.well-known/oauth-protected-resource/base/sse"
        );
        assert_eq!(
            well_known_path("https://h"),
            "/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            well_known_url("http://127.0.0.1:8080/mcp"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
        );
    }

    #[test]
    fn offline_access_is_never_advertised() {
        let m = ProtectedResourceMetadata::new(
            "https://h/mcp",
            "https://as",
            &["a".into(), "offline_access".into()],
        );
        assert_eq!(m.scopes_supported, ["a"]);
        assert_eq!(m.bearer_methods_supported, ["header"]);
    }
}
