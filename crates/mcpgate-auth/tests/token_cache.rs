//! The verified-token cache in front of both JWT verifiers: a hit gives the same principal, and
//! nothing that would refuse a token on a full verification (expiry, revocation, an untrusted
//! key set) is skipped because the token was cached.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mcpgate_auth::ScopeSet;
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::resource::claims::now_secs;
use mcpgate_auth::resource::{
    AudiencePolicy, ClaimRules, JwksCache, JwksSettings, JwtVerifier, LocalJwtVerifier,
    RevocationList, TokenCacheSettings, Verifier, VerifyError,
};
use mcpgate_auth::server::token::AccessTokenClaims;
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{Store, TokenFamily};

const ISSUER: &str = "http://127.0.0.1:8080";
const RESOURCE: &str = "http://127.0.0.1:8080/mcp";

fn claims(sub: &str, jti: &str, family: Option<&str>, ttl: i64) -> AccessTokenClaims {
    let now = now_secs();
    AccessTokenClaims {
        iss: ISSUER.into(),
        sub: sub.into(),
        aud: RESOURCE.into(),
        exp: now + ttl,
        iat: now,
        nbf: now,
        jti: jti.into(),
        client_id: "client-1".into(),
        scope: "mcp:tools:read".into(),
        fam: family.map(str::to_owned),
        preferred_username: Some(sub.into()),
    }
}

fn rules() -> ClaimRules {
    ClaimRules {
        issuer: ISSUER.into(),
        audiences: AudiencePolicy::new([RESOURCE.to_owned()], []),
        leeway: Duration::ZERO,
        exposed_claims: vec!["preferred_username".into()],
    }
}

struct Local {
    store: Arc<dyn Store>,
    keys: Arc<KeyManager>,
    revocations: Arc<RevocationList>,
    verifier: LocalJwtVerifier,
}

async fn local() -> Local {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
    let keys = KeyManager::load_or_create(store.clone()).await.unwrap();
    let revocations = Arc::new(RevocationList::default());
    let verifier = LocalJwtVerifier::new(keys.clone(), revocations.clone(), rules());
    Local {
        store,
        keys,
        revocations,
        verifier,
    }
}

fn refused(result: Result<Option<Arc<mcpgate_auth::Principal>>, VerifyError>, expected: &str) {
    match result {
        Err(VerifyError::Invalid(m)) => assert!(m.contains(expected), "{m}"),
        other => panic!("expected a refusal mentioning {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hit_returns_the_same_principal() {
    let l = local().await;
    let token = l
        .keys
        .sign(&claims("alice", "j1", Some("fam-1"), 300))
        .unwrap();
    let first = l.verifier.verify(&token).await.unwrap().unwrap();
    assert_eq!(l.verifier.token_cache().len(), 1, "the token was cached");
    let second = l.verifier.verify(&token).await.unwrap().unwrap();
    assert_eq!(first, second);
    assert_eq!(second.grant_id.as_deref(), Some("fam-1"));
    assert_eq!(l.verifier.token_cache().len(), 1);
}

#[tokio::test]
async fn a_token_that_expires_while_cached_is_refused() {
    let l = local().await;
    let token = l.keys.sign(&claims("alice", "j1", None, 1)).unwrap();
    assert!(l.verifier.verify(&token).await.unwrap().is_some());
    assert_eq!(l.verifier.token_cache().len(), 1);
    let exp = now_secs() + 1;
    while now_secs() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refused(l.verifier.verify(&token).await, "expired");
}

#[tokio::test]
async fn a_token_revoked_while_cached_is_refused() {
    let l = local().await;
    let by_jti = l.keys.sign(&claims("alice", "j-rev", None, 300)).unwrap();
    let by_family = l
        .keys
        .sign(&claims("alice", "j2", Some("fam-2"), 300))
        .unwrap();
    let family = TokenFamily {
        family_id: "fam-2".into(),
        client_id: "client-1".into(),
        user_id: Some("alice".into()),
        scope: ScopeSet::parse("mcp:tools:read"),
        resource: RESOURCE.into(),
        created_at: now_secs(),
        revoked_at: None,
    };
    l.store.create_family(&family, None, None).await.unwrap();
    for token in [&by_jti, &by_family] {
        assert!(l.verifier.verify(token).await.unwrap().is_some());
        assert!(l.verifier.verify(token).await.unwrap().is_some());
    }
    assert_eq!(l.verifier.token_cache().len(), 2);

    l.store.revoke_jti("j-rev", now_secs() + 300).await.unwrap();
    l.store.revoke_family("fam-2", now_secs()).await.unwrap();
    l.revocations
        .reload(l.store.as_ref(), Duration::from_secs(3600))
        .await
        .unwrap();
    for token in [&by_jti, &by_family] {
        refused(l.verifier.verify(token).await, "revoked");
        refused(l.verifier.verify(token).await, "revoked");
    }
}

#[tokio::test]
async fn different_tokens_are_not_confused() {
    let l = local().await;
    let alice = l.keys.sign(&claims("alice", "j1", None, 300)).unwrap();
    let bob = l.keys.sign(&claims("bob", "j2", None, 300)).unwrap();
    for _ in 0..2 {
        let a = l.verifier.verify(&alice).await.unwrap().unwrap();
        let b = l.verifier.verify(&bob).await.unwrap().unwrap();
        assert_eq!(a.subject, "alice");
        assert_eq!(b.subject, "bob");
    }
    // Alice's payload and header with a different signature: not a hit, and not valid.
    let (signed, _) = alice.rsplit_once('.').unwrap();
    let (_, bob_signature) = bob.rsplit_once('.').unwrap();
    refused(
        l.verifier
            .verify(&format!("{signed}.{bob_signature}"))
            .await,
        "signature",
    );
    assert_eq!(l.verifier.token_cache().len(), 2);
}

#[tokio::test]
async fn a_disabled_cache_verifies_every_time() {
    let l = local().await;
    let verifier = LocalJwtVerifier::new(l.keys.clone(), l.revocations.clone(), rules())
        .with_token_cache(TokenCacheSettings::disabled());
    let token = l.keys.sign(&claims("alice", "j1", None, 300)).unwrap();
    assert!(verifier.verify(&token).await.unwrap().is_some());
    assert!(verifier.token_cache().is_empty());
}

/// A JWKS endpoint (the built-in key ring's public keys) that can be made to fail.
async fn jwks_server(keys: &KeyManager) -> (String, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let document = serde_json::to_value(keys.jwks()).unwrap();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let document = document.clone();
            let down = flag.load(Ordering::SeqCst);
            async move {
                if down {
                    Err(http::StatusCode::SERVICE_UNAVAILABLE)
                } else {
                    Ok(axum::Json(document))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/jwks"), down)
}

#[tokio::test]
async fn jwks_hits_are_the_same_principal_and_do_not_outlive_the_key_set() {
    let l = local().await;
    let (uri, down) = jwks_server(&l.keys).await;
    let settings = JwksSettings {
        refresh_after: Duration::from_millis(300),
        max_age: Duration::from_secs(2),
        ..JwksSettings::default()
    };
    let jwks = Arc::new(JwksCache::new(uri, reqwest::Client::new(), settings));
    let verifier = JwtVerifier::new(jwks, rules(), false);
    let token = l.keys.sign(&claims("alice", "j1", None, 300)).unwrap();
    let other = l.keys.sign(&claims("bob", "j2", None, 300)).unwrap();
    let first = verifier.verify(&token).await.unwrap().unwrap();
    assert_eq!(verifier.token_cache().len(), 1);
    assert_eq!(first, verifier.verify(&token).await.unwrap().unwrap());
    assert_eq!(
        verifier.verify(&other).await.unwrap().unwrap().subject,
        "bob"
    );

    // The IdP goes away: cached keys (and cached tokens) serve until the key set's ceiling...
    down.store(true, Ordering::SeqCst);
    assert_eq!(first, verifier.verify(&token).await.unwrap().unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // ...and then nothing is accepted on keys that can no longer be checked.
    for t in [&token, &other] {
        match verifier.verify(t).await {
            Err(VerifyError::Unavailable(_)) => {}
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
    // Back up: verified again.
    down.store(false, Ordering::SeqCst);
    assert_eq!(first, verifier.verify(&token).await.unwrap().unwrap());
}
