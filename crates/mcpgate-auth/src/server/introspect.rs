//! Token introspection (RFC 7662, `POST /introspect`), for confidential clients.
//!
//! Active tokens are described with `active`, `scope`, `client_id`, `sub`, `aud`, `iss`, `exp`,
//! `iat`, `nbf`, `jti`, `token_type` and `username`; anything else (expired, revoked, of a revoked
//! grant, not ours, garbage) is only `{"active":false}`. Refresh tokens are described only to the
//! client they were issued to, so a resource server can never mistake one for an access token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::HeaderMap;
use serde_json::{Value, json};

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
        .route("/introspect", post(introspect_endpoint))
        .layer(endpoint_cors())
}

async fn introspect_endpoint(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&server, &headers, &body).await {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(e) => e.into_response(),
    }
}

fn inactive() -> Value {
    json!({ "active": false })
}

async fn handle(
    server: &AuthServer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let form = Form::from_request(headers, body)?;
    let client = authenticate_client(server, headers, &form).await?;
    if !client.is_confidential() {
        return Err(OAuthError::invalid_client(
            "introspection requires an authenticated confidential client",
        ));
    }
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let answer = if looks_like_jwt(token) {
        access_token(server, token).await?
    } else {
        refresh_token(server, &client, token).await?
    };
    Ok(answer.unwrap_or_else(inactive))
}

async fn access_token(server: &AuthServer, token: &str) -> Result<Option<Value>, OAuthError> {
    let Some(claims) = decode_access_token(server, token, true) else {
        return Ok(None);
    };
    let now = now_secs();
    if let Some(family_id) = &claims.fam {
        match server.store.family(family_id).await? {
            Some(family) if family.revoked_at.is_none() => {}
            _ => return Ok(None),
        }
    }
    // Revoked jtis that have not expired yet (no family is revoked in the future).
    let revoked = server.store.revocations(i64::MAX, now).await?;
    if revoked.jtis.iter().any(|(jti, _)| *jti == claims.jti) {
        return Ok(None);
    }
    let mut answer = json!({
        "active": true,
        "scope": claims.scope,
        "client_id": claims.client_id,
        "sub": claims.sub,
        "aud": claims.aud,
        "iss": claims.iss,
        "exp": claims.exp,
        "iat": claims.iat,
        "nbf": claims.nbf,
        "jti": claims.jti,
        "token_type": "Bearer",
    });
    if let Some(username) = claims.preferred_username {
        answer["username"] = username.into();
    }
    Ok(Some(answer))
}

async fn refresh_token(
    server: &AuthServer,
    client: &ResolvedClient,
    token: &str,
) -> Result<Option<Value>, OAuthError> {
    let now = now_secs();
    let Some(stored) = server.store.refresh_token(&secrets::hash(token)).await? else {
        return Ok(None);
    };
    if stored.rotated_at.is_some() || stored.expires_at <= now {
        return Ok(None);
    }
    let Some(family) = server.store.family(&stored.family_id).await? else {
        return Ok(None);
    };
    if family.revoked_at.is_some() || family.client_id != client.client_id {
        return Ok(None);
    }
    let mut answer = json!({
        "active": true,
        "scope": stored.scope.to_string(),
        "client_id": family.client_id,
        "aud": stored.resource,
        "iss": server.config.issuer,
        "exp": stored.expires_at,
        "iat": stored.created_at,
        "token_type": "refresh_token",
    });
    if let Some(user_id) = &family.user_id {
        answer["sub"] = user_id.clone().into();
        if let Some(user) = server.store.user_by_id(user_id).await? {
            answer["username"] = user.username.into();
        }
    } else {
        answer["sub"] = family.client_id.into();
    }
    Ok(Some(answer))
}
