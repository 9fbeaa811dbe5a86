//! GitHub as the upstream of proxy mode: plain OAuth, identity from the REST API. GitHub itself is
//! out of reach here, so a local stand-in serves GitHub's documented endpoints (the same paths a
//! GitHub Enterprise Server has: `/login/oauth/access_token` and `/api/v3/user…`); this exercises
//! mcpgate's half of the protocol: the token request (client_secret_post, PKCE verifier, JSON),
//! the user API calls with the token, primary-and-verified email selection, organisations as
//! groups, and GitHub's habit of answering errors with 200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mcpgate_auth::upstream::{
    AccessRules, Federation, LoginSecrets, Provider, UpstreamError, UpstreamSettings,
};
use serde_json::json;

#[derive(Default)]
struct Seen {
    token_forms: Vec<HashMap<String, String>>,
    api_auth: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

async fn token(State(seen): State<Shared>, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let good = form.get("code").map(String::as_str) == Some("good-code");
    seen.lock().unwrap().token_forms.push(form);
    if good {
        axum::Json(json!({"access_token": "gho_user_token", "token_type": "bearer", "scope": "read:user,user:email"}))
            .into_response()
    } else {
        // GitHub's way: 200 with an error member.
        axum::Json(json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}))
            .into_response()
    }
}

fn authorized(seen: &Shared, headers: &HeaderMap) -> bool {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let ok = auth == "Bearer gho_user_token";
    seen.lock().unwrap().api_auth.push(auth);
    ok
}

async fn user(State(seen): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&seen, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!({"id": 583231, "login": "octocat", "name": "The Octocat", "email": null}))
        .into_response()
}

async fn emails(State(seen): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&seen, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!([
        {"email": "octo@old.example", "primary": false, "verified": true},
        {"email": "octocat@github.example", "primary": true, "verified": true}
    ]))
    .into_response()
}

async fn orgs(State(seen): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&seen, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!([{"login": "acme"}, {"login": "octo-org"}])).into_response()
}

async fn stand_in() -> (String, Shared) {
    let seen = Shared::default();
    let app = Router::new()
        .route("/login/oauth/access_token", post(token))
        .route("/api/v3/user", get(user))
        .route("/api/v3/user/emails", get(emails))
        .route("/api/v3/user/orgs", get(orgs))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn federation(issuer: &str, required_groups: &[&str]) -> Federation {
    let settings = UpstreamSettings {
        provider: Provider::Github,
        issuer: issuer.to_owned(),
        client_id: "Iv1.client".into(),
        client_secret: "gh-secret".into(),
        scopes: Provider::Github.default_scopes(),
        authorize_params: Vec::new(),
        token_params: Vec::new(),
        access: AccessRules {
            required_groups: required_groups.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        },
        group_claims: Vec::new(),
        callback_url: "https://mcp.example/oauth/callback".into(),
        leeway: Duration::from_secs(60),
    };
    Federation::new(settings, reqwest::Client::new(), Some(&[1u8; 32])).unwrap()
}

#[tokio::test]
async fn a_github_sign_in_proves_the_user_through_the_api() {
    let (issuer, seen) = stand_in().await;
    let github = federation(&issuer, &["acme"]);

    let secrets = LoginSecrets::generate();
    let url = url::Url::parse(&github.authorization_url(&secrets, false).await.unwrap()).unwrap();
    assert_eq!(url.path(), "/login/oauth/authorize");
    let query: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], "Iv1.client");
    assert_eq!(query["redirect_uri"], "https://mcp.example/oauth/callback");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["state"], secrets.state);
    assert!(!query.contains_key("nonce"), "GitHub is not OpenID Connect");
    assert!(!query["scope"].split(' ').any(|s| s == "openid"));

    let (identity, tokens) = github
        .complete("good-code", &secrets.code_verifier, &secrets.nonce)
        .await
        .unwrap();
    assert_eq!(
        identity.subject, "583231",
        "the numeric id, not the renameable login"
    );
    assert_eq!(identity.username.as_deref(), Some("octocat"));
    assert_eq!(identity.verified_email(), Some("octocat@github.example"));
    assert_eq!(identity.groups, ["acme", "octo-org"]);
    assert_eq!(tokens.access_token, "gho_user_token");

    let seen = seen.lock().unwrap();
    let form = &seen.token_forms[0];
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code_verifier"], secrets.code_verifier);
    assert_eq!(form["client_id"], "Iv1.client");
    assert_eq!(form["client_secret"], "gh-secret");
    assert!(seen.api_auth.iter().all(|a| a == "Bearer gho_user_token"));
    assert_eq!(seen.api_auth.len(), 3, "user, emails and orgs");
}

#[tokio::test]
async fn github_errors_in_a_200_are_refusals() {
    let (issuer, _) = stand_in().await;
    let github = federation(&issuer, &[]);
    let err = github
        .complete("spent-code", "verifier", "nonce")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Refused(m) if m.contains("bad_verification_code")),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_github_is_unavailable_not_a_refusal() {
    let github = federation("http://127.0.0.1:9", &[]);
    let err = github
        .complete("good-code", "verifier", "nonce")
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable(_)), "{err}");
}
