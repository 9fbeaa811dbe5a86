//! The JWT verifier against a real JWKS endpoint on loopback, with tokens signed by test keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcpgate_auth::resource::{
    AudiencePolicy, ClaimRules, JwksCache, JwksSettings, JwtVerifier, Verifier, VerifyError,
};
use serde_json::{Value, json};

const ISSUER: &str = "http://127.0.0.1:4400";
const RESOURCE: &str = "http://127.0.0.1:8080/mcp";

struct Key {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
}

fn key(kid: &'static str, alg: Algorithm, pem: &[u8]) -> Key {
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .unwrap();
    Key { kid, alg, encoding }
}

fn keys() -> Vec<Key> {
    vec![
        key("ec-1", Algorithm::ES256, include_bytes!("keys/ec256.pem")),
        key("rsa-1", Algorithm::RS256, include_bytes!("keys/rsa.pem")),
        key("ed-1", Algorithm::EdDSA, include_bytes!("keys/ed25519.pem")),
    ]
}

fn jwks(keys: &[Key]) -> Value {
    let set = JwkSet {
        keys: keys
            .iter()
            .map(|k| {
                let mut jwk = Jwk::from_encoding_key(&k.encoding, k.alg).unwrap();
                jwk.common.key_id = Some(k.kid.into());
                jwk
            })
            .collect(),
    };
    serde_json::to_value(set).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> Value {
    json!({ "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "exp": now() + 300, "iat": now(), "scope": "mcp:tools:read", "client_id": "c1" })
}

fn sign(key: &Key, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.into());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// Serves the JWKS and counts how often it is fetched.
async fn jwks_server(document: Value) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let document = document.clone();
            async move { axum::Json(document) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/jwks"), fetches)
}

fn verifier(uri: &str, allow_plain_jwt: bool) -> JwtVerifier {
    let settings = JwksSettings {
        min_refresh_interval: Duration::from_secs(60),
        ..JwksSettings::default()
    };
    let jwks = Arc::new(JwksCache::new(uri, reqwest::Client::new(), settings));
    let rules = ClaimRules {
        issuer: ISSUER.into(),
        audiences: AudiencePolicy::new([RESOURCE.to_owned()], ["api://mcpgate".to_owned()]),
        leeway: Duration::from_secs(30),
        exposed_claims: vec![],
    };
    JwtVerifier::new(jwks, rules, allow_plain_jwt)
}

fn rejected(result: Result<Option<Arc<mcpgate_auth::Principal>>, VerifyError>, expected: &str) {
    match result {
        Err(VerifyError::Invalid(message)) => {
            assert!(message.contains(expected), "{message:?} lacks {expected:?}")
        }
        other => panic!("expected rejection containing {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn accepts_each_supported_algorithm() {
    let keys = keys();
    let (uri, _) = jwks_server(jwks(&keys)).await;
    let verifier = verifier(&uri, false);
    for key in &keys {
        let principal = verifier
            .verify(&sign(key, &claims()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(principal.subject, "alice", "{}", key.kid);
        assert_eq!(principal.issuer, ISSUER);
        assert!(principal.scopes.contains("mcp:tools:read"));
        assert_eq!(principal.client_id.as_deref(), Some("c1"));
    }
}

#[tokio::test]
async fn accepts_configured_identifier_audiences_and_scp_arrays() {
    let keys = keys();
    let (uri, _) = jwks_server(jwks(&keys)).await;
    let mut c = claims();
    c["aud"] = json!(["api://mcpgate"]);
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["mcp:tools:write"]);
    let principal = verifier(&uri, false)
        .verify(&sign(&keys[0], &c))
        .await
        .unwrap()
        .unwrap();
    assert!(principal.scopes.contains("mcp:tools:write"));
}

#[tokio::test]
async fn refuses_alg_none_and_hmac_with_the_public_key() {
    let keys = keys();
    let (uri, _) = jwks_server(jwks(&keys)).await;
    let verifier = verifier(&uri, false);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt","kid":"rsa-1"}"#);
    // An unsigned token is not even JWS-shaped: never accepted, left to the next verifier.
    assert_eq!(
        verifier.verify(&format!("{none_header}.{payload}.")).await,
        Ok(None)
    );
    rejected(
        verifier
            .verify(&format!("{none_header}.{payload}.c2ln"))
            .await,
        "unsupported algorithm",
    );

    // The classic confusion attack: HS256 keyed with the RSA public key.
    let public_pem = include_bytes!("keys/rsa.pub.pem");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    header.typ = Some("at+jwt".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(public_pem).unwrap(),
    )
    .unwrap();
    rejected(verifier.verify(&forged).await, "HMAC");
}

#[tokio::test]
async fn keys_are_pinned_to_their_algorithm() {
    let keys = keys();
    let (uri, _) = jwks_server(jwks(&keys)).await;
    // The RSA key is published for RS256: a PS256 signature by the same key is refused.
    let pss = Key {
        kid: "rsa-1",
        alg: Algorithm::PS256,
        encoding: EncodingKey::from_rsa_pem(include_bytes!("keys/rsa.pem")).unwrap(),
    };
    rejected(
        verifier(&uri, false).verify(&sign(&pss, &claims())).await,
        "no key matches",
    );
}

#[tokio::test]
async fn refuses_tampering() {
    let keys = keys();
    let (uri, _) = jwks_server(jwks(&keys)).await;
    let verifier = verifier(&uri, false);
    let token = sign(&keys[0], &claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();

    let mut forged_claims = claims();
    forged_claims["scope"] = json!("mcp:admin");
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged_claims.to_string()),
        parts[2]
    );
    rejected(verifier.verify(&tampered_payload).await, "signature");

    let mut signature = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
    signature[10] ^= 0x01;
    parts[2] = URL_SAFE_NO_PAD.encode(signature);
    rejected(verifier.verify(&parts.join(".")).await, "signature");

    // Signed by a key the issuer never published, under a published kid.
    let impostor = Key {
        kid: "ec-1",
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(include_bytes!("keys/ec256-other.pem")).unwrap(),
    };
    rejected(
        verifier.verify(&sign(&impostor, &claims())).await,
        "signature",
    );
}

#[tokio::test]
async fn checks_claims_and_type() {
    let keys = keys();
    let (uri, _) = jwks_server(jwks(&keys)).await;
    let strict = verifier(&uri, false);
    let cases = [
        (
            "iss",
            json!("http://127.0.0.1:4401"),
            "another authorization server",
        ),
        ("aud", json!("http://127.0.0.1:8080/other"), "audience"),
        ("exp", json!(now() - 600), "expired"),
        ("nbf", json!(now() + 600), "not valid yet"),
    ];
    for (claim, value, expected) in cases {
        let mut c = claims();
        c[claim] = value;
        rejected(strict.verify(&sign(&keys[0], &c)).await, expected);
    }
    let mut plain = Header::new(Algorithm::ES256);
    plain.kid = Some("ec-1".into());
    let plain_token = jsonwebtoken::encode(&plain, &claims(), &keys[0].encoding).unwrap();
    rejected(strict.verify(&plain_token).await, "at+jwt");
    assert!(
        verifier(&uri, true)
            .verify(&plain_token)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn opaque_tokens_are_left_to_the_next_verifier() {
    let (uri, fetches) = jwks_server(jwks(&keys())).await;
    assert_eq!(
        verifier(&uri, false)
            .verify("opaque-token-value")
            .await
            .unwrap(),
        None
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn forged_kids_cause_no_fetch_storm() {
    let keys = keys();
    let (uri, fetches) = jwks_server(jwks(&keys)).await;
    let verifier = verifier(&uri, false);
    assert!(
        verifier
            .verify(&sign(&keys[0], &claims()))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    for i in 0..50 {
        let forged = Key {
            kid: Box::leak(format!("forged-{i}").into_boxed_str()),
            alg: Algorithm::ES256,
            encoding: keys[0].encoding.clone(),
        };
        rejected(verifier.verify(&sign(&forged, &claims())).await, "unknown");
    }
    assert!(
        fetches.load(Ordering::SeqCst) <= 2,
        "fetched {} times",
        fetches.load(Ordering::SeqCst)
    );
    // Known keys keep working from the cache.
    assert!(
        verifier
            .verify(&sign(&keys[1], &claims()))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_rotated_in_key_is_picked_up_on_first_sight() {
    let keys = keys();
    // The JWKS publishes both keys, but the verifier first caches a set with only the first.
    let first_only = jwks(&keys[..1]);
    let both = jwks(&keys[..2]);
    let served = Arc::new(std::sync::Mutex::new(first_only));
    let document = served.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let doc = document.lock().unwrap().clone();
            async move { axum::Json(doc) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let settings = JwksSettings {
        min_refresh_interval: Duration::ZERO,
        ..JwksSettings::default()
    };
    let jwks = Arc::new(JwksCache::new(
        format!("http://{addr}/jwks"),
        reqwest::Client::new(),
        settings,
    ));
    let rules = ClaimRules {
        issuer: ISSUER.into(),
        audiences: AudiencePolicy::new([RESOURCE.to_owned()], []),
        leeway: Duration::from_secs(30),
        exposed_claims: vec![],
    };
    let verifier = JwtVerifier::new(jwks, rules, false);
    assert!(
        verifier
            .verify(&sign(&keys[0], &claims()))
            .await
            .unwrap()
            .is_some()
    );
    *served.lock().unwrap() = both;
    assert!(
        verifier
            .verify(&sign(&keys[1], &claims()))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_unreachable_jwks_is_unavailable_not_accepted() {
    let keys = keys();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    match verifier(&dead, false)
        .verify(&sign(&keys[0], &claims()))
        .await
    {
        Err(VerifyError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
