//! The authorization endpoint (OAuth 2.1 §4.1.1) with its login and consent steps.
//!
//! `GET|POST /authorize` checks `client_id` and `redirect_uri` first: when either is bad the
//! browser gets an error page and is never redirected. Every later error goes back to the
//! client's redirect URI with `error`, `error_description`, `state` and `iss` (RFC 9207); so
//! does the code. A valid request is kept as a [`PendingAuthorization`] while the user signs in
//! (`POST /authorize/login`) and approves (`POST /authorize/consent`); it is used once.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::AuthServer;
use super::clients::{self, ClientKind, ResolvedClient};
use super::error::{ErrorCode, OAuthError};
use super::federated;
use super::pages::{self, SignedIn};
use super::{secrets, users};
use crate::ScopeSet;
use crate::resource::audience::normalise_resource;
use crate::store::{AuthorizationCode, PendingAuthorization, StoreError};

/// Request bodies of the authorization forms are small.
const MAX_FORM: usize = 64 * 1024;
/// Longer parameter values are refused (`state` included: it is echoed).
const MAX_PARAM: usize = 4096;

pub fn router() -> Router<Arc<AuthServer>> {
    Router::new()
        .route("/authorize", get(authorize_get).post(authorize_post))
        .route("/authorize/login", post(login))
        .route("/authorize/consent", post(consent))
        .merge(pages::router())
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// Request parameters in order, repeats kept (OAuth forbids repeating most of them).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The value of a parameter that may appear once; empty values count as absent
    /// (RFC 6749 §3.1). `Err` when repeated.
    fn single(&self, name: &str) -> Result<Option<&str>, String> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(format!("the {name} parameter is repeated"));
        }
        if first.is_some_and(|v| v.len() > MAX_PARAM) {
            return Err(format!("the {name} parameter is too long"));
        }
        Ok(first)
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Redirects back to the client

/// Answers to a validated client at its validated redirect URI.
pub(super) struct Reply<'a> {
    issuer: &'a str,
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

impl Reply<'_> {
    fn redirect(&self, pairs: &[(&str, &str)]) -> Response {
        let Ok(mut url) = url::Url::parse(self.redirect_uri) else {
            // Unreachable: redirect URIs are parsed before a Reply is made.
            return pages::error_page(
                StatusCode::BAD_REQUEST,
                "Invalid redirect URI",
                "The application's redirect URI is not a valid URL.",
            );
        };
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in pairs {
                query.append_pair(k, v);
            }
            if let Some(state) = self.state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", self.issuer);
        }
        let mut response = StatusCode::SEE_OTHER.into_response();
        let headers = response.headers_mut();
        match HeaderValue::from_str(url.as_str()) {
            Ok(location) => {
                headers.insert(header::LOCATION, location);
            }
            Err(_) => {
                return pages::error_page(
                    StatusCode::BAD_REQUEST,
                    "Invalid redirect URI",
                    "The application's redirect URI cannot be used.",
                );
            }
        }
        pages::security_headers(headers);
        response
    }

    pub(super) fn error(&self, code: ErrorCode, description: &str) -> Response {
        self.redirect(&[("error", code.as_str()), ("error_description", description)])
    }

    fn oauth_error(&self, e: &OAuthError) -> Response {
        self.error(e.code, &e.description)
    }

    fn code(&self, code: &str) -> Response {
        self.redirect(&[("code", code)])
    }
}

pub(super) fn reply_for<'a>(
    server: &'a AuthServer,
    pending: &'a PendingAuthorization,
) -> Reply<'a> {
    Reply {
        issuer: &server.config.issuer,
        redirect_uri: &pending.redirect_uri,
        state: pending.state.as_deref(),
    }
}

// ---------------------------------------------------------------------------------------------
// GET|POST /authorize

async fn authorize_get(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    authorize(&server, &headers, &params).await
}

async fn authorize_post(
    State(server): State<Arc<AuthServer>>,
    request: http::Request<Body>,
) -> Response {
    let (parts, body) = request.into_parts();
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim() == "application/x-www-form-urlencoded")
        });
    if !form {
        return pages::error_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Invalid request",
            "Authorization requests sent with POST must be form-encoded.",
        );
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_FORM).await else {
        return pages::error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Invalid request",
            "The authorization request is too large.",
        );
    };
    authorize(&server, &parts.headers, &Params::parse(&body)).await
}

pub(super) fn bad_request_page(message: &str) -> Response {
    pages::error_page(StatusCode::BAD_REQUEST, "Invalid sign-in request", message)
}

/// Resolves the client for an error page, or an error page.
pub(super) async fn client_or_page(
    server: &AuthServer,
    client_id: &str,
) -> Result<ResolvedClient, Response> {
    match clients::resolve(server, client_id).await {
        Ok(Some(client)) => Ok(client),
        Ok(None) => Err(bad_request_page(
            "The application asking for access is not known to this server (unknown client_id).",
        )),
        Err(e) if e.code == ErrorCode::TemporarilyUnavailable => Err(pages::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The sign-in service is temporarily unavailable.",
        )),
        Err(e) => Err(bad_request_page(&format!(
            "The application asking for access could not be verified: {}",
            e.description
        ))),
    }
}

/// The redirect URI to use: the requested one when the client registered it (loopback: any
/// port), or the only registered one when none was requested.
fn checked_redirect_uri(client: &ResolvedClient, requested: Option<&str>) -> Option<String> {
    let uri = match requested {
        Some(uri) => {
            if !client.allows_redirect(uri) {
                return None;
            }
            uri.to_owned()
        }
        None => match client.redirect_uris.as_slice() {
            [only] => only.clone(),
            _ => return None,
        },
    };
    let url = url::Url::parse(&uri).ok()?;
    (url.fragment().is_none() && !matches!(url.scheme(), "javascript" | "data" | "vbscript"))
        .then_some(uri)
}

async fn authorize(server: &Arc<AuthServer>, headers: &HeaderMap, params: &Params) -> Response {
    // 1. Client and redirect URI: an error page when either is bad, never a redirect.
    let client_id = match params.single("client_id") {
        Ok(Some(id)) => id,
        Ok(None) => {
            return bad_request_page(
                "The request does not say which application is asking (client_id is missing).",
            );
        }
        Err(e) => return bad_request_page(&e),
    };
    let client = match client_or_page(server, client_id).await {
        Ok(client) => client,
        Err(page) => return page,
    };
    let requested_redirect = match params.single("redirect_uri") {
        Ok(r) => r,
        Err(e) => return bad_request_page(&e),
    };
    let Some(redirect_uri) = checked_redirect_uri(&client, requested_redirect) else {
        return bad_request_page(if requested_redirect.is_some() {
            "The redirect URI does not match any URI the application registered."
        } else {
            "The request has no redirect_uri and the application registered several."
        });
    };

    // 2. From here on, errors go back to the client.
    let state = match params.single("state") {
        Ok(state) => state,
        Err(e) => {
            let reply = Reply {
                issuer: &server.config.issuer,
                redirect_uri: &redirect_uri,
                state: None,
            };
            return reply.error(ErrorCode::InvalidRequest, &e);
        }
    };
    let reply = Reply {
        issuer: &server.config.issuer,
        redirect_uri: &redirect_uri,
        state,
    };
    let request = match validate(server, &client, params) {
        Ok(request) => request,
        Err(e) => return reply.oauth_error(&e),
    };
    let pending = PendingAuthorization {
        id: secrets::random_token(),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        state: state.map(str::to_owned),
        code_challenge: request.code_challenge,
        resource: request.resource,
        scope: request.scope,
        prompt: request.prompt,
        csrf_token: secrets::random_token(),
        expires_at: pages::now()
            .saturating_add(i64::try_from(server.config.pending_ttl.as_secs()).unwrap_or(i64::MAX)),
    };
    let prompt = |value: &str| pending.prompt.iter().any(|p| p == value);

    // 3. Who is signing in, and did they approve this already?
    let signed = match pages::signed_in(server, headers).await {
        Ok(signed) => signed,
        Err(e) => return reply.oauth_error(&OAuthError::unavailable(e)),
    };
    if prompt("none") {
        let Some(signed) = signed else {
            return reply.error(ErrorCode::LoginRequired, "the user is not signed in");
        };
        return match has_consent(server, &signed, &pending).await {
            Ok(true) => issue_code(server, &pending, &signed).await,
            Ok(false) => reply.error(
                ErrorCode::ConsentRequired,
                "the user has not approved this request",
            ),
            Err(e) => reply.oauth_error(&OAuthError::unavailable(e)),
        };
    }
    let signed = signed.filter(|_| !prompt("login"));
    if let Some(signed) = &signed
        && !prompt("consent")
    {
        match has_consent(server, signed, &pending).await {
            Ok(true) => return issue_code(server, &pending, signed).await,
            Ok(false) => {}
            Err(e) => return reply.oauth_error(&OAuthError::unavailable(e)),
        }
    }
    if let Err(e) = server.store.put_pending(&pending).await {
        return reply.oauth_error(&OAuthError::unavailable(e));
    }
    match (signed, &server.upstream) {
        (Some(signed), _) => consent_page(server, &client, &pending, Some(&signed), None, None),
        // Proxy mode: the user approves this client here before anything goes upstream.
        (None, Some(_)) => federated::anonymous_consent_page(server, &client, &pending).await,
        (None, None) => login_page(StatusCode::OK, &client, &pending, "", None),
    }
}

/// What an authorization request asks for, once checked.
struct Validated {
    code_challenge: String,
    resource: String,
    scope: ScopeSet,
    prompt: Vec<String>,
}

fn validate(
    server: &AuthServer,
    client: &ResolvedClient,
    params: &Params,
) -> Result<Validated, OAuthError> {
    let single = |name: &str| params.single(name).map_err(OAuthError::invalid_request);

    match single("response_type")? {
        None => return Err(OAuthError::invalid_request("response_type is required")),
        Some("code") => {}
        Some(_) => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
    }
    if !client.allows_grant("authorization_code") {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the client is not registered for the authorization_code grant",
        ));
    }

    // PKCE, S256 only. A missing method means `plain` (RFC 7636 §4.3): refused too.
    let Some(challenge) = single("code_challenge")? else {
        return Err(OAuthError::invalid_request(
            "code_challenge is required (PKCE with S256)",
        ));
    };
    match single("code_challenge_method")? {
        Some("S256") => {}
        None => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method is required and must be S256",
            ));
        }
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method must be S256",
            ));
        }
    }
    // A S256 challenge is 43 base64url characters; RFC 7636's syntax allows 43–128.
    if !secrets::valid_pkce_string(challenge) {
        return Err(OAuthError::invalid_request(
            "code_challenge is not a valid PKCE challenge",
        ));
    }

    // RFC 8707 resource: one of ours, or the default audience.
    let resources = params.all("resource");
    let resource = match resources.as_slice() {
        [] => server.config.default_resource().to_owned(),
        [requested] => {
            let normalised = normalise_resource(requested).ok_or_else(|| {
                OAuthError::invalid_target("resource must be an absolute http(s) URL")
            })?;
            server
                .config
                .resources
                .iter()
                .find(|r| normalise_resource(r).as_deref() == Some(normalised.as_str()))
                .cloned()
                .ok_or_else(|| {
                    OAuthError::invalid_target(format!(
                        "this server issues no tokens for the resource {requested}"
                    ))
                })?
        }
        _ => {
            return Err(OAuthError::invalid_target(
                "only one resource may be requested",
            ));
        }
    };

    // Scope: what was asked, narrowed to what the server and the client allow.
    let allowed = |scope: &str| {
        server.config.scopes_supported.iter().any(|s| s == scope)
            && client.scope.as_ref().is_none_or(|c| c.contains(scope))
    };
    let scope = match single("scope")? {
        Some(requested) => {
            let requested = ScopeSet::parse(requested);
            let granted: ScopeSet = requested.iter().filter(|s| allowed(s)).collect();
            if granted.is_empty() && !requested.is_empty() {
                return Err(OAuthError::invalid_scope(
                    "none of the requested scopes can be granted to this client",
                ));
            }
            granted
        }
        None => server
            .config
            .default_scope
            .iter()
            .filter(|s| client.scope.as_ref().is_none_or(|c| c.contains(s)))
            .collect(),
    };

    // prompt (OpenID Connect Core §3.1.2.1): `none` cannot be combined with anything else.
    let prompt: Vec<String> = match single("prompt")? {
        Some(p) => p
            .split(' ')
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    if prompt.iter().any(|p| p == "none") && prompt.len() > 1 {
        return Err(OAuthError::invalid_request(
            "prompt=none cannot be combined with other values",
        ));
    }

    Ok(Validated {
        code_challenge: challenge.to_owned(),
        resource,
        scope,
        prompt,
    })
}

async fn has_consent(
    server: &AuthServer,
    signed: &SignedIn,
    pending: &PendingAuthorization,
) -> Result<bool, StoreError> {
    Ok(server
        .store
        .consent(&signed.user.id, &pending.client_id)
        .await?
        .is_some_and(|approved| approved.is_superset_of(&pending.scope)))
}

/// Stores a code for the request and sends the browser back with it.
pub(super) async fn issue_code(
    server: &AuthServer,
    pending: &PendingAuthorization,
    signed: &SignedIn,
) -> Response {
    let reply = reply_for(server, pending);
    let code = secrets::random_token();
    let record = AuthorizationCode {
        code_hash: secrets::hash(&code),
        client_id: pending.client_id.clone(),
        user_id: signed.user.id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        resource: pending.resource.clone(),
        scope: pending.scope.clone(),
        expires_at: pages::now()
            .saturating_add(i64::try_from(server.config.code_ttl.as_secs()).unwrap_or(i64::MAX)),
        family_id: None,
    };
    if let Err(e) = server.store.create_code(&record).await {
        return reply.oauth_error(&OAuthError::unavailable(e));
    }
    tracing::info!(
        client_id = %pending.client_id,
        user = %signed.user.username,
        scope = %pending.scope,
        resource = %pending.resource,
        "authorization code issued"
    );
    reply.code(&code)
}

// ---------------------------------------------------------------------------------------------
// Pages

fn client_display_name(client: &ResolvedClient) -> String {
    client
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| client.client_id.clone())
}

fn login_page(
    status: StatusCode,
    client: &ResolvedClient,
    pending: &PendingAuthorization,
    username: &str,
    error: Option<&str>,
) -> Response {
    let name = client_display_name(client);
    // Signing in may end in a redirect to the client (consent already given).
    let targets: Vec<String> = pages::csp_source(&pending.redirect_uri)
        .into_iter()
        .collect();
    pages::render(
        status,
        &pages::LoginPage {
            client_name: Some(&name),
            action: "/authorize/login",
            pending: &pending.id,
            csrf: &pending.csrf_token,
            username,
            error,
        },
        &targets,
    )
}

/// The consent page. Signed in, it approves through `/authorize/consent`; in proxy mode before
/// the user signed in upstream (`signed` is `None`), through `/authorize/upstream`, which goes on
/// to the upstream IdP whose authorization endpoint is `upstream_target`.
pub(super) fn consent_page(
    server: &AuthServer,
    client: &ResolvedClient,
    pending: &PendingAuthorization,
    signed: Option<&SignedIn>,
    set_cookie: Option<&str>,
    upstream_target: Option<&str>,
) -> Response {
    let name = client_display_name(client);
    let client_host = match client.kind {
        ClientKind::MetadataDocument => url::Url::parse(&client.client_id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned)),
        ClientKind::Registered(_) => None,
    };
    let redirect = url::Url::parse(&pending.redirect_uri).ok();
    let redirect_host = redirect
        .as_ref()
        .map(|u| match u.host_str() {
            Some(host) => match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            },
            // Private-use scheme of a native app: show the scheme.
            None => format!("{}:", u.scheme()),
        })
        .unwrap_or_else(|| pending.redirect_uri.clone());
    let loopback = redirect.as_ref().is_some_and(clients::is_loopback_redirect);
    let scopes = pending
        .scope
        .iter()
        .map(|scope| pages::ScopeView {
            name: scope.to_owned(),
            description: server
                .config
                .scope_descriptions
                .iter()
                .find(|(s, _)| s == scope)
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| scope.to_owned()),
        })
        .collect();
    // Signed in: bound to the session too. Not signed in (proxy mode): the form's own secret,
    // shown only to the browser that made the request.
    let csrf = match signed {
        Some(signed) => pages::bound_csrf(&pending.csrf_token, &signed.cookie_value),
        None => pending.csrf_token.clone(),
    };
    let targets: Vec<String> = [Some(pending.redirect_uri.as_str()), upstream_target]
        .into_iter()
        .flatten()
        .filter_map(pages::csp_source)
        .collect();
    let mut response = pages::render(
        StatusCode::OK,
        &pages::ConsentPage {
            client_name: &name,
            client_host: client_host.as_deref(),
            redirect_host: &redirect_host,
            loopback,
            resource: &pending.resource,
            scopes,
            username: signed.map(|s| s.user.username.as_str()),
            action: if signed.is_some() {
                "/authorize/consent"
            } else {
                "/authorize/upstream"
            },
            upstream: server.upstream.as_ref().map(|u| u.display_name()),
            pending: &pending.id,
            csrf: &csrf,
        },
        &targets,
    );
    if let Some(cookie) = set_cookie {
        pages::add_cookie(&mut response, cookie);
    }
    response
}

pub(super) fn expired_page() -> Response {
    pages::error_page(
        StatusCode::BAD_REQUEST,
        "This sign-in has expired",
        "This sign-in request has expired or was already used.",
    )
}

/// The pending request a form refers to, and the form's fields.
pub(super) async fn pending_form(
    server: &AuthServer,
    headers: &HeaderMap,
    body: Body,
) -> Result<(PendingAuthorization, HashMap<String, String>), Response> {
    if pages::cross_site_post(headers) {
        return Err(pages::forbidden_cross_site());
    }
    let Ok(body): Result<Bytes, _> = axum::body::to_bytes(body, MAX_FORM).await else {
        return Err(bad_request_page("The form is too large."));
    };
    let fields = pages::form_fields(&body);
    let Some(id) = fields
        .get("pending")
        .filter(|id| !id.is_empty() && id.len() <= 128)
    else {
        return Err(expired_page());
    };
    match server.store.pending(id, pages::now()).await {
        Ok(Some(pending)) => Ok((pending, fields)),
        Ok(None) => Err(expired_page()),
        Err(e) => Err(pages::unavailable_page(&e)),
    }
}

// ---------------------------------------------------------------------------------------------
// POST /authorize/login

async fn login(State(server): State<Arc<AuthServer>>, request: http::Request<Body>) -> Response {
    if let Some(upstream) = &server.upstream {
        return federated::password_sign_in_disabled(upstream);
    }
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let (pending, fields) = match pending_form(&server, headers, body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    if !secrets::equal(field("csrf"), &pending.csrf_token) {
        return pages::bad_csrf();
    }
    let client = match client_or_page(&server, &pending.client_id).await {
        Ok(client) => client,
        Err(page) => return page,
    };
    let username = field("username");
    let ip = pages::client_ip(&parts.extensions);
    let throttle = users::throttle(&server);
    if let Err(wait) = throttle.check(username, ip) {
        tracing::warn!(user = %username, ip = ?ip, "login throttled");
        return pages::too_many_attempts(wait);
    }
    let user = match users::authenticate(server.store.as_ref(), username, field("password")).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            throttle.record_failure(username, ip);
            tracing::info!(user = %username, ip = ?ip, "login failed");
            return login_page(
                StatusCode::BAD_REQUEST,
                &client,
                &pending,
                username,
                Some(pages::INVALID_CREDENTIALS),
            );
        }
        Err(e) => return pages::unavailable_page(&e),
    };
    throttle.record_success(username);
    let (signed, set_cookie) = match pages::sign_in(&server, headers, user).await {
        Ok(ok) => ok,
        Err(e) => return pages::unavailable_page(&e),
    };
    tracing::info!(user = %signed.user.username, "signed in");
    let prompted_consent = pending.prompt.iter().any(|p| p == "consent");
    if !prompted_consent {
        match has_consent(&server, &signed, &pending).await {
            Ok(true) => {
                match server.store.delete_pending(&pending.id).await {
                    Ok(true) => {}
                    Ok(false) => return already_used(),
                    Err(e) => return pages::unavailable_page(&e),
                }
                let mut response = issue_code(&server, &pending, &signed).await;
                pages::add_cookie(&mut response, &set_cookie);
                return response;
            }
            Ok(false) => {}
            Err(e) => return pages::unavailable_page(&e),
        }
    }
    consent_page(
        &server,
        &client,
        &pending,
        Some(&signed),
        Some(&set_cookie),
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// POST /authorize/consent

async fn consent(State(server): State<Arc<AuthServer>>, request: http::Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let (pending, fields) = match pending_form(&server, headers, body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    let signed = match pages::signed_in(&server, headers).await {
        Ok(Some(signed)) => signed,
        Ok(None) => {
            // The session ended (or the cookie was refused): sign in again for this request.
            let client = match client_or_page(&server, &pending.client_id).await {
                Ok(client) => client,
                Err(page) => return page,
            };
            if server.upstream.is_some() {
                return federated::anonymous_consent_page(&server, &client, &pending).await;
            }
            return login_page(
                StatusCode::OK,
                &client,
                &pending,
                "",
                Some("Your session has ended. Sign in again to continue."),
            );
        }
        Err(e) => return pages::unavailable_page(&e),
    };
    let expected = pages::bound_csrf(&pending.csrf_token, &signed.cookie_value);
    if !secrets::equal(field("csrf"), &expected) {
        return pages::bad_csrf();
    }
    let decision = field("decision");
    if !matches!(decision, "approve" | "deny") {
        return bad_request_page("The form did not say whether to approve or deny.");
    }
    // Single use, whatever the decision: of two concurrent submissions only one proceeds.
    match server.store.delete_pending(&pending.id).await {
        Ok(true) => {}
        Ok(false) => return already_used(),
        Err(e) => return pages::unavailable_page(&e),
    }
    let reply = reply_for(&server, &pending);
    if decision == "deny" {
        tracing::info!(client_id = %pending.client_id, user = %signed.user.username, "consent denied");
        return reply.error(ErrorCode::AccessDenied, "the user denied the request");
    }
    // The client may have been removed while the user was deciding.
    if let Err(page) = client_or_page(&server, &pending.client_id).await {
        return page;
    }
    if let Err(e) = server
        .store
        .grant_consent(
            &signed.user.id,
            &pending.client_id,
            &pending.scope,
            pages::now(),
        )
        .await
    {
        return reply.oauth_error(&OAuthError::unavailable(e));
    }
    issue_code(&server, &pending, &signed).await
}

/// A second submission of the same authorization request.
pub(super) fn already_used() -> Response {
    bad_request_page("This sign-in request was already used. Start again from your application.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_repeats_and_ignore_empty_values() {
        let p = Params::parse(b"a=1&b=&c=x&c=y&resource=r1&resource=r2");
        assert_eq!(p.single("a"), Ok(Some("1")));
        assert_eq!(p.single("b"), Ok(None));
        assert!(p.single("c").is_err());
        assert_eq!(p.single("d"), Ok(None));
        assert_eq!(p.all("resource"), vec!["r1", "r2"]);
    }
}
