//! Authorization-server metadata discovery (RFC 8414 §3, then OpenID Connect Discovery).

use super::verifier::VerifyError;

/// The parts of an AS metadata document a resource server needs.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AuthorizationServerMetadata {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub introspection_endpoint: Option<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// The well-known URLs to try for `issuer`, in the order the MCP spec gives.
pub fn metadata_urls(issuer: &str) -> Vec<String> {
    let Ok(url) = url::Url::parse(issuer) else {
        return Vec::new();
    };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    }
}

/// Fetches the issuer's metadata and checks its `issuer` is byte-identical to the configured one.
pub async fn discover(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<AuthorizationServerMetadata, VerifyError> {
    let mut last = String::from("no metadata URL could be built from the issuer");
    for url in metadata_urls(issuer) {
        let response = match http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                last = format!("{url}: {}", e.without_url());
                continue;
            }
        };
        if !response.status().is_success() {
            last = format!("{url}: HTTP {}", response.status());
            continue;
        }
        let metadata: AuthorizationServerMetadata = match response.json().await {
            Ok(m) => m,
            Err(e) => {
                last = format!("{url}: {}", e.without_url());
                continue;
            }
        };
        if metadata.issuer != issuer {
            return Err(VerifyError::Invalid(format!(
                "the metadata at {url} names issuer {:?}, not {issuer:?}",
                metadata.issuer
            )));
        }
        return Ok(metadata);
    }
    Err(VerifyError::Unavailable(format!(
        "authorization server metadata not found ({last})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_issuers_use_path_insertion_then_appending() {
        assert_eq!(
            metadata_urls("https://as.example/tenant1"),
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant1",
                "https://as.example/.well-known/openid-configuration/tenant1",
                "https://as.example/tenant1/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            metadata_urls("http://127.0.0.1:4400"),
            [
                "http://127.0.0.1:4400/.well-known/oauth-authorization-server",
                "http://127.0.0.1:4400/.well-known/openid-configuration",
            ]
        );
    }
}
