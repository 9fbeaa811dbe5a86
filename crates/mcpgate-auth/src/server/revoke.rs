//! Token revocation (RFC 7009, `POST /revoke`).
//!
//! Revoking a refresh token ends its whole family (grant), and with it every access token of the
//! family: the resource server refuses tokens whose `fam` is revoked. Revoking an access token
//! puts its `jti` on the denylist until it expires. Unknown, invalid or foreign tokens get the
//! same empty 200 as a successful revocation.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};

use super::AuthServer;
use super::client_auth::{Form, authenticate_client};
use super::clients::ResolvedClient;
use super::error::OAuthError;
use super::secrets;
use super::token::{decode_access_token, endpoint_cors, no_store};
use crate::resource::claims::now_secs;
use crate::resource::jwt::looks_like_jwt;

pub fn router() -> Router<Arc<AuthServer>> {
    Router::new()
        .route("/revoke", post(revoke_endpoint))
        .layer(endpoint_cors())
}

async fn revoke_endpoint(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&server, &headers, &body).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => e.into_response(),
    }
}

async fn handle(server: &AuthServer, headers: &HeaderMap, body: &[u8]) -> Result<(), OAuthError> {
    let form = Form::from_request(headers, body)?;
    let client = authenticate_client(server, headers, &form).await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    // `token_type_hint` only orders the search (RFC 7009 §2.1); both types are looked for, so an
    // unknown hint changes nothing.
    if looks_like_jwt(token) {
        revoke_access_token(server, &client, token).await
    } else {
        revoke_refresh_token(server, &client, token).await
    }
}

async fn revoke_access_token(
    server: &AuthServer,
    client: &ResolvedClient,
    token: &str,
) -> Result<(), OAuthError> {
    let Some(claims) = decode_access_token(server, token, false) else {
        return Ok(());
    };
    if claims.client_id != client.client_id || claims.exp <= now_secs() {
        return Ok(());
    }
    server.store.revoke_jti(&claims.jti, claims.exp).await?;
    tracing::info!(client_id = %client.client_id, "access token revoked");
    Ok(())
}

async fn revoke_refresh_token(
    server: &AuthServer,
    client: &ResolvedClient,
    token: &str,
) -> Result<(), OAuthError> {
    let Some(stored) = server.store.refresh_token(&secrets::hash(token)).await? else {
        return Ok(());
    };
    let Some(family) = server.store.family(&stored.family_id).await? else {
        return Ok(());
    };
    if family.client_id != client.client_id || family.revoked_at.is_some() {
        return Ok(());
    }
    server
        .store
        .revoke_family(&family.family_id, now_secs())
        .await?;
    tracing::info!(client_id = %client.client_id, "grant revoked with its refresh token");
    Ok(())
}
