//! `Host` and `Origin` validation: the DNS-rebinding and cross-site defences of the MCP transport spec.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri, header};
use mcpgate_auth::resource::layer::refuse_unread;

/// Which `Host` and `Origin` values a request may carry.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// Lowercase host names, optionally with `:port`. Empty with `check_host` off.
    allowed_hosts: Vec<String>,
    check_host: bool,
    /// Normalised `scheme://host[:port]` origins, or `*`.
    allowed_origins: Vec<String>,
}

impl OriginPolicy {
    pub fn new(allowed_hosts: &[String], check_host: bool, allowed_origins: &[String]) -> Self {
        Self {
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| normalise_host_entry(h))
                .collect(),
            check_host,
            allowed_origins: allowed_origins
                .iter()
                .map(|o| normalise_origin(o))
                .collect(),
        }
    }

    /// `Err(reason)` when the request must be refused with 403.
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), &'static str> {
        let authority = request_authority(headers, uri);
        if self.check_host {
            let authority = authority
                .as_deref()
                .ok_or("the request has no Host header")?;
            if !self.host_allowed(authority) {
                return Err("the Host header is not allowed (DNS-rebinding protection)");
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .map_err(|_| "the Origin header is not valid")?;
        let origin = normalise_origin(origin);
        if self
            .allowed_origins
            .iter()
            .any(|o| o == "*" || *o == origin)
        {
            return Ok(());
        }
        // Same-origin requests (our own pages) are fine once the Host itself passed.
        let same_origin = authority.as_deref().is_some_and(|authority| {
            origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest == authority || rest == strip_default_port(authority))
        });
        if same_origin {
            return Ok(());
        }
        Err("the Origin is not allowed")
    }

    fn host_allowed(&self, authority: &str) -> bool {
        let host = host_of(authority);
        self.allowed_hosts
            .iter()
            .any(|entry| entry == authority || entry == host)
    }
}

fn request_authority(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .map(|a| a.to_ascii_lowercase())
}

/// The host of `host[:port]`, with IPv6 brackets removed.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

fn strip_default_port(authority: &str) -> &str {
    authority
        .strip_suffix(":80")
        .or_else(|| authority.strip_suffix(":443"))
        .unwrap_or(authority)
}

fn normalise_host_entry(entry: &str) -> String {
    let entry = entry.trim().to_ascii_lowercase();
    // "::1" and "[::1]" both name the IPv6 loopback.
    entry
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

fn normalise_origin(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    match origin.split_once("://") {
        Some(("http", rest)) => format!("http://{}", rest.strip_suffix(":80").unwrap_or(rest)),
        Some(("https", rest)) => format!("https://{}", rest.strip_suffix(":443").unwrap_or(rest)),
        _ => origin,
    }
}

/// Middleware answering 403 with a JSON-RPC error body to requests the policy refuses.
pub async fn check_origin(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(reason) = policy.check(request.headers(), request.uri()) {
        let body = request.into_body();
        metrics::counter!("mcpgate_forbidden_origin_total").increment(1);
        let json = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": -32600, "message": format!("Forbidden: {reason}") },
        });
        let response = (StatusCode::FORBIDDEN, axum::Json(json)).into_response();
        return refuse_unread(body, response).await;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn loopback() -> OriginPolicy {
        OriginPolicy::new(
            &["localhost".into(), "127.0.0.1".into(), "::1".into()],
            true,
            &["https://app.example".into()],
        )
    }

    fn req(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        if let Some(origin) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        h
    }

    #[test]
    fn loopback_hosts_pass_on_any_port() {
        let p = loopback();
        let uri = Uri::from_static("/mcp");
        for host in [
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:9",
            "LOCALHOST",
            "localhost",
        ] {
            assert_eq!(p.check(&req(Some(host), None), &uri), Ok(()), "{host}");
        }
    }

    #[test]
    fn foreign_hosts_are_refused() {
        let p = loopback();
        let uri = Uri::from_static("/mcp");
        for host in [
            "evil.example.com",
            "evil.example.com:8080",
            "localhost.evil.com",
            "127.0.0.2",
        ] {
            assert!(p.check(&req(Some(host), None), &uri).is_err(), "{host}");
        }
        assert!(p.check(&req(None, None), &uri).is_err());
    }

    #[test]
    fn host_entries_with_a_port_match_only_that_port() {
        let p = OriginPolicy::new(&["mcp.example.com:8443".into()], true, &[]);
        let uri = Uri::from_static("/mcp");
        assert!(
            p.check(&req(Some("mcp.example.com:8443"), None), &uri)
                .is_ok()
        );
        assert!(
            p.check(&req(Some("mcp.example.com:9000"), None), &uri)
                .is_err()
        );
    }

    #[test]
    fn origins_must_be_listed_or_same_origin() {
        let p = loopback();
        let uri = Uri::from_static("/mcp");
        assert!(
            p.check(
                &req(Some("localhost:3000"), Some("https://app.example")),
                &uri
            )
            .is_ok()
        );
        assert!(
            p.check(
                &req(Some("localhost:3000"), Some("https://APP.example:443/")),
                &uri
            )
            .is_ok()
        );
        assert!(
            p.check(
                &req(Some("localhost:3000"), Some("http://localhost:3000")),
                &uri
            )
            .is_ok()
        );
        assert!(
            p.check(
                &req(Some("localhost:3000"), Some("http://localhost:3001")),
                &uri
            )
            .is_err()
        );
        assert!(
            p.check(
                &req(Some("localhost:3000"), Some("https://evil.example")),
                &uri
            )
            .is_err()
        );
        assert!(
            p.check(&req(Some("localhost:3000"), Some("null")), &uri)
                .is_err()
        );
    }

    #[test]
    fn without_host_checking_the_origin_is_still_checked() {
        let p = OriginPolicy::new(&[], false, &[]);
        let uri = Uri::from_static("/mcp");
        assert!(p.check(&req(Some("anything.example"), None), &uri).is_ok());
        assert!(
            p.check(&req(Some("mcp.example"), Some("https://mcp.example")), &uri)
                .is_ok()
        );
        assert!(
            p.check(
                &req(Some("mcp.example"), Some("https://evil.example")),
                &uri
            )
            .is_err()
        );
    }

    #[test]
    fn wildcard_allows_any_origin() {
        let p = OriginPolicy::new(&["localhost".into()], true, &["*".into()]);
        let uri = Uri::from_static("/mcp");
        assert!(
            p.check(&req(Some("localhost"), Some("https://any.example")), &uri)
                .is_ok()
        );
    }
}
