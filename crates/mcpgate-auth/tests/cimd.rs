//! Client ID metadata documents: the SSRF guard refuses internal addresses, and a loopback
//! document server (reachable only through the test guard, see `cimd::FetchGuard`) exercises the
//! real fetch: redirects, size cap, validation, caching.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use mcpgate_auth::ScopeSet;
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::server::cimd::{self, FetchGuard};
use mcpgate_auth::server::clients::{self, ClientKind};
use mcpgate_auth::server::error::ErrorCode;
use mcpgate_auth::server::{
    AuthServer, AuthServerConfig, MetadataDocumentPolicy, RegistrationPolicy,
};
use mcpgate_auth::store::Store;
use mcpgate_auth::store::sqlite::SqliteStore;
use serde_json::{Value, json};

const LOOSE: FetchGuard = FetchGuard::LOOPBACK_FOR_TESTS;

async fn auth_server(policy: MetadataDocumentPolicy) -> Arc<AuthServer> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
    let keys = KeyManager::load_or_create(store.clone()).await.unwrap();
    let config = AuthServerConfig {
        issuer: "https://as.example".into(),
        resources: vec!["https://as.example/mcp".into()],
        scopes_supported: vec!["mcp:tools".into()],
        scope_descriptions: vec![],
        default_scope: ScopeSet::parse("mcp:tools"),
        access_token_ttl: Duration::from_secs(3600),
        refresh_token_ttl: Duration::from_secs(86400),
        code_ttl: Duration::from_secs(60),
        refresh_grace: Duration::from_secs(10),
        pending_ttl: Duration::from_secs(600),
        session_ttl: Duration::from_secs(3600),
        registration: RegistrationPolicy::default(),
        metadata_documents: policy,
    };
    AuthServer::new(config, store, keys, reqwest::Client::new())
}

fn enabled() -> MetadataDocumentPolicy {
    MetadataDocumentPolicy {
        enabled: true,
        ..Default::default()
    }
}

/// A document server on loopback. Each path is one behaviour; `hits` counts requests per path.
#[derive(Clone)]
struct Docs {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    flaky: Arc<AtomicUsize>,
}

impl Docs {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let docs = Docs {
            base: format!("http://{addr}"),
            hits: Arc::default(),
            flaky: Arc::default(),
        };
        let app = Router::new()
            .route("/{name}", get(serve))
            .with_state(docs.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        docs
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    fn document(&self, name: &str) -> Value {
        json!({
            "client_id": self.url(name),
            "client_name": "Loopback App",
            "client_uri": "https://app.example/",
            "redirect_uris": ["http://127.0.0.1/callback", "https://app.example/cb"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": "mcp:tools",
        })
    }
}

fn json_response(value: Value, cache_control: Option<&'static str>) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response();
    if let Some(cc) = cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    response
}

async fn serve(State(docs): State<Docs>, Path(name): Path<String>) -> Response {
    *docs.hits.lock().unwrap().entry(name.clone()).or_default() += 1;
    let mut doc = docs.document(&name);
    match name.as_str() {
        "good.json" => json_response(doc, Some("public, max-age=600")),
        "nostore.json" => json_response(doc, Some("no-store")),
        "localhost.json" => {
            doc["client_id"] = docs.url(&name).replace("127.0.0.1", "localhost").into();
            json_response(doc, None)
        }
        "redirect.json" => (
            StatusCode::FOUND,
            [(header::LOCATION, docs.url("good.json"))],
        )
            .into_response(),
        "redirect-internal.json" => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")],
        )
            .into_response(),
        "big.json" => {
            doc["padding"] = "x".repeat(6 * 1024).into();
            json_response(doc, None)
        }
        "big-chunked.json" => {
            // No Content-Length: the cap must stop the stream itself.
            doc["padding"] = "x".repeat(64 * 1024).into();
            let text = doc.to_string().into_bytes();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                text.chunks(1024).map(|c| Ok(c.to_vec())).collect();
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(futures::stream::iter(chunks)),
            )
                .into_response()
        }
        "mismatch.json" => {
            doc["client_id"] = "https://other.example/client.json".into();
            json_response(doc, None)
        }
        "secret.json" => {
            doc["token_endpoint_auth_method"] = "client_secret_basic".into();
            json_response(doc, None)
        }
        "has-secret.json" => {
            doc["client_secret"] = "hunter2".into();
            json_response(doc, None)
        }
        "no-name.json" => {
            doc.as_object_mut().unwrap().remove("client_name");
            json_response(doc, None)
        }
        "js-redirect.json" => {
            doc["redirect_uris"] = json!(["javascript:alert(1)"]);
            json_response(doc, None)
        }
        "not-json.json" => "<html>hello</html>".into_response(),
        "flaky.json" => {
            // Fails first, then serves a valid document: the failure must not be cached.
            if docs.flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
            } else {
                json_response(doc, Some("max-age=600"))
            }
        }
        "invalid-then-valid.json" => {
            if docs.hits(&name) == 1 {
                doc["client_id"] = "https://wrong.example/x".into();
            }
            json_response(doc, Some("max-age=600"))
        }
        "slow.json" => {
            tokio::time::sleep(Duration::from_secs(8)).await;
            json_response(doc, None)
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn assert_refused(result: Result<Value, mcpgate_auth::server::error::OAuthError>, needle: &str) {
    let err = result.expect_err("document accepted");
    assert_eq!(err.code, ErrorCode::InvalidClient);
    assert!(
        err.description.contains(needle),
        "{:?} does not mention {needle:?}",
        err.description
    );
}

#[tokio::test]
async fn internal_addresses_are_refused() {
    let server = auth_server(enabled()).await;
    for (url, why) in [
        ("https://127.0.0.1/client.json", "loopback"),
        ("https://127.0.0.1:8443/client.json", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://10.0.0.8/client.json", "private"),
        ("https://192.168.1.1/client.json", "private"),
        ("https://172.20.0.1/client.json", "private"),
        ("https://100.100.100.200/client.json", "CGNAT"),
        ("https://[::1]/client.json", "loopback"),
        ("https://[fe80::1]/client.json", "link-local"),
        ("https://[fd00:ec2::254]/latest", "metadata"),
        ("https://[::ffff:7f00:1]/client.json", "loopback"),
        ("https://0.0.0.0/client.json", "unspecified"),
        // A name that resolves to loopback is refused after resolution.
        ("https://localhost/client.json", "loopback"),
    ] {
        assert_refused(cimd::fetch_document(&server, url).await, why);
        // The public path (client resolution) refuses it the same way.
        let resolved = clients::resolve(&server, url).await;
        assert!(resolved.is_err(), "{url} resolved");
    }
}

#[tokio::test]
async fn the_production_guard_refuses_the_loopback_test_server() {
    let docs = Docs::start().await;
    let server = auth_server(enabled()).await;
    // Plain http is refused outright, and an https URL to the same address by its IP.
    assert_refused(
        cimd::fetch_document(&server, &docs.url("good.json")).await,
        "https",
    );
    let https = docs.url("good.json").replace("http://", "https://");
    assert_refused(cimd::fetch_document(&server, &https).await, "loopback");
    assert_eq!(docs.hits("good.json"), 0);
}

#[tokio::test]
async fn url_rules_are_enforced() {
    let server = auth_server(enabled()).await;
    for (url, why) in [
        ("https://app.example", "path"),
        ("https://app.example/", "path"),
        ("https://app.example/client.json#frag", "fragment"),
        ("https://user:pw@app.example/client.json", "userinfo"),
        ("https://app.example/a/../client.json", ". or .."),
        ("https://app.example/./client.json", ". or .."),
        ("https://APP.example/client.json", "canonical"),
    ] {
        assert_refused(cimd::fetch_document(&server, url).await, why);
    }
}

#[tokio::test]
async fn host_lists_apply() {
    let docs = Docs::start().await;
    let denied = auth_server(MetadataDocumentPolicy {
        enabled: true,
        allow_hosts: vec![],
        deny_hosts: vec!["127.0.0.*".into()],
    })
    .await;
    assert_refused(
        cimd::fetch_document_with(&denied, &docs.url("good.json"), LOOSE).await,
        "denied",
    );
    let allow_other = auth_server(MetadataDocumentPolicy {
        enabled: true,
        allow_hosts: vec!["*.app.example".into()],
        deny_hosts: vec![],
    })
    .await;
    assert_refused(
        cimd::fetch_document_with(&allow_other, &docs.url("good.json"), LOOSE).await,
        "allow-list",
    );
    assert_eq!(docs.hits("good.json"), 0);
    let allow_this = auth_server(MetadataDocumentPolicy {
        enabled: true,
        allow_hosts: vec!["127.0.0.1".into()],
        deny_hosts: vec![],
    })
    .await;
    cimd::fetch_document_with(&allow_this, &docs.url("good.json"), LOOSE)
        .await
        .unwrap();
}

#[tokio::test]
async fn good_document_is_accepted_and_cached() {
    let docs = Docs::start().await;
    let server = auth_server(enabled()).await;
    let url = docs.url("good.json");
    let doc = cimd::fetch_document_with(&server, &url, LOOSE)
        .await
        .unwrap();
    assert_eq!(doc["client_id"], url);
    assert_eq!(doc["client_name"], "Loopback App");
    for _ in 0..3 {
        cimd::fetch_document_with(&server, &url, LOOSE)
            .await
            .unwrap();
    }
    assert_eq!(docs.hits("good.json"), 1, "the document was not cached");

    // The resolved client is a public metadata-document client with the document's redirects.
    let client =
        clients::ResolvedClient::from_metadata(&url, &doc, None, ClientKind::MetadataDocument);
    assert!(client.allows_redirect("http://127.0.0.1:4567/callback"));
    assert!(client.allows_redirect("https://app.example/cb"));
    assert!(!client.allows_redirect("https://app.example/other"));
    assert!(!client.is_confidential());

    // `no-store` is honoured: fetched every time.
    let nostore = docs.url("nostore.json");
    for _ in 0..2 {
        cimd::fetch_document_with(&server, &nostore, LOOSE)
            .await
            .unwrap();
    }
    assert_eq!(docs.hits("nostore.json"), 2);
}

#[tokio::test]
async fn host_names_are_resolved_checked_and_pinned() {
    // `localhost` goes through resolution, the address check and the pinned connection.
    let docs = Docs::start().await;
    let server = auth_server(enabled()).await;
    let url = docs.url("localhost.json").replace("127.0.0.1", "localhost");
    let doc = cimd::fetch_document_with(&server, &url, LOOSE)
        .await
        .unwrap();
    assert_eq!(doc["client_id"], url);
    assert_eq!(docs.hits("localhost.json"), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let docs = Docs::start().await;
    let server = auth_server(enabled()).await;
    assert_refused(
        cimd::fetch_document_with(&server, &docs.url("redirect.json"), LOOSE).await,
        "redirect",
    );
    assert_refused(
        cimd::fetch_document_with(&server, &docs.url("redirect-internal.json"), LOOSE).await,
        "redirect",
    );
    assert_eq!(docs.hits("good.json"), 0, "the redirect was followed");
}

#[tokio::test]
async fn oversized_documents_are_refused() {
    let docs = Docs::start().await;
    let server = auth_server(enabled()).await;
    assert_refused(
        cimd::fetch_document_with(&server, &docs.url("big.json"), LOOSE).await,
        "larger than",
    );
    assert_refused(
        cimd::fetch_document_with(&server, &docs.url("big-chunked.json"), LOOSE).await,
        "larger than",
    );
}

#[tokio::test]
async fn invalid_documents_are_refused() {
    let docs = Docs::start().await;
    let server = auth_server(enabled()).await;
    for (name, why) in [
        ("mismatch.json", "client_id"),
        ("secret.json", "shared secret"),
        ("has-secret.json", "client secret"),
        ("no-name.json", "client_name"),
        ("js-redirect.json", "javascript"),
        ("not-json.json", "JSON"),
        ("missing.json", "HTTP 404"),
    ] {
        assert_refused(
            cimd::fetch_document_with(&server, &docs.url(name), LOOSE).await,
            why,
        );
    }
}

#[tokio::test]
async fn errors_are_never_cached() {
    let docs = Docs::start().await;
    let server = auth_server(enabled()).await;

    let flaky = docs.url("flaky.json");
    assert_refused(
        cimd::fetch_document_with(&server, &flaky, LOOSE).await,
        "HTTP 500",
    );
    cimd::fetch_document_with(&server, &flaky, LOOSE)
        .await
        .unwrap();
    assert_eq!(docs.hits("flaky.json"), 2);

    let invalid = docs.url("invalid-then-valid.json");
    assert_refused(
        cimd::fetch_document_with(&server, &invalid, LOOSE).await,
        "client_id",
    );
    cimd::fetch_document_with(&server, &invalid, LOOSE)
        .await
        .unwrap();
    // Now valid and cached.
    cimd::fetch_document_with(&server, &invalid, LOOSE)
        .await
        .unwrap();
    assert_eq!(docs.hits("invalid-then-valid.json"), 2);
}

#[tokio::test]
async fn slow_servers_time_out() {
    let docs = Docs::start().await;
    let server = auth_server(enabled()).await;
    assert_refused(
        cimd::fetch_document_with(&server, &docs.url("slow.json"), LOOSE).await,
        "timed out",
    );
}
