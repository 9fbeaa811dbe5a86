//! An OpenID Connect upstream's ID token checked against the clock of the moment it arrived.
//!
//! A provider stamps `iat` when it answers the token request, which can be a second after the
//! callback reached mcpgate. With no leeway configured, a clock read before the exchange would
//! refuse that fresh token as "issued in the future" (seen as a flaky proxy-mode sign-in against
//! oidc-provider). The stand-in here makes the second boundary certain: it holds its answer until
//! the next whole second and stamps the token then.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcpgate_auth::upstream::{
    AccessRules, Federation, LoginSecrets, Provider, UpstreamError, UpstreamSettings,
};
use serde_json::json;

const CLIENT_ID: &str = "mcpgate-client";

struct StandIn {
    issuer: String,
    key: EncodingKey,
    /// The nonce the next ID token carries (the sign-in's own).
    nonce: Mutex<String>,
    /// How far ahead of the answer's own second `iat` is put.
    iat_ahead: i64,
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

async fn discovery(State(idp): State<Arc<StandIn>>) -> Response {
    let base = &idp.issuer;
    axum::Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/auth"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "code_challenge_methods_supported": ["S256"],
    }))
    .into_response()
}

async fn jwks(State(idp): State<Arc<StandIn>>) -> Response {
    let mut jwk = Jwk::from_encoding_key(&idp.key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("ec-1".into());
    axum::Json(JwkSet { keys: vec![jwk] }).into_response()
}

async fn token(State(idp): State<Arc<StandIn>>) -> Response {
    // Answer just after the next second starts, so `iat` is a second past the request's arrival.
    let arrived = unix_now();
    let next_second = Duration::from_secs(arrived.as_secs() + 1) + Duration::from_millis(20);
    tokio::time::sleep(next_second - arrived).await;
    let iat = unix_now().as_secs() as i64 + idp.iat_ahead;
    let nonce = idp.nonce.lock().unwrap().clone();
    let claims = json!({
        "iss": idp.issuer, "sub": "user-7", "aud": CLIENT_ID, "iat": iat, "exp": iat + 300,
        "nonce": nonce, "email": "ada@example.test", "email_verified": true,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let id_token = jsonwebtoken::encode(&header, &claims, &idp.key).unwrap();
    axum::Json(json!({
        "access_token": "upstream-at", "token_type": "Bearer", "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

async fn stand_in(iat_ahead: i64) -> Arc<StandIn> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = Arc::new(StandIn {
        issuer: format!("http://{}", listener.local_addr().unwrap()),
        key: EncodingKey::from_ec_pem(include_bytes!("keys/ec256.pem")).unwrap(),
        nonce: Mutex::new(String::new()),
        iat_ahead,
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    idp
}

fn federation(issuer: &str) -> Federation {
    let settings = UpstreamSettings {
        provider: Provider::Oidc,
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.into(),
        client_secret: "upstream-secret".into(),
        scopes: Provider::Oidc.default_scopes(),
        authorize_params: Vec::new(),
        token_params: Vec::new(),
        access: AccessRules::default(),
        group_claims: Vec::new(),
        callback_url: "https://mcp.example/oauth/callback".into(),
        leeway: Duration::ZERO,
    };
    Federation::new(settings, reqwest::Client::new(), None).unwrap()
}

async fn sign_in(idp: &StandIn) -> Result<String, UpstreamError> {
    let upstream = federation(&idp.issuer);
    let secrets = LoginSecrets::generate();
    *idp.nonce.lock().unwrap() = secrets.nonce.clone();
    let (identity, _) = upstream
        .complete("a-code", &secrets.code_verifier, &secrets.nonce)
        .await?;
    Ok(identity.subject)
}

#[tokio::test]
async fn an_id_token_stamped_after_the_callback_arrived_is_accepted_without_leeway() {
    let idp = stand_in(0).await;
    assert_eq!(sign_in(&idp).await.unwrap(), "user-7");
}

#[tokio::test]
async fn an_id_token_stamped_ahead_of_the_answer_is_refused_without_leeway() {
    let idp = stand_in(2).await;
    let err = sign_in(&idp).await.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::InvalidIdentity(m) if m.contains("issued in the future")),
        "{err}"
    );
}
