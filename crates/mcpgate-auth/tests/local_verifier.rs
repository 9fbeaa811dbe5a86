//! The resource side of the built-in server: its own tokens verified from the shared key ring,
//! revocations honoured from the store, rotation picked up by a reload.

use std::sync::Arc;
use std::time::Duration;

use mcpgate_auth::ScopeSet;
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::resource::claims::now_secs;
use mcpgate_auth::resource::{
    AudiencePolicy, AuthOutcome, Authenticator, ClaimRules, LocalJwtVerifier, RevocationList,
    Verifier, VerifierChain, VerifyError,
};
use mcpgate_auth::server::token::AccessTokenClaims;
use mcpgate_auth::store::sqlite::SqliteStore;
use mcpgate_auth::store::{Store, TokenFamily};

const ISSUER: &str = "http://127.0.0.1:8080";
const RESOURCE: &str = "http://127.0.0.1:8080/mcp";

fn claims(jti: &str, family: Option<&str>) -> AccessTokenClaims {
    let now = now_secs();
    AccessTokenClaims {
        iss: ISSUER.into(),
        sub: "user-1".into(),
        aud: RESOURCE.into(),
        exp: now + 300,
        iat: now,
        nbf: now,
        jti: jti.into(),
        client_id: "client-1".into(),
        scope: "mcp:tools:read".into(),
        fam: family.map(str::to_owned),
        preferred_username: Some("alice".into()),
    }
}

async fn setup() -> (
    Arc<dyn Store>,
    Arc<KeyManager>,
    Arc<RevocationList>,
    LocalJwtVerifier,
) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
    let keys = KeyManager::load_or_create(store.clone()).await.unwrap();
    let revocations = Arc::new(RevocationList::default());
    let rules = ClaimRules {
        issuer: ISSUER.into(),
        audiences: AudiencePolicy::new([RESOURCE.to_owned()], []),
        leeway: Duration::from_secs(30),
        exposed_claims: vec!["preferred_username".into()],
    };
    let verifier = LocalJwtVerifier::new(keys.clone(), revocations.clone(), rules);
    (store, keys, revocations, verifier)
}

#[tokio::test]
async fn accepts_its_own_tokens_with_the_grant_attached() {
    let (_, keys, _, verifier) = setup().await;
    let token = keys.sign(&claims("j1", Some("fam-1"))).unwrap();
    let principal = verifier.verify(&token).await.unwrap().unwrap();
    assert_eq!(principal.subject, "user-1");
    assert_eq!(principal.client_id.as_deref(), Some("client-1"));
    assert_eq!(principal.grant_id.as_deref(), Some("fam-1"));
    assert_eq!(
        principal
            .claims
            .get("preferred_username")
            .and_then(|v| v.as_str()),
        Some("alice")
    );
}

#[tokio::test]
async fn revoked_jtis_and_grants_are_refused_after_a_reload() {
    let (store, keys, revocations, verifier) = setup().await;
    let by_jti = keys.sign(&claims("j-revoked", None)).unwrap();
    let by_family = keys.sign(&claims("j2", Some("fam-2"))).unwrap();
    let family = TokenFamily {
        family_id: "fam-2".into(),
        client_id: "client-1".into(),
        user_id: Some("user-1".into()),
        scope: ScopeSet::parse("mcp:tools:read"),
        resource: RESOURCE.into(),
        created_at: now_secs(),
        revoked_at: None,
    };
    store.create_family(&family, None, None).await.unwrap();
    assert!(verifier.verify(&by_jti).await.unwrap().is_some());
    assert!(verifier.verify(&by_family).await.unwrap().is_some());

    store
        .revoke_jti("j-revoked", now_secs() + 300)
        .await
        .unwrap();
    store.revoke_family("fam-2", now_secs()).await.unwrap();
    revocations
        .reload(store.as_ref(), Duration::from_secs(3600))
        .await
        .unwrap();

    for token in [&by_jti, &by_family] {
        match verifier.verify(token).await {
            Err(VerifyError::Invalid(m)) => assert!(m.contains("revoked"), "{m}"),
            other => panic!("expected a revocation, got {other:?}"),
        }
    }
    assert!(revocations.is_grant_revoked("fam-2"));
}

/// Through the middleware's entry point: a token verified once is recognised by its digest from
/// then on (no syntax scan, no signature check), which must still honour a revocation, and must
/// never let a token that does not parse through.
#[tokio::test]
async fn the_authenticator_recalls_verified_tokens_and_their_revocation() {
    let (store, keys, revocations, verifier) = setup().await;
    let auth = Authenticator::new(VerifierChain::new(vec![Arc::new(verifier)]));
    let token = keys.sign(&claims("j-auth", None)).unwrap();
    let request = |value: String| {
        http::Request::builder()
            .uri("/mcp")
            .header(http::header::AUTHORIZATION, value)
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    let present = |token: &str| request(format!("Bearer {token}"));

    let AuthOutcome::Accepted(first) = auth.authenticate(&present(&token)).await else {
        panic!("a fresh token is accepted");
    };
    let AuthOutcome::Accepted(again) = auth.authenticate(&present(&token)).await else {
        panic!("a verified token is accepted again");
    };
    assert!(Arc::ptr_eq(&first, &again), "the second time is a recall");
    for malformed in [
        format!("{token}\""),
        format!("{token} "),
        format!("{token},x"),
    ] {
        assert!(
            matches!(
                auth.authenticate(&present(&malformed)).await,
                AuthOutcome::Malformed(_)
            ),
            "{malformed:?}"
        );
    }

    store.revoke_jti("j-auth", now_secs() + 300).await.unwrap();
    revocations
        .reload(store.as_ref(), Duration::from_secs(3600))
        .await
        .unwrap();
    match auth.authenticate(&present(&token)).await {
        AuthOutcome::Rejected(reason) => assert!(reason.contains("revoked"), "{reason}"),
        other => panic!("expected the revocation to be honoured, got {other:?}"),
    }
}

#[tokio::test]
async fn another_instance_picks_up_a_rotation_on_reload() {
    let (store, keys, _, verifier) = setup().await;
    let before = keys.sign(&claims("j-old", None)).unwrap();
    // A second key manager on the same store stands for `mcpgate keys rotate` or another instance.
    let other = KeyManager::load_or_create(store.clone()).await.unwrap();
    other
        .rotate(Duration::ZERO, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    let after = other.sign(&claims("j-new", None)).unwrap();
    // This instance has not reloaded: the unknown kid makes it look at the store at once.
    assert!(verifier.verify(&after).await.unwrap().is_some());
    assert!(
        verifier.verify(&before).await.unwrap().is_some(),
        "the old key stays published"
    );
    assert_eq!(
        keys.jwks().keys.len(),
        2,
        "the reload published both keys here too"
    );
    assert_ne!(
        jsonwebtoken::decode_header(&before).unwrap().kid,
        jsonwebtoken::decode_header(keys.sign(&claims("j3", None)).unwrap())
            .unwrap()
            .kid,
        "new tokens are signed with the new key"
    );
}

#[tokio::test]
async fn tokens_of_other_issuers_or_algorithms_are_refused() {
    let (_, keys, _, verifier) = setup().await;
    let mut foreign = claims("j4", None);
    foreign.iss = "http://127.0.0.1:9999".into();
    assert!(
        verifier
            .verify(&keys.sign(&foreign).unwrap())
            .await
            .is_err()
    );
    let mut elsewhere = claims("j5", None);
    elsewhere.aud = "http://127.0.0.1:8080/other".into();
    assert!(
        verifier
            .verify(&keys.sign(&elsewhere).unwrap())
            .await
            .is_err()
    );
    assert_eq!(verifier.verify("opaque").await, Ok(None));
}

/// The signature is made with the key parsed once per reload (not by `jsonwebtoken::encode`):
/// what it produces is still an RFC 9068 JWT that any verifier checks against the published JWKS.
#[tokio::test]
async fn signed_tokens_verify_against_the_published_jwks_with_an_independent_verifier() {
    let (_, keys, _, _) = setup().await;
    let signed = claims("j-jwks", Some("fam-1"));
    let token = keys.sign(&signed).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwks = keys.jwks();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[RESOURCE]);
    validation.set_issuer(&[ISSUER]);
    let decoded = jsonwebtoken::decode::<AccessTokenClaims>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(decoded.claims, signed);
    // Another token, another signature (ECDSA is randomised), same header.
    let again = keys.sign(&signed).unwrap();
    assert_ne!(again, token);
    assert_eq!(again.split('.').next(), token.split('.').next());
}
