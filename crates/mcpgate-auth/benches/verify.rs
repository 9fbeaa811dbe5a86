//! Micro-benchmarks of the resource-server hot path, so regressions show up in isolation:
//! JWT verification against a remote JWKS (cached, and uncached: a fresh cache per token, so the
//! JWKS is fetched over loopback HTTP and parsed every time; both without the verified-token
//! cache), verified-token cache hits (`*_token_cache_hit`), local verification of the built-in
//! AS's own tokens, the static-token verifier, the whole verifier chain, the middleware's entry
//! point on a cache hit, the token digest alone, and challenge building.
//!
//!   cargo bench -p mcpgate-auth --bench verify
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::resource::challenge::ChallengeError;
use mcpgate_auth::resource::token_cache::token_key;
use mcpgate_auth::resource::{
    AudiencePolicy, Authenticator, Challenge, ClaimRules, JwksCache, JwksSettings, JwtVerifier,
    LocalJwtVerifier, RevocationList, StaticToken, StaticTokenVerifier, TokenCacheSettings,
    Verifier, VerifierChain,
};
use mcpgate_auth::store::Store;
use mcpgate_auth::store::sqlite::SqliteStore;

const RESOURCE: &str = "http://127.0.0.1:8080/mcp";

struct Fixture {
    rt: tokio::runtime::Runtime,
    issuer: String,
    jwks_uri: String,
    token: String,
    keys: Arc<KeyManager>,
}

fn rules(issuer: &str) -> ClaimRules {
    ClaimRules {
        issuer: issuer.to_owned(),
        audiences: AudiencePolicy::new([RESOURCE.to_owned()], []),
        leeway: std::time::Duration::from_secs(30),
        exposed_claims: vec!["email".into()],
    }
}

/// An ES256 key (the built-in AS's key manager), its JWKS served over loopback HTTP, and a
/// token signed with it.
fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (issuer, jwks_uri, token, keys) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        let keys = KeyManager::load_or_create(store).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let jwks = serde_json::to_value(keys.jwks()).unwrap();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = keys
            .sign(&serde_json::json!({
                "iss": issuer, "sub": "alice", "aud": RESOURCE, "client_id": "bench",
                "scope": "mcp:tools:read mcp:tools:write", "iat": now, "exp": now + 3600,
                "jti": "bench-1", "email": "alice@example.test",
            }))
            .unwrap();
        (issuer.clone(), format!("{issuer}/jwks"), token, keys)
    });
    Fixture {
        rt,
        issuer,
        jwks_uri,
        token,
        keys,
    }
}

fn jwt_verifier(f: &Fixture, http: &reqwest::Client) -> JwtVerifier {
    let jwks = Arc::new(JwksCache::new(
        f.jwks_uri.clone(),
        http.clone(),
        JwksSettings::default(),
    ));
    JwtVerifier::new(jwks, rules(&f.issuer), false).with_token_cache(TokenCacheSettings::disabled())
}

fn verification(c: &mut Criterion) {
    let f = fixture();
    let http = reqwest::Client::new();

    let cached = jwt_verifier(&f, &http);
    let principal = f.rt.block_on(cached.verify(&f.token)).unwrap();
    assert!(principal.is_some(), "the fixture token must verify");
    c.bench_function("jwt_es256_jwks_cached", |b| {
        b.to_async(&f.rt)
            .iter(|| async { cached.verify(&f.token).await.unwrap().unwrap() })
    });

    c.bench_function("jwt_es256_jwks_uncached", |b| {
        b.to_async(&f.rt).iter(|| async {
            let fresh = jwt_verifier(&f, &http);
            fresh.verify(&f.token).await.unwrap().unwrap()
        })
    });

    // The same verifier with its verified-token cache (the default): every call after the first
    // is a hit (SHA-256 of the token, map lookup, key-trust check, principal clone).
    let hits = JwtVerifier::new(
        Arc::new(JwksCache::new(
            f.jwks_uri.clone(),
            http.clone(),
            JwksSettings::default(),
        )),
        rules(&f.issuer),
        false,
    );
    f.rt.block_on(hits.verify(&f.token)).unwrap().unwrap();
    c.bench_function("jwt_es256_jwks_token_cache_hit", |b| {
        b.to_async(&f.rt)
            .iter(|| async { hits.verify(&f.token).await.unwrap().unwrap() })
    });

    // What a request pays in the middleware for a token seen before: header extraction, one
    // SHA-256 (natively on the CPU's SHA extensions), the recall (cache hit, key-trust check).
    let authenticator = Authenticator::new(VerifierChain::new(vec![Arc::new(hits)]));
    let (parts, ()) = http::Request::builder()
        .uri("/mcp")
        .header(http::header::AUTHORIZATION, format!("Bearer {}", f.token))
        .body(())
        .unwrap()
        .into_parts();
    c.bench_function("authenticate_jwt_token_cache_hit", |b| {
        b.to_async(&f.rt)
            .iter(|| async { authenticator.authenticate(&parts).await })
    });
    c.bench_function("token_digest_sha256", |b| b.iter(|| token_key(&f.token)));

    let local = LocalJwtVerifier::new(
        f.keys.clone(),
        Arc::new(RevocationList::default()),
        rules(&f.issuer),
    )
    .with_token_cache(TokenCacheSettings::disabled());
    assert!(f.rt.block_on(local.verify(&f.token)).unwrap().is_some());
    c.bench_function("jwt_es256_local_keys", |b| {
        b.to_async(&f.rt)
            .iter(|| async { local.verify(&f.token).await.unwrap().unwrap() })
    });

    // Built-in AS tokens with the cache: a hit also checks the revocation list.
    let local_hits = LocalJwtVerifier::new(
        f.keys.clone(),
        Arc::new(RevocationList::default()),
        rules(&f.issuer),
    );
    f.rt.block_on(local_hits.verify(&f.token)).unwrap().unwrap();
    c.bench_function("jwt_es256_local_token_cache_hit", |b| {
        b.to_async(&f.rt)
            .iter(|| async { local_hits.verify(&f.token).await.unwrap().unwrap() })
    });

    let statics = StaticTokenVerifier::new(vec![
        StaticToken::new(
            "ci",
            "ci-0123456789abcdef0123456789abcdef",
            ["mcp:tools:read"],
        ),
        StaticToken::new("ops", "ops-0123456789abcdef0123456789abcdef", ["mcp:admin"]),
    ]);
    c.bench_function("static_token", |b| {
        b.to_async(&f.rt).iter(|| async {
            statics
                .verify("ops-0123456789abcdef0123456789abcdef")
                .await
                .unwrap()
                .unwrap()
        })
    });

    // The chain mcpgate builds for external mode with a static token too: static first, then JWT.
    let chain = VerifierChain::new(vec![
        Arc::new(StaticTokenVerifier::new(vec![StaticToken::new(
            "ci",
            "ci-0123456789abcdef0123456789abcdef",
            ["mcp:tools:read"],
        )])),
        Arc::new(jwt_verifier(&f, &http)),
    ]);
    f.rt.block_on(chain.verify(&f.token)).unwrap();
    c.bench_function("chain_static_then_jwt_cached", |b| {
        b.to_async(&f.rt)
            .iter(|| async { chain.verify(&f.token).await.unwrap() })
    });
}

fn challenges(c: &mut Criterion) {
    let missing = Challenge {
        resource_metadata: Some(
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp".into(),
        ),
        scope: Some("mcp:tools:read".into()),
        ..Challenge::default()
    };
    c.bench_function("challenge_401_no_token", |b| {
        b.iter(|| missing.header_value())
    });
    let step_up = Challenge {
        error: Some(ChallengeError::InsufficientScope),
        description: Some("the tool \"notes_put\" needs scope mcp:tools:write".into()),
        scope: Some("mcp:tools:read mcp:tools:write".into()),
        resource_metadata: Some(
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp".into(),
        ),
        ..Challenge::default()
    };
    c.bench_function("challenge_403_insufficient_scope", |b| {
        b.iter(|| step_up.header_value())
    });
}

criterion_group!(benches, verification, challenges);
criterion_main!(benches);
