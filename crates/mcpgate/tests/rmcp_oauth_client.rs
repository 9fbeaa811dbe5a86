//! rmcp's own OAuth client (the official Rust SDK, `rmcp::transport::auth`) against the built-in
//! authorization server of the real `mcpgate` binary: discovery from the 401 challenge and the
//! protected-resource metadata, dynamic client registration, the authorization URL with PKCE,
//! the login and consent pages (driven over HTTP with reqwest, cookies by hand), the code from the
//! 303 `Location`, the token exchange with `iss` checked, an MCP session over rmcp's authorized
//! Streamable HTTP transport calling `whoami`, and a refresh through rmcp.
//!
//! Nothing here is mcpgate's own client code: every OAuth step that a real rmcp-based MCP client
//! performs is rmcp's.

mod common;

use std::net::TcpListener;

use common::{PATIENCE, Server, http};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{
    AuthClient, AuthorizationCallback, AuthorizationManager, AuthorizationMetadataSource,
    AuthorizationRequest, OAuthState,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

/// The loopback redirect URI the test client registers; nothing listens there: the test reads
/// the code from the authorization server's 303 `Location`, as a native app's listener would.
const REDIRECT_URI: &str = "http://127.0.0.1:8976/callback";
const READ: &str = "mcp:tools:read";
const WRITE: &str = "mcp:tools:write";

/// A loopback port free right now (the public URL, hence the issuer and the resource, must be
/// known before mcpgate starts, so `MCP_PORT=0` cannot be used here).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// mcpgate in built-in authorization-server mode, and the first-start admin password.
fn builtin_server() -> (Server, String) {
    let port = free_port().to_string();
    let public_url = format!("http://127.0.0.1:{port}");
    let builder = Server::builder();
    let store = format!("sqlite://{}", builder.dir().join("oauth.db").display());
    let server = builder
        .env("MCP_PORT", &port)
        .env("MCP_OAUTH_ENABLED", "true")
        .env("MCP_OAUTH_PUBLIC_URL", &public_url)
        .env("MCP_OAUTH_STORE", &store)
        .start();
    assert_eq!(server.url(""), public_url, "listening address");
    const BANNER: &str = "First start: created user `admin` with password ";
    assert!(
        server.stdout.wait_for(|out| out.contains(BANNER)),
        "no first-start admin password:\n{}",
        server.output()
    );
    let out = server.stdout.text();
    let password = out
        .lines()
        .find_map(|line| line.split_once(BANNER).map(|(_, rest)| rest))
        .expect("banner line")
        .trim()
        .trim_matches('`')
        .to_owned();
    assert!(!password.is_empty(), "empty admin password in {out:?}");
    (server, password)
}

/// The value of the hidden form field `name` in an HTML page.
fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in the page:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').expect("end of the value") + start;
    html[start..end].to_owned()
}

/// The `name=value` of the session cookie among a response's `Set-Cookie` headers.
fn session_cookie(response: &reqwest::Response) -> String {
    let cookies: Vec<&str> = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("__Host-mcpgate-session="))
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(
            cookie.contains(attribute),
            "session cookie lacks {attribute}: {cookie}"
        );
    }
    cookie.split(';').next().expect("name=value").to_owned()
}

/// A person at the browser: signs in as `user` and approves, over plain HTTP; returns the
/// redirect to the client (the 303 `Location`).
async fn sign_in_and_approve(
    auth_url: &str,
    user: &str,
    password: &str,
    client_name: &str,
) -> String {
    let browser = http();
    let login = browser
        .get(auth_url)
        .send()
        .await
        .expect("GET the authorization URL");
    assert_eq!(
        login.status(),
        200,
        "the authorization URL shows the login page"
    );
    let html = login.text().await.expect("login page");
    assert!(html.contains("Sign in"), "not a login page:\n{html}");

    let consent = browser
        .post(
            url::Url::parse(auth_url)
                .unwrap()
                .join("/authorize/login")
                .unwrap(),
        )
        .form(&[
            ("pending", hidden_field(&html, "pending").as_str()),
            ("csrf", hidden_field(&html, "csrf").as_str()),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .expect("POST the login form");
    if consent.status() == 303 {
        panic!(
            "signing in redirected straight back to the client, without a consent page \
             (the request was narrowed to a scope already approved?): {:?}",
            consent.headers().get(reqwest::header::LOCATION)
        );
    }
    assert_eq!(consent.status(), 200, "signing in shows the consent page");
    let cookie = session_cookie(&consent);
    let html = consent.text().await.expect("consent page");
    assert!(
        html.contains(&format!("{client_name} wants to access your account")),
        "not the consent page for {client_name}:\n{html}"
    );

    let approved = browser
        .post(
            url::Url::parse(auth_url)
                .unwrap()
                .join("/authorize/consent")
                .unwrap(),
        )
        .header(reqwest::header::COOKIE, cookie)
        .form(&[
            ("pending", hidden_field(&html, "pending").as_str()),
            ("csrf", hidden_field(&html, "csrf").as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .expect("POST the consent form");
    assert_eq!(approved.status(), 303, "approving redirects to the client");
    approved
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location of the redirect")
        .to_owned()
}

/// The challenge an MCP client gets from its first, unauthenticated request.
async fn challenge(server: &Server) -> String {
    let response = http()
        .post(server.url("/mcp"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "probe", "version": "0"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(response.status(), 401);
    response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .expect("WWW-Authenticate on the 401")
        .to_owned()
}

/// `whoami` over an MCP session of rmcp's Streamable HTTP client transport authorized by
/// `auth`; returns its structured content.
async fn whoami(server: &Server, auth: AuthClient<reqwest::Client>) -> Value {
    let transport = StreamableHttpClientTransport::with_client(
        auth,
        StreamableHttpClientTransportConfig::with_uri(server.url("/mcp")),
    );
    let client = tokio::time::timeout(PATIENCE, ().serve(transport))
        .await
        .expect("initialize in time")
        .expect("rmcp client initializes against mcpgate");
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("mcpgate")
    );
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "whoami"), "whoami is listed");
    let result = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .expect("tools/call whoami");
    assert_ne!(result.is_error, Some(true), "whoami failed: {result:?}");
    let me = result
        .structured_content
        .clone()
        .expect("structured content");
    client.cancel().await.expect("close the session");
    me
}

fn token_field(credentials: &impl serde::Serialize, field: &str) -> String {
    let value = serde_json::to_value(credentials).expect("token response as JSON");
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}

/// The high-level state machine (`OAuthState`), as rmcp's own examples and clients use it:
/// 401 challenge → discovery → DCR → login and consent → callback → authorized MCP session →
/// refresh.
#[tokio::test]
async fn rmcp_oauth_state_machine_completes_the_flow() {
    let (server, password) = builtin_server();
    let issuer = server.url("");

    // Discovery as rmcp does it, reported step by step.
    let www_authenticate = challenge(&server).await;
    assert!(
        www_authenticate.contains(".well-known/oauth-protected-resource"),
        "challenge names the resource metadata: {www_authenticate}"
    );
    let manager = AuthorizationManager::new(server.url("/mcp"))
        .await
        .expect("authorization manager");
    let resolution = manager
        .resolve_metadata_from_challenge(Some(&www_authenticate))
        .await
        .expect("rmcp discovers the authorization server");
    assert_eq!(
        resolution.source,
        AuthorizationMetadataSource::ProtectedResourceMetadata
    );
    let metadata = resolution.metadata;
    assert_eq!(metadata.issuer.as_deref(), Some(issuer.as_str()));
    assert_eq!(metadata.authorization_endpoint, server.url("/authorize"));
    assert_eq!(metadata.token_endpoint, server.url("/token"));
    assert_eq!(
        metadata.registration_endpoint.as_deref(),
        Some(server.url("/register").as_str())
    );
    assert_eq!(
        metadata.code_challenge_methods_supported,
        Some(vec!["S256".to_owned()])
    );

    // The state machine: discovery again from the challenge, then DCR and the authorization URL.
    let mut state = OAuthState::new(server.url("/mcp"), None)
        .await
        .expect("OAuth state");
    state
        .start_authorization(
            AuthorizationRequest::new(REDIRECT_URI)
                .with_client_name("rmcp interop test")
                .with_scopes([READ, WRITE])
                .with_challenge(www_authenticate.clone()),
        )
        .await
        .expect("discovery and dynamic client registration");
    let (client_id, credentials) = state.get_credentials().await.expect("credentials");
    assert!(credentials.is_none(), "no token before the callback");
    let auth_url = state
        .get_authorization_url()
        .await
        .expect("authorization URL");
    let parsed = url::Url::parse(&auth_url).expect("authorization URL parses");
    let query: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    assert_eq!(parsed.path(), "/authorize");
    assert_eq!(query["client_id"], client_id);
    assert_eq!(query["redirect_uri"], REDIRECT_URI);
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["resource"], server.url("/mcp"));
    let requested: Vec<&str> = query["scope"].split(' ').collect();
    assert!(
        requested.contains(&READ) && requested.contains(&WRITE),
        "scope {requested:?}"
    );

    // A person signs in and approves (the consent page names the client as rmcp registered it);
    // the code comes back on the 303.
    let location = sign_in_and_approve(&auth_url, "admin", &password, "rmcp interop test").await;
    assert!(
        location.starts_with(&format!("{REDIRECT_URI}?")),
        "redirect {location}"
    );
    let callback = AuthorizationCallback::from_redirect_url(&location).expect("callback parses");
    assert_eq!(callback.csrf_token, query["state"], "state echoed");
    assert_eq!(
        callback.issuer.as_deref(),
        Some(issuer.as_str()),
        "iss (RFC 9207)"
    );

    // rmcp exchanges the code (checking state, PKCE verifier and iss).
    state
        .handle_callback_url(&location)
        .await
        .expect("rmcp exchanges the code");
    let (_, credentials) = state.get_credentials().await.expect("credentials");
    let credentials = credentials.expect("a token after the callback");
    let first_access = token_field(&credentials, "access_token");
    let first_refresh = token_field(&credentials, "refresh_token");
    assert_eq!(
        token_field(&credentials, "token_type").to_ascii_lowercase(),
        "bearer"
    );

    let OAuthState::Authorized(manager) = state else {
        panic!("rmcp is not in the authorized state after the callback");
    };
    assert_eq!(
        manager.get_access_token().await.expect("token"),
        first_access
    );
    let mut granted = manager.get_current_scopes().await;
    granted.sort();
    assert_eq!(granted, [READ, WRITE], "scopes rmcp recorded");

    // An MCP session over rmcp's authorized transport.
    let auth = AuthClient::new(reqwest::Client::new(), manager);
    let me = whoami(&server, auth.clone()).await;
    assert_eq!(me["issuer"], json!(issuer));
    assert_eq!(me["client_id"], json!(client_id));
    assert_eq!(me["transport"], json!("streamable-http"));
    let principal = me["principal"].as_str().expect("principal").to_owned();
    assert!(!principal.is_empty(), "principal in {me}");
    let mut scopes: Vec<String> = serde_json::from_value(me["scopes"].clone()).expect("scopes");
    scopes.sort();
    assert_eq!(scopes, [READ, WRITE], "principal scopes");

    // Refresh through rmcp: new access and refresh tokens (rotation), same principal.
    let refreshed = auth
        .auth_manager
        .lock()
        .await
        .refresh_token()
        .await
        .expect("rmcp refreshes the token");
    let second_access = token_field(&refreshed, "access_token");
    let second_refresh = token_field(&refreshed, "refresh_token");
    assert_ne!(second_access, first_access, "a new access token");
    assert_ne!(second_refresh, first_refresh, "the refresh token rotates");
    assert_eq!(
        auth.get_access_token().await.expect("stored token"),
        second_access,
        "rmcp stored the refreshed token"
    );
    let me_again = whoami(&server, auth.clone()).await;
    assert_eq!(me_again["principal"], json!(principal));
    assert_eq!(me_again["client_id"], json!(client_id));
    assert_eq!(me_again["scopes"], me["scopes"]);

    // Tokens never reach the logs (the admin password is printed once, by design).
    let log = server.output();
    for secret in [
        &first_access,
        &first_refresh,
        &second_access,
        &second_refresh,
    ] {
        assert!(
            !log.contains(secret.as_str()),
            "a token reached mcpgate's output"
        );
    }
}

/// The first `InsufficientScopeError` in an error's source chain.
fn insufficient_scope<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rmcp::transport::streamable_http_client::InsufficientScopeError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The lower-level `AuthorizationManager` API, step by step, with a step-up: a read-only grant,
/// a 403 `insufficient_scope` on a write tool, rmcp's scope upgrade, a second consent, and the
/// write tool then works.
#[tokio::test]
async fn rmcp_authorization_manager_steps_up_to_a_wider_scope() {
    let (server, password) = builtin_server();
    let issuer = server.url("");

    let mut manager = AuthorizationManager::new(server.url("/mcp"))
        .await
        .expect("authorization manager");
    let resolution = manager.resolve_metadata().await.expect("discovery");
    assert_eq!(
        resolution.source,
        AuthorizationMetadataSource::ProtectedResourceMetadata
    );
    manager.set_metadata(resolution.metadata);
    let config = manager
        .register_client("rmcp step-up test", REDIRECT_URI, &[READ])
        .await
        .expect("dynamic client registration");
    let client_id = config.client_id.clone();
    manager
        .configure_client(config)
        .expect("configure the client");

    // Read-only first.
    let auth_url = manager
        .get_authorization_url(&[READ])
        .await
        .expect("authorization URL");
    let location = sign_in_and_approve(&auth_url, "admin", &password, "rmcp step-up test").await;
    let callback = AuthorizationCallback::from_redirect_url(&location).expect("callback");
    manager
        .exchange_code_for_token_with_issuer(
            &callback.code,
            &callback.csrf_token,
            callback.issuer.as_deref(),
        )
        .await
        .expect("code exchange");
    assert_eq!(manager.get_current_scopes().await, [READ]);

    let auth = AuthClient::new(reqwest::Client::new(), manager);
    let transport = StreamableHttpClientTransport::with_client(
        auth.clone(),
        StreamableHttpClientTransportConfig::with_uri(server.url("/mcp")),
    );
    let client = ().serve(transport).await.expect("read-only session");
    let mut put = CallToolRequestParams::new("notes_put");
    put.arguments = json!({"id": "step-up", "content": "written after step-up"})
        .as_object()
        .cloned();
    let refused = client
        .call_tool(put.clone())
        .await
        .expect_err("a write tool with a read-only token is refused");
    let scope_error = insufficient_scope(&refused)
        .unwrap_or_else(|| panic!("not an insufficient_scope refusal: {refused:?}"));
    let required = scope_error
        .get_required_scope()
        .unwrap_or_else(|| panic!("no scope in the challenge: {scope_error:?}"))
        .to_owned();
    assert!(
        required.split(' ').any(|s| s == WRITE),
        "the challenge asks for {WRITE}: {required}"
    );
    let _ = client.cancel().await;

    // rmcp's scope upgrade: a new authorization URL for the union of scopes, a second consent.
    let upgrade_url = auth
        .auth_manager
        .lock()
        .await
        .request_scope_upgrade(&required)
        .await
        .expect("scope upgrade URL");
    let upgrade_query: std::collections::HashMap<_, _> = url::Url::parse(&upgrade_url)
        .expect("URL")
        .query_pairs()
        .into_owned()
        .collect();
    let mut asked: Vec<&str> = upgrade_query["scope"].split(' ').collect();
    asked.sort();
    assert_eq!(asked, [READ, WRITE], "the upgrade asks for the union");
    let location = sign_in_and_approve(&upgrade_url, "admin", &password, "rmcp step-up test").await;
    let callback = AuthorizationCallback::from_redirect_url(&location).expect("callback");
    assert_eq!(callback.issuer.as_deref(), Some(issuer.as_str()));
    auth.auth_manager
        .lock()
        .await
        .exchange_code_for_token_with_issuer(
            &callback.code,
            &callback.csrf_token,
            callback.issuer.as_deref(),
        )
        .await
        .expect("code exchange after the upgrade");

    let transport = StreamableHttpClientTransport::with_client(
        auth.clone(),
        StreamableHttpClientTransportConfig::with_uri(server.url("/mcp")),
    );
    let client = ().serve(transport).await.expect("upgraded session");
    let written = client
        .call_tool(put)
        .await
        .expect("notes_put after the step-up");
    assert_ne!(
        written.is_error,
        Some(true),
        "notes_put failed: {written:?}"
    );
    let me = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .expect("whoami")
        .structured_content
        .expect("structured content");
    assert_eq!(me["client_id"], json!(client_id));
    let mut scopes: Vec<String> = serde_json::from_value(me["scopes"].clone()).expect("scopes");
    scopes.sort();
    assert_eq!(scopes, [READ, WRITE]);
    client.cancel().await.expect("close the session");
}
