//! Resolving a `client_id` to what the server knows of the client: a registered client from the
//! store, or a client ID metadata document fetched from its URL.

use crate::ScopeSet;

use super::AuthServer;
use super::error::OAuthError;
use crate::store::ClientSource;

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "none" => Self::None,
            "client_secret_basic" => Self::ClientSecretBasic,
            "client_secret_post" => Self::ClientSecretPost,
            "private_key_jwt" => Self::PrivateKeyJwt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// Where a client came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Registered(ClientSource),
    MetadataDocument,
}

/// A client as the endpoints need it.
#[derive(Debug, Clone)]
pub struct ResolvedClient {
    pub client_id: String,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    /// Scopes the client may ever get (`None`: any supported scope). Set by administrators only.
    pub scope: Option<ScopeSet>,
    /// SHA-256 hex of the secret, for confidential registered clients.
    pub secret_hash: Option<String>,
    /// For `private_key_jwt` metadata-document clients.
    pub jwks_uri: Option<String>,
    pub kind: ClientKind,
}

impl ResolvedClient {
    /// Builds the view of RFC 7591 metadata (stored or fetched).
    pub fn from_metadata(
        client_id: &str,
        metadata: &serde_json::Value,
        secret_hash: Option<String>,
        kind: ClientKind,
    ) -> Self {
        let strings = |key: &str| -> Vec<String> {
            metadata
                .get(key)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let str_of = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let auth_method = str_of("token_endpoint_auth_method")
            .and_then(|m| AuthMethod::parse(&m))
            .unwrap_or(if secret_hash.is_some() {
                AuthMethod::ClientSecretBasic
            } else {
                AuthMethod::None
            });
        let mut grant_types = strings("grant_types");
        if grant_types.is_empty() {
            grant_types.push("authorization_code".into());
        }
        Self {
            client_id: client_id.to_owned(),
            name: str_of("client_name"),
            redirect_uris: strings("redirect_uris"),
            auth_method,
            grant_types,
            // Only an administrator's `scope` is a ceiling. Clients registering themselves (DCR,
            // metadata documents) name the scopes they ask for first; treating that as a limit
            // would make every later step-up impossible.
            scope: match kind {
                ClientKind::Registered(ClientSource::Admin) => {
                    str_of("scope").map(|s| ScopeSet::parse(&s))
                }
                _ => None,
            },
            secret_hash,
            jwks_uri: str_of("jwks_uri"),
            kind,
        }
    }

    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    pub fn is_confidential(&self) -> bool {
        self.auth_method != AuthMethod::None
    }

    /// Exact match against a registered redirect URI, except that loopback URIs match on any port.
    pub fn allows_redirect(&self, requested: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| redirect_uri_matches(registered, requested))
    }
}

/// Looks the client up: a stored registration, or (for `https` client ids) its metadata document.
/// `Ok(None)` when no such client exists.
pub async fn resolve(
    server: &AuthServer,
    client_id: &str,
) -> Result<Option<ResolvedClient>, OAuthError> {
    if client_id.is_empty() || client_id.len() > 2048 {
        return Ok(None);
    }
    if client_id.starts_with("https://") {
        if !server.config.metadata_documents.enabled {
            return Ok(None);
        }
        let document = super::cimd::fetch_document(server, client_id).await?;
        return Ok(Some(ResolvedClient::from_metadata(
            client_id,
            &document,
            None,
            ClientKind::MetadataDocument,
        )));
    }
    let Some(client) = server.store.client(client_id).await? else {
        return Ok(None);
    };
    Ok(Some(ResolvedClient::from_metadata(
        &client.client_id,
        &client.metadata,
        client.secret_hash.clone(),
        ClientKind::Registered(client.source),
    )))
}

/// OAuth 2.1 §2.3.1 and RFC 8252 §7.3: exact string match, but loopback redirect URIs
/// (`localhost`, `127.0.0.0/8`, `[::1]`, plain `http`) match whatever port the client picked.
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(reg), Ok(req)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    is_loopback_redirect(&reg)
        && is_loopback_redirect(&req)
        && reg.host() == req.host()
        && reg.path() == req.path()
        && reg.query() == req.query()
        // Neither may carry a fragment (RFC 6749 §3.1.2); the relaxation only forgives the port.
        && reg.fragment().is_none()
        && req.fragment().is_none()
        && reg.username() == req.username()
        && reg.password().is_none()
        && req.password().is_none()
}

/// A plain-http redirect to the local machine (a native app's listener).
pub fn is_loopback_redirect(url: &url::Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the property test `relaxation_is_loopback_only`: a registered fragment was not
    /// part of the comparison, so a loopback URI without it matched.
    #[test]
    fn a_registered_fragment_is_never_relaxed_away() {
        assert!(!redirect_uri_matches(
            "http://[::1]?x=1#f",
            "http://[::1]?x=1"
        ));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1:1/cb#f",
            "http://127.0.0.1:2/cb"
        ));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.1:2/cb"
        ));
    }

    #[test]
    fn exact_match_except_loopback_ports() {
        assert!(redirect_uri_matches(
            "https://app.example/cb",
            "https://app.example/cb"
        ));
        assert!(!redirect_uri_matches(
            "https://app.example/cb",
            "https://app.example/cb/"
        ));
        assert!(!redirect_uri_matches(
            "https://app.example/cb",
            "https://app.example:8443/cb"
        ));
        assert!(!redirect_uri_matches(
            "https://app.example/cb",
            "https://APP.example/cb?x=1"
        ));
        assert!(redirect_uri_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:53211/cb"
        ));
        assert!(redirect_uri_matches(
            "http://localhost:3000/callback",
            "http://localhost:6274/callback"
        ));
        assert!(redirect_uri_matches(
            "http://[::1]:1/cb",
            "http://[::1]:2/cb"
        ));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5/other"
        ));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1/cb",
            "http://localhost:5/cb"
        ));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5/cb#frag"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost/cb",
            "http://localhost.evil.example/cb"
        ));
        assert!(!redirect_uri_matches(
            "https://localhost/cb",
            "https://localhost:9/cb"
        ));
    }
}
