//! The token endpoint (`POST /token`): `authorization_code` (PKCE S256), `refresh_token` (rotation
//! in families, replay detection with a grace window) and `client_credentials`; RFC 9068 access
//! tokens.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AuthServer;
use super::client_auth::{Form, authenticate_client};
use super::clients::{ClientKind, ResolvedClient};
use super::error::{ErrorCode, OAuthError};
use super::secrets;
use crate::ScopeSet;
use crate::resource::claims::now_secs;
use crate::resource::normalise_resource;
use crate::store::{
    AuthorizationCode, CodeExchange, RefreshRedemption, RefreshRotation, RefreshToken, StoreError,
    Timestamp, TokenFamily,
};

pub fn router() -> Router<Arc<AuthServer>> {
    Router::new()
        .route("/token", post(token_endpoint))
        .layer(endpoint_cors())
}

/// CORS for the endpoints browser-based clients call directly (token, revocation,
/// introspection): any origin, no cookies, the MCP request headers allowed.
pub fn endpoint_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("mcp-protocol-version"),
        ])
}

/// The claims of the access tokens this server issues (RFC 9068), as signed and as verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    /// The user id; the client id for `client_credentials`.
    pub sub: String,
    /// The canonical resource URL.
    pub aud: String,
    pub exp: Timestamp,
    pub iat: Timestamp,
    pub nbf: Timestamp,
    pub jti: String,
    pub client_id: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// The token family (grant) of this token; `client_credentials` get one without refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
    /// The user's name, for user grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
}

impl AccessTokenClaims {
    pub fn scopes(&self) -> ScopeSet {
        ScopeSet::parse(&self.scope)
    }
}

/// Verifies an access token of this server (signature with one of our keys, `typ`, issuer) and
/// returns its claims. With `check_time`, expired and not-yet-valid tokens are refused too.
/// Revocation is not checked here.
pub fn decode_access_token(
    server: &AuthServer,
    token: &str,
    check_time: bool,
) -> Option<AccessTokenClaims> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != Algorithm::ES256
        || !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
    {
        return None;
    }
    let key = server.keys.decoding_key(header.kid.as_deref()?)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.validate_exp = check_time;
    validation.validate_nbf = check_time;
    validation.set_issuer(&[&server.config.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<AccessTokenClaims>(token, &key, &validation)
        .ok()?
        .claims;
    if check_time {
        let now = now_secs();
        if claims.exp <= now || claims.nbf > now {
            return None;
        }
    }
    Some(claims)
}

/// `Cache-Control: no-store` and `Pragma: no-cache` on a response.
pub fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn token_endpoint(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&server, &headers, &body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    server: &AuthServer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let form = Form::from_request(headers, body)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !matches!(
        grant_type,
        "authorization_code" | "refresh_token" | "client_credentials"
    ) {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "this grant type is not supported",
        ));
    }
    let client = authenticate_client(server, headers, &form).await?;
    let issued = match grant_type {
        "authorization_code" => authorization_code(server, &client, &form).await?,
        "refresh_token" => refresh_token(server, &client, &form).await?,
        _ => client_credentials(server, &client, &form).await?,
    };
    Ok(issued.into_response())
}

/// A successful token response.
struct Issued {
    access_token: String,
    expires_in: u64,
    scope: ScopeSet,
    refresh_token: Option<String>,
}

/// The JSON of [`Issued`] (RFC 6749 §5.1), serialised straight from borrowed fields.
#[derive(Serialize)]
struct IssuedJson<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

impl IntoResponse for Issued {
    fn into_response(self) -> Response {
        let body = IssuedJson {
            access_token: &self.access_token,
            token_type: "Bearer",
            expires_in: self.expires_in,
            scope: (!self.scope.is_empty()).then(|| self.scope.to_string()),
            refresh_token: self.refresh_token.as_deref(),
        };
        no_store(axum::Json(body).into_response())
    }
}

fn unauthorized_client(description: &str) -> OAuthError {
    OAuthError::new(ErrorCode::UnauthorizedClient, description)
}

/// Whether the client gets (and may use) refresh tokens: it declared the grant, or declared no
/// grant types at all (which [`ResolvedClient`] shows as `["authorization_code"]`).
fn may_refresh(client: &ResolvedClient) -> bool {
    client.allows_grant("refresh_token")
        || (client.grant_types.len() == 1 && client.allows_grant("authorization_code"))
}

fn same_resource(requested: &str, granted: &str) -> bool {
    match (normalise_resource(requested), normalise_resource(granted)) {
        (Some(a), Some(b)) => a == b,
        _ => requested == granted,
    }
}

/// What an access token is about.
struct Subject<'a> {
    sub: &'a str,
    username: Option<String>,
    family_id: Option<&'a str>,
}

fn sign_access_token(
    server: &AuthServer,
    client_id: &str,
    subject: Subject<'_>,
    audience: &str,
    scope: &ScopeSet,
    now: Timestamp,
) -> Result<(String, u64), OAuthError> {
    let ttl = server.config.access_token_ttl.as_secs();
    let claims = AccessTokenClaims {
        iss: server.config.issuer.clone(),
        sub: subject.sub.to_owned(),
        aud: audience.to_owned(),
        exp: now + ttl as i64,
        iat: now,
        nbf: now,
        jti: secrets::random_token(),
        client_id: client_id.to_owned(),
        scope: scope.to_string(),
        fam: subject.family_id.map(str::to_owned),
        preferred_username: subject.username,
    };
    let token = server.keys.sign(&claims).map_err(OAuthError::unavailable)?;
    Ok((token, ttl))
}

/// What an `authorization_code` request must match in the code it presents.
struct CodeRequest {
    client_id: String,
    redirect_uri: String,
    verifier: String,
    resource: Option<String>,
}

impl CodeRequest {
    /// Whether this request may have a grant from `code` (whose user is `username`, `None` if
    /// the user is gone); the error says why not. Pure: it runs inside the store's transaction
    /// to decide, and again outside to explain a refusal.
    fn check(&self, code: &AuthorizationCode, username: Option<&str>) -> Result<(), OAuthError> {
        if code.client_id != self.client_id {
            return Err(OAuthError::invalid_grant(
                "the authorization code was issued to another client",
            ));
        }
        if code.redirect_uri != self.redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        if !secrets::pkce_matches(&self.verifier, &code.code_challenge) {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code challenge",
            ));
        }
        if let Some(resource) = &self.resource
            && !same_resource(resource, &code.resource)
        {
            return Err(OAuthError::invalid_target(
                "the resource differs from the one authorized",
            ));
        }
        if username.is_none() {
            return Err(user_gone());
        }
        Ok(())
    }
}

fn user_gone() -> OAuthError {
    OAuthError::invalid_grant("the user of this grant no longer exists")
}

async fn authorization_code(
    server: &AuthServer,
    client: &ResolvedClient,
    form: &Form,
) -> Result<Issued, OAuthError> {
    if !client.allows_grant("authorization_code") {
        return Err(unauthorized_client(
            "this client may not use the authorization_code grant",
        ));
    }
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let verifier = form
        .get("code_verifier")
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
    if !secrets::valid_pkce_string(verifier) {
        return Err(OAuthError::invalid_request("code_verifier is malformed"));
    }
    let redirect_uri = form
        .get("redirect_uri")
        .ok_or_else(|| OAuthError::invalid_request("redirect_uri is required"))?;
    let request = Arc::new(CodeRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        verifier: verifier.to_owned(),
        resource: form.resource()?.map(str::to_owned),
    });
    let now = now_secs();
    let code_hash = secrets::hash(code);

    // Everything random or derived from the request is prepared here, outside the store's
    // write lock; the grant only fills in what the code says.
    let family_id = secrets::random_token();
    let refresh = may_refresh(client).then(secrets::random_token);
    let refresh_hash = refresh.as_deref().map(secrets::hash);
    let refresh_ttl = server.config.refresh_token_ttl.as_secs() as i64;
    let grant = {
        let request = Arc::clone(&request);
        let family_id = family_id.clone();
        Box::new(move |code: &AuthorizationCode, username: Option<&str>| {
            request.check(code, username).ok()?;
            let family = TokenFamily {
                family_id: family_id.clone(),
                client_id: request.client_id.clone(),
                user_id: Some(code.user_id.clone()),
                scope: code.scope.clone(),
                resource: code.resource.clone(),
                created_at: now,
                revoked_at: None,
            };
            let first = refresh_hash.map(|token_hash| RefreshToken {
                token_hash,
                family_id,
                scope: code.scope.clone(),
                resource: code.resource.clone(),
                expires_at: now + refresh_ttl,
                created_at: now,
                rotated_at: None,
            });
            Some((family, first))
        })
    };
    // One transaction: the code is spent, and on its first use the grant is created, together.
    let exchanged = server
        .store
        .exchange_code(&code_hash, now, grant)
        .await
        .map_err(|e| match e {
            // Linked already (a concurrent exchange of the same code won).
            StoreError::Conflict(_) => {
                OAuthError::invalid_grant("the authorization code was already used")
            }
            other => other.into(),
        })?;
    let (code, username) = match exchanged {
        CodeExchange::Issued { code, username } => (code, username),
        // The code is spent, whatever the reason of the refusal.
        CodeExchange::Refused { code, username } => {
            return Err(request
                .check(&code, username.as_deref())
                .err()
                .unwrap_or_else(user_gone));
        }
        CodeExchange::Replayed(code) => {
            tracing::warn!(client_id = %code.client_id, "authorization code replayed; its grant is revoked");
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used",
            ));
        }
        CodeExchange::Unknown => {
            return Err(OAuthError::invalid_grant(
                "the authorization code is invalid or expired",
            ));
        }
    };
    let (access_token, expires_in) = sign_access_token(
        server,
        &client.client_id,
        Subject {
            sub: &code.user_id,
            username,
            family_id: Some(&family_id),
        },
        &code.resource,
        &code.scope,
        now,
    )?;
    Ok(Issued {
        access_token,
        expires_in,
        scope: code.scope,
        refresh_token: refresh,
    })
}

/// What a `refresh_token` request must match in the token it presents.
struct RefreshRequest {
    client_id: String,
    scope: Option<ScopeSet>,
    resource: Option<String>,
}

impl RefreshRequest {
    /// Whether this request may use `token` of `family` (whose user is `username`); the error
    /// says why not. Pure: it runs inside the store's transaction, before anything is rotated,
    /// and again outside to explain a refusal.
    fn check(
        &self,
        token: &RefreshToken,
        family: &TokenFamily,
        username: Option<&str>,
    ) -> Result<(), OAuthError> {
        if family.client_id != self.client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if let Some(requested) = &self.scope
            && !token.scope.is_superset_of(requested)
        {
            return Err(OAuthError::invalid_scope(
                "the requested scope exceeds the scope of the grant",
            ));
        }
        if let Some(resource) = &self.resource
            && !same_resource(resource, &token.resource)
        {
            return Err(OAuthError::invalid_target(
                "the resource differs from the one of the grant",
            ));
        }
        if family.user_id.is_some() && username.is_none() {
            return Err(user_gone());
        }
        Ok(())
    }
}

async fn refresh_token(
    server: &AuthServer,
    client: &ResolvedClient,
    form: &Form,
) -> Result<Issued, OAuthError> {
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    if !may_refresh(client) {
        return Err(unauthorized_client(
            "this client may not use the refresh_token grant",
        ));
    }
    let request = Arc::new(RefreshRequest {
        client_id: client.client_id.clone(),
        scope: form
            .get("scope")
            .map(ScopeSet::parse)
            .filter(|s| !s.is_empty()),
        resource: form.resource()?.map(str::to_owned),
    });
    let now = now_secs();
    let token_hash = secrets::hash(presented);
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");

    // The successor is made before the store has found the token (outside its write lock);
    // the store puts it in the presented token's family with that token's scope and resource.
    let successor_token = secrets::random_token();
    let successor = RefreshToken {
        token_hash: secrets::hash(&successor_token),
        family_id: String::new(),
        scope: ScopeSet::default(),
        resource: String::new(),
        expires_at: now + server.config.refresh_token_ttl.as_secs() as i64,
        created_at: now,
        rotated_at: None,
    };
    let grace = server.config.refresh_grace.as_secs() as i64;
    let check = {
        let request = Arc::clone(&request);
        Box::new(
            move |token: &RefreshToken, family: &TokenFamily, username: Option<&str>| {
                request.check(token, family, username).is_ok()
            },
        )
    };
    // Checks that must not rotate anything when they fail run first, in the same transaction.
    let rotation = server
        .store
        .rotate_refresh(&token_hash, &successor, now, grace, check)
        .await?;
    let (redemption, username) = match rotation {
        RefreshRotation::Refused {
            token,
            family,
            username,
        } => {
            return Err(request
                .check(&token, &family, username.as_deref())
                .err()
                .unwrap_or_else(invalid));
        }
        RefreshRotation::Redeemed {
            redemption,
            username,
        } => (redemption, username),
    };
    let (token, family) = match redemption {
        RefreshRedemption::Current { token, family }
        | RefreshRedemption::WithinGrace { token, family } => (token, family),
        RefreshRedemption::Replayed { family } => {
            tracing::warn!(client_id = %family.client_id, "rotated refresh token replayed; its grant is revoked");
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; the grant is revoked",
            ));
        }
        RefreshRedemption::Invalid => return Err(invalid()),
    };
    let scope = request.scope.clone().unwrap_or_else(|| token.scope.clone());
    let sub = family.user_id.as_deref().unwrap_or(&family.client_id);
    let (access_token, expires_in) = sign_access_token(
        server,
        &client.client_id,
        Subject {
            sub,
            username,
            family_id: Some(&family.family_id),
        },
        &token.resource,
        &scope,
        now,
    )?;
    Ok(Issued {
        access_token,
        expires_in,
        scope,
        refresh_token: Some(successor_token),
    })
}

async fn client_credentials(
    server: &AuthServer,
    client: &ResolvedClient,
    form: &Form,
) -> Result<Issued, OAuthError> {
    if !client.is_confidential()
        || !matches!(client.kind, ClientKind::Registered(_))
        || !client.allows_grant("client_credentials")
    {
        return Err(unauthorized_client(
            "this client may not use the client_credentials grant",
        ));
    }
    let supported = |s: &str| server.config.scopes_supported.iter().any(|x| x == s);
    let allowed = |s: &str| {
        supported(s)
            && client
                .scope
                .as_ref()
                .is_none_or(|client_scope| client_scope.contains(s))
    };
    let scope: ScopeSet = match form.get("scope").map(ScopeSet::parse) {
        Some(requested) if !requested.is_empty() => {
            let granted: ScopeSet = requested.iter().filter(|s| allowed(s)).collect();
            if granted.is_empty() {
                return Err(OAuthError::invalid_scope(
                    "none of the requested scopes may be granted to this client",
                ));
            }
            granted
        }
        _ => match &client.scope {
            Some(client_scope) => client_scope.iter().filter(|s| supported(s)).collect(),
            None => server.config.default_scope.clone(),
        },
    };
    let audience = match form.resource()? {
        Some(requested) => {
            let wanted = normalise_resource(requested)
                .ok_or_else(|| OAuthError::invalid_target("the resource is not a URL"))?;
            server
                .config
                .resources
                .iter()
                .find(|r| normalise_resource(r).as_deref() == Some(wanted.as_str()))
                .cloned()
                .ok_or_else(|| {
                    OAuthError::invalid_target("this server issues no tokens for that resource")
                })?
        }
        None => server.config.default_resource().to_owned(),
    };
    let now = now_secs();
    // A grant of its own (no refresh token), so that `tokens revoke --client` and client
    // deletion end these tokens before they expire, like every other grant.
    let family = TokenFamily {
        family_id: secrets::random_token(),
        client_id: client.client_id.clone(),
        user_id: None,
        scope: scope.clone(),
        resource: audience.clone(),
        created_at: now,
        revoked_at: None,
    };
    server.store.create_family(&family, None, None).await?;
    let (access_token, expires_in) = sign_access_token(
        server,
        &client.client_id,
        Subject {
            sub: &client.client_id,
            username: None,
            family_id: Some(&family.family_id),
        },
        &audience,
        &scope,
        now,
    )?;
    Ok(Issued {
        access_token,
        expires_in,
        scope,
        refresh_token: None,
    })
}
