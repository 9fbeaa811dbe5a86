//! Proxy mode's sign-in at the upstream IdP.
//!
//! The order is the defence against confused deputies: the user first approves *this* MCP client
//! on mcpgate's own consent page (`POST /authorize/upstream`); only then is a single-use `state`
//! stored, bound to the browser by a cookie, and the browser sent upstream with PKCE and a
//! `nonce`. The IdP comes back to the one fixed callback (`GET /oauth/callback`), which takes the
//! state (once, on any instance), proves the identity, applies the access rules, and finishes the
//! MCP client's authorization request with mcpgate's own code.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::AuthServer;
use super::authorize::{
    already_used, bad_request_page, client_or_page, consent_page, issue_code, pending_form,
    reply_for,
};
use super::clients::ResolvedClient;
use super::error::ErrorCode;
use super::pages::{self, SignedIn};
use super::secrets;
use crate::store::{PendingAuthorization, Store, StoreError, StoreResult, UpstreamLogin, User};
use crate::upstream::{Federation, Identity, LoginSecrets, UpstreamError};

/// Binds an upstream sign-in to the browser that started it. SameSite=Lax: the IdP's redirect
/// back is a top-level GET, which carries it.
pub const UPSTREAM_COOKIE: &str = "__Host-mcpgate-upstream";
/// How long the user has to sign in upstream.
const UPSTREAM_LOGIN_TTL_SECS: u64 = 600;
/// Longest `state` or `code` accepted from the callback.
const MAX_CALLBACK_PARAM: usize = 4096;
/// Marks a user who signs in upstream only: not a PHC string, so no password ever matches it.
const NO_PASSWORD: &str = "!upstream";

pub fn router() -> Router<Arc<AuthServer>> {
    Router::new()
        .route("/authorize/upstream", post(start))
        .route("/oauth/callback", get(callback))
}

/// The proxy-mode endpoints of a server that has no upstream IdP.
fn not_in_proxy_mode() -> Response {
    pages::error_page(StatusCode::NOT_FOUND, "Not found", "No such page.")
}

pub(super) fn password_sign_in_disabled(upstream: &Federation) -> Response {
    pages::error_page(
        StatusCode::NOT_FOUND,
        "Sign in with your organisation",
        &format!(
            "This server signs users in at {}: start from your application.",
            upstream.display_name()
        ),
    )
}

fn upstream_unavailable(e: &UpstreamError) -> Response {
    tracing::error!(error = %e, "the upstream identity provider is unavailable");
    let mut response = pages::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The identity provider cannot be reached right now.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// The consent page for a user not signed in yet; approving it goes upstream.
pub(super) async fn anonymous_consent_page(
    server: &AuthServer,
    client: &ResolvedClient,
    pending: &PendingAuthorization,
) -> Response {
    let Some(upstream) = &server.upstream else {
        return not_in_proxy_mode();
    };
    // The form's submission ends in a redirect upstream, which `form-action` must allow.
    match upstream.endpoints().await {
        Ok(endpoints) => consent_page(
            server,
            client,
            pending,
            None,
            None,
            Some(&endpoints.authorization_endpoint),
        ),
        Err(e) => upstream_unavailable(&e),
    }
}

// ---------------------------------------------------------------------------------------------
// POST /authorize/upstream: consent given, off to the IdP

async fn start(State(server): State<Arc<AuthServer>>, request: http::Request<Body>) -> Response {
    let Some(upstream) = server.upstream.clone() else {
        return not_in_proxy_mode();
    };
    let (parts, body) = request.into_parts();
    let (pending, fields) = match pending_form(&server, &parts.headers, body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    if !secrets::equal(field("csrf"), &pending.csrf_token) {
        return pages::bad_csrf();
    }
    let decision = field("decision");
    if !matches!(decision, "approve" | "deny") {
        return bad_request_page("The form did not say whether to approve or deny.");
    }
    match server.store.delete_pending(&pending.id).await {
        Ok(true) => {}
        Ok(false) => return already_used(),
        Err(e) => return pages::unavailable_page(&e),
    }
    if decision == "deny" {
        tracing::info!(client_id = %pending.client_id, "consent denied before upstream sign-in");
        return reply_for(&server, &pending)
            .error(ErrorCode::AccessDenied, "the user denied the request");
    }
    if let Err(page) = client_or_page(&server, &pending.client_id).await {
        return page;
    }
    let login_secrets = LoginSecrets::generate();
    let force_login = pending.prompt.iter().any(|p| p == "login");
    let location = match upstream
        .authorization_url(&login_secrets, force_login)
        .await
    {
        Ok(url) => url,
        Err(e) => return upstream_unavailable(&e),
    };
    let browser = secrets::random_token();
    let login = UpstreamLogin {
        state_hash: secrets::hash(&login_secrets.state),
        browser_hash: secrets::hash(&browser),
        nonce: login_secrets.nonce,
        code_verifier: login_secrets.code_verifier,
        expires_at: pages::now()
            .saturating_add(i64::try_from(UPSTREAM_LOGIN_TTL_SECS).unwrap_or(i64::MAX)),
        pending,
    };
    if let Err(e) = server.store.put_upstream_login(&login).await {
        return pages::unavailable_page(&e);
    }
    tracing::info!(client_id = %login.pending.client_id, idp = upstream.display_name(), "consent given: signing in upstream");
    let mut response = pages::see_other(&location);
    pages::add_cookie(
        &mut response,
        &pages::set_cookie(UPSTREAM_COOKIE, &browser, UPSTREAM_LOGIN_TTL_SECS),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// GET /oauth/callback: back from the IdP

/// Callback parameters; a repeated one is refused (as on `/authorize`).
fn single_params(query: &str) -> Result<std::collections::HashMap<String, String>, ()> {
    let mut params = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if v.len() > MAX_CALLBACK_PARAM || params.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(());
        }
    }
    Ok(params)
}

fn not_started_here() -> Response {
    pages::error_page(
        StatusCode::BAD_REQUEST,
        "This sign-in cannot be completed",
        "This sign-in has expired, was already completed, or was not started here.",
    )
}

async fn callback(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(upstream) = server.upstream.clone() else {
        return not_in_proxy_mode();
    };
    let mut response = finish(&server, &upstream, &headers, query.as_deref().unwrap_or("")).await;
    // Whatever happened, the sign-in is over: its cookie goes.
    pages::add_cookie(&mut response, &pages::expire_cookie(UPSTREAM_COOKIE));
    response
}

async fn finish(
    server: &AuthServer,
    upstream: &Federation,
    headers: &HeaderMap,
    query: &str,
) -> Response {
    let Ok(params) = single_params(query) else {
        return bad_request_page("The identity provider's answer repeats or overlong parameters.");
    };
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let Some(state) = param("state") else {
        return not_started_here();
    };
    // Taken, not read: a replayed or concurrent callback finds nothing, on any instance.
    let login = match server
        .store
        .take_upstream_login(&secrets::hash(state), pages::now())
        .await
    {
        Ok(Some(login)) => login,
        Ok(None) => {
            tracing::warn!("upstream callback with an unknown, expired or used state");
            return not_started_here();
        }
        Err(e) => return pages::unavailable_page(&e),
    };
    let browser = pages::cookie(headers, UPSTREAM_COOKIE).unwrap_or_default();
    if !secrets::equal(&secrets::hash(&browser), &login.browser_hash) {
        tracing::warn!(client_id = %login.pending.client_id, "upstream callback from another browser than the one that started it");
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in cannot be completed",
            "This sign-in was started in another browser, or your browser refused its cookie. \
             Start again from your application.",
        );
    }
    match param("iss") {
        None => {}
        Some(iss) => match upstream.accepts_callback_issuer(iss).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%iss, "upstream callback from another issuer (mix-up)");
                return pages::error_page(
                    StatusCode::BAD_REQUEST,
                    "The sign-in could not be verified",
                    "The answer did not come from the configured identity provider.",
                );
            }
            Err(e) => return upstream_unavailable(&e),
        },
    }
    let pending = login.pending;
    let reply = reply_for(server, &pending);
    if let Some(error) = param("error") {
        tracing::info!(client_id = %pending.client_id, upstream_error = %error, "the upstream did not sign the user in");
        let code = if error == "temporarily_unavailable" {
            ErrorCode::TemporarilyUnavailable
        } else {
            ErrorCode::AccessDenied
        };
        return reply.error(code, "the user was not signed in at the identity provider");
    }
    let Some(code) = param("code") else {
        return bad_request_page("The identity provider's answer has no code.");
    };
    let client = match client_or_page(server, &pending.client_id).await {
        Ok(client) => client,
        Err(page) => return page,
    };
    let (identity, tokens) = match upstream
        .complete(code, &login.code_verifier, &login.nonce)
        .await
    {
        Ok(done) => done,
        Err(UpstreamError::Store(e)) => return pages::unavailable_page(&e),
        Err(e @ UpstreamError::Unavailable(_)) => return upstream_unavailable(&e),
        Err(e) => {
            tracing::warn!(client_id = %pending.client_id, error = %e, "upstream sign-in refused");
            return pages::error_page(
                StatusCode::BAD_REQUEST,
                "The sign-in could not be verified",
                &format!(
                    "{} answered, but the answer could not be verified. Start again from \
                     your application.",
                    upstream.display_name()
                ),
            );
        }
    };
    if let Err(refusal) = upstream.settings().access.check(&identity) {
        tracing::info!(user = %identity.label(), client_id = %pending.client_id, reason = %refusal, "upstream sign-in not allowed");
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "You cannot use this server",
            &format!(
                "You signed in at {} as {}, but {refusal}.",
                upstream.display_name(),
                identity.label()
            ),
        );
    }
    let user = match federated_user(server.store.as_ref(), &identity).await {
        Ok(user) => user,
        Err(e) => return pages::unavailable_page(&e),
    };
    let (signed, set_cookie) = match pages::sign_in(server, headers, user).await {
        Ok(ok) => ok,
        Err(e) => return pages::unavailable_page(&e),
    };
    tracing::info!(user = %signed.user.username, idp = upstream.display_name(), "signed in upstream");
    // The approval given before going upstream, now that we know whose it was.
    if let Err(e) = server
        .store
        .grant_consent(
            &signed.user.id,
            &client.client_id,
            &pending.scope,
            pages::now(),
        )
        .await
    {
        return pages::unavailable_page(&e);
    }
    keep_tokens(server, upstream, &signed, &tokens).await;
    let mut response = issue_code(server, &pending, &signed).await;
    pages::add_cookie(&mut response, &set_cookie);
    response
}

/// Keeps the upstream tokens when a key is configured. Failing to keep them costs only the
/// gateway credential, not the sign-in.
async fn keep_tokens(
    server: &AuthServer,
    upstream: &Federation,
    signed: &SignedIn,
    tokens: &crate::upstream::UpstreamTokens,
) {
    if let Err(e) = upstream
        .keep_tokens(server.store.as_ref(), &signed.user.id, tokens, pages::now())
        .await
    {
        tracing::warn!(user = %signed.user.username, error = %e, "could not keep the upstream tokens");
    }
}

/// The mcpgate user of an upstream identity, created on first sign-in. The id comes from the
/// issuer and subject (never from the email, which can be reassigned); a name taken by another
/// user gets a suffix rather than that user's account.
pub async fn federated_user(store: &dyn Store, identity: &Identity) -> StoreResult<User> {
    let id = identity.user_id();
    if let Some(user) = store.user_by_id(&id).await? {
        return Ok(user);
    }
    let label = identity.label();
    let suffixed = format!("{label} ({})", id.get(4..12).unwrap_or(&id));
    for username in [label, suffixed] {
        let user = User {
            id: id.clone(),
            username,
            password_hash: NO_PASSWORD.into(),
            created_at: pages::now(),
        };
        match store.create_user(&user).await {
            Ok(()) => return Ok(user),
            Err(StoreError::Conflict(_)) => {
                // Another instance created this user meanwhile, or the name is taken.
                if let Some(user) = store.user_by_id(&id).await? {
                    return Ok(user);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(format!("no free username for {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_params_refuse_repeats() {
        assert!(single_params("state=a&code=b").is_ok());
        assert!(single_params("state=a&state=b").is_err());
        assert!(single_params(&format!("code={}", "x".repeat(5000))).is_err());
    }
}
