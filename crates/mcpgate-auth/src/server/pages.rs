//! The HTML side of the authorization server: askama templates, the security headers every page
//! carries, the browser-session cookie, and the "authorized applications" page (`/consents`)
//! where a signed-in user revokes what they approved.
//!
//! No page uses JavaScript. Every form carries a CSRF token; every page forbids framing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::AuthServer;
use super::secrets;
use super::users;
use crate::store::{BrowserSession, StoreError, StoreResult, Timestamp, User};

/// The browser-session cookie: `__Host-` (Secure, no Domain, Path=/), HttpOnly, SameSite=Lax.
pub const SESSION_COOKIE: &str = "__Host-mcpgate-session";
/// Double-submit CSRF cookie of the stand-alone sign-in form on `/consents`.
pub const CSRF_COOKIE: &str = "__Host-mcpgate-csrf";

pub(crate) fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Templates

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub hint: &'a str,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    /// `None` on the stand-alone sign-in of `/consents`.
    pub client_name: Option<&'a str>,
    pub action: &'a str,
    /// Empty on the stand-alone sign-in.
    pub pending: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
}

pub struct ScopeView {
    pub name: String,
    pub description: String,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub client_name: &'a str,
    /// The host of a metadata-document client's `client_id`.
    pub client_host: Option<&'a str>,
    pub redirect_host: &'a str,
    pub loopback: bool,
    pub resource: &'a str,
    pub scopes: Vec<ScopeView>,
    /// `None` in proxy mode before the user signed in upstream.
    pub username: Option<&'a str>,
    /// Where the form posts.
    pub action: &'a str,
    /// Proxy mode: the IdP the user signs in at next.
    pub upstream: Option<&'a str>,
    pub pending: &'a str,
    pub csrf: &'a str,
}

pub struct ConsentEntry {
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
}

#[derive(Template)]
#[template(path = "consents.html")]
pub struct ConsentsPage<'a> {
    pub username: &'a str,
    pub csrf: &'a str,
    pub entries: Vec<ConsentEntry>,
    pub notice: Option<&'a str>,
}

// ---------------------------------------------------------------------------------------------
// Responses

/// A `form-action` CSP source allowing a form submission to end in a redirect to `uri`
/// (browsers apply `form-action` to the redirects that follow a submission).
pub fn csp_source(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    let scheme = url.scheme();
    match scheme {
        "http" | "https" => {
            let host = url.host_str()?;
            // CSP host sources cannot name IPv6 literals; fall back to the scheme.
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            {
                return Some(format!("{scheme}:"));
            }
            Some(match url.port() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            })
        }
        _ => Some(format!("{scheme}:")),
    }
}

/// An HTML response with the headers every page carries. `form_targets` are extra
/// `form-action` sources (the client's redirect URI, for forms that may end in a redirect there).
pub fn html(status: StatusCode, body: String, form_targets: &[String]) -> Response {
    let mut form_action = String::from("'self'");
    for target in form_targets {
        form_action.push(' ');
        form_action.push_str(target);
    }
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
         form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(headers);
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// Anti-framing, no caching, no referrer, no sniffing: also on redirects from the pages.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

pub fn render<T: Template>(status: StatusCode, page: &T, form_targets: &[String]) -> Response {
    match page.render() {
        Ok(body) => html(status, body, form_targets),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>Internal error.</p>".into(),
                &[],
            )
        }
    }
}

/// An error page (never a redirect).
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let hint = if status.is_server_error() {
        "Please try again in a moment."
    } else {
        "Go back to the application and start the sign-in again. If this keeps happening, \
         contact the person who runs this server."
    };
    let mut response = render(
        status,
        &ErrorPage {
            title,
            message,
            hint,
        },
        &[],
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 says when to come back.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// The store failed while serving a page: 503, retry later.
pub fn unavailable_page(cause: &StoreError) -> Response {
    tracing::error!(error = %cause, "store failed while serving a page");
    let mut response = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The sign-in service is temporarily unavailable.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// A 303 to `location` (same-origin), with the page headers.
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    security_headers(response.headers_mut());
    response
}

pub fn add_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub fn too_many_attempts(retry_after: Duration) -> Response {
    let minutes = retry_after.as_secs().div_ceil(60).max(1);
    let message = format!(
        "Too many failed sign-in attempts. Try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
    let mut response = error_page(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", &message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs()),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Requests

/// `application/x-www-form-urlencoded` fields; the first of repeated fields wins.
pub fn form_fields(body: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        fields
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    fields
}

/// Refuses form posts a browser marks as coming from another site (`Sec-Fetch-Site`). Browsers
/// send `Origin: null` on these forms because of `Referrer-Policy: no-referrer`, so `Origin`
/// cannot be used. Non-browser clients (no header) pass; the CSRF tokens still apply.
pub fn cross_site_post(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"))
}

pub fn forbidden_cross_site() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form was submitted from another site.",
    )
}

pub fn bad_csrf() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "This form has expired",
        "The form's security token is missing or does not match. Nothing was changed.",
    )
}

/// The client address, when the server was started with connect info.
pub fn client_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

pub(crate) fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax")
}

// ---------------------------------------------------------------------------------------------
// Browser sessions

/// A signed-in browser: the cookie value, its stored session and the user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub cookie_value: String,
    pub session: BrowserSession,
    pub user: User,
}

/// The user signed in on this browser, if the session cookie is valid and the user still exists.
pub async fn signed_in(server: &AuthServer, headers: &HeaderMap) -> StoreResult<Option<SignedIn>> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    if value.len() > 128 {
        return Ok(None);
    }
    let Some(session) = server.store.session(&secrets::hash(&value), now()).await? else {
        return Ok(None);
    };
    let Some(user) = server.store.user_by_id(&session.user_id).await? else {
        return Ok(None);
    };
    Ok(Some(SignedIn {
        cookie_value: value,
        session,
        user,
    }))
}

/// Starts a browser session for `user` (ending the browser's previous one, if any) and returns
/// it with the `Set-Cookie` value. Only the hash of the cookie value is stored.
pub async fn sign_in(
    server: &AuthServer,
    headers: &HeaderMap,
    user: User,
) -> StoreResult<(SignedIn, String)> {
    if let Some(old) = cookie(headers, SESSION_COOKIE) {
        server.store.delete_session(&secrets::hash(&old)).await?;
    }
    let value = secrets::random_token();
    let ttl = server.config.session_ttl.as_secs();
    let session = BrowserSession {
        id_hash: secrets::hash(&value),
        user_id: user.id.clone(),
        expires_at: now().saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
    };
    server.store.create_session(&session).await?;
    let set_cookie = set_cookie(SESSION_COOKIE, &value, ttl);
    Ok((
        SignedIn {
            cookie_value: value,
            session,
            user,
        },
        set_cookie,
    ))
}

/// The CSRF token of a form shown to a signed-in browser: bound to both the form's own secret
/// and the session cookie, so a token obtained by someone else is useless in this browser.
pub fn bound_csrf(form_secret: &str, session_cookie: &str) -> String {
    secrets::hash(&format!("{form_secret}\n{session_cookie}"))
}

// ---------------------------------------------------------------------------------------------
// /consents: the applications a user authorized

pub fn router() -> Router<Arc<AuthServer>> {
    Router::new()
        .route("/consents", get(consents))
        .route("/consents/login", post(consents_login))
        .route("/consents/revoke", post(consents_revoke))
        .route("/consents/logout", post(consents_logout))
}

const CONSENTS_CSRF_PURPOSE: &str = "consents";

async fn consents(State(server): State<Arc<AuthServer>>, headers: HeaderMap) -> Response {
    match signed_in(&server, &headers).await {
        Ok(Some(signed)) => consents_page(&server, &signed, None).await,
        Ok(None) => match &server.upstream {
            Some(upstream) => super::federated::password_sign_in_disabled(upstream),
            None => standalone_login(StatusCode::OK, "", None),
        },
        Err(e) => unavailable_page(&e),
    }
}

/// The sign-in form of `/consents`, protected by a double-submit cookie.
fn standalone_login(status: StatusCode, username: &str, error: Option<&str>) -> Response {
    let csrf = secrets::random_token();
    let mut response = render(
        status,
        &LoginPage {
            client_name: None,
            action: "/consents/login",
            pending: "",
            csrf: &csrf,
            username,
            error,
        },
        &[],
    );
    add_cookie(&mut response, &set_cookie(CSRF_COOKIE, &csrf, 3600));
    response
}

async fn consents_page(server: &AuthServer, signed: &SignedIn, notice: Option<&str>) -> Response {
    // TODO: a `Store::consents(user_id)` listing would also show metadata-document clients.
    let clients = match server.store.list_clients().await {
        Ok(clients) => clients,
        Err(e) => return unavailable_page(&e),
    };
    let mut entries = Vec::new();
    for client in clients {
        match server
            .store
            .consent(&signed.user.id, &client.client_id)
            .await
        {
            Ok(Some(scopes)) => entries.push(ConsentEntry {
                name: client
                    .metadata
                    .get("client_name")
                    .and_then(|v| v.as_str())
                    .unwrap_or(&client.client_id)
                    .to_owned(),
                client_id: client.client_id,
                scopes: scopes.iter().map(str::to_owned).collect(),
            }),
            Ok(None) => {}
            Err(e) => return unavailable_page(&e),
        }
    }
    let csrf = bound_csrf(CONSENTS_CSRF_PURPOSE, &signed.cookie_value);
    render(
        StatusCode::OK,
        &ConsentsPage {
            username: &signed.user.username,
            csrf: &csrf,
            entries,
            notice,
        },
        &[],
    )
}

async fn consents_login(
    State(server): State<Arc<AuthServer>>,
    request: http::Request<axum::body::Body>,
) -> Response {
    if let Some(upstream) = &server.upstream {
        return super::federated::password_sign_in_disabled(upstream);
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
        return bad_csrf();
    };
    let headers = &parts.headers;
    if cross_site_post(headers) {
        return forbidden_cross_site();
    }
    let fields = form_fields(&body);
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    let expected = cookie(headers, CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !secrets::equal(field("csrf"), &expected) {
        return bad_csrf();
    }
    let username = field("username");
    let ip = client_ip(&parts.extensions);
    let throttle = users::throttle(&server);
    if let Err(wait) = throttle.check(username, ip) {
        return too_many_attempts(wait);
    }
    match users::authenticate(server.store.as_ref(), username, field("password")).await {
        Ok(Some(user)) => {
            throttle.record_success(username);
            match sign_in(&server, headers, user).await {
                Ok((_, set_cookie)) => {
                    let mut response = see_other("/consents");
                    add_cookie(&mut response, &set_cookie);
                    add_cookie(&mut response, &expire_cookie(CSRF_COOKIE));
                    response
                }
                Err(e) => unavailable_page(&e),
            }
        }
        Ok(None) => {
            throttle.record_failure(username, ip);
            standalone_login(StatusCode::BAD_REQUEST, username, Some(INVALID_CREDENTIALS))
        }
        Err(e) => unavailable_page(&e),
    }
}

/// The one answer to an unknown user and to a wrong password.
pub const INVALID_CREDENTIALS: &str = "Invalid username or password.";

pub(crate) fn expire_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax")
}

/// Checks the signed-in session and the bound CSRF token of a `/consents` form.
async fn consents_form(
    server: &AuthServer,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(SignedIn, HashMap<String, String>), Response> {
    if cross_site_post(headers) {
        return Err(forbidden_cross_site());
    }
    let signed = match signed_in(server, headers).await {
        Ok(Some(signed)) => signed,
        Ok(None) => return Err(see_other("/consents")),
        Err(e) => return Err(unavailable_page(&e)),
    };
    let fields = form_fields(body);
    let expected = bound_csrf(CONSENTS_CSRF_PURPOSE, &signed.cookie_value);
    match fields.get("csrf") {
        Some(csrf) if secrets::equal(csrf, &expected) => Ok((signed, fields)),
        _ => Err(bad_csrf()),
    }
}

async fn consents_revoke(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (signed, fields) = match consents_form(&server, &headers, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let Some(client_id) = fields.get("client_id").filter(|c| !c.is_empty()) else {
        return see_other("/consents");
    };
    let user_id = &signed.user.id;
    let revoked = async {
        let had = server.store.revoke_consent(user_id, client_id).await?;
        // The access granted under that consent ends with it.
        server
            .store
            .revoke_grants(Some(user_id), Some(client_id), now())
            .await?;
        Ok::<_, StoreError>(had)
    }
    .await;
    match revoked {
        Ok(true) => {
            tracing::info!(user = %signed.user.username, client_id = %client_id, "consent revoked");
            consents_page(&server, &signed, Some("Access revoked.")).await
        }
        Ok(false) => consents_page(&server, &signed, None).await,
        Err(e) => unavailable_page(&e),
    }
}

async fn consents_logout(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (signed, _) = match consents_form(&server, &headers, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    if let Err(e) = server.store.delete_session(&signed.session.id_hash).await {
        return unavailable_page(&e);
    }
    let mut response = see_other("/consents");
    add_cookie(&mut response, &expire_cookie(SESSION_COOKIE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_sources_for_redirects() {
        assert_eq!(
            csp_source("https://app.example/cb?x=1").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            csp_source("http://127.0.0.1:53211/cb").as_deref(),
            Some("http://127.0.0.1:53211")
        );
        assert_eq!(csp_source("http://[::1]:5/cb").as_deref(), Some("http:"));
        assert_eq!(
            csp_source("cursor://anysphere.cursor-mcp/oauth").as_deref(),
            Some("cursor:")
        );
        assert_eq!(csp_source("not a url"), None);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-mcpgate-session=xyz"),
        );
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn pages_escape_what_they_show() {
        let body = ErrorPage {
            title: "t",
            message: "<script>alert(1)</script>",
            hint: "h",
        }
        .render()
        .unwrap();
        assert!(!body.contains("<script>"));
        assert!(body.contains("&#60;script&#62;") || body.contains("&lt;script&gt;"));
    }
}
