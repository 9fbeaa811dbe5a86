//! The legacy HTTP+SSE transport (`GET /sse` + `POST /messages?sessionId=…`) against the real
//! `mcpgate` binary.

mod common;

use common::{
    LEGACY_VERSION, STATEFUL_VERSION, Server, SseStream, TOKEN, http, initialize_params, json_body,
    structured,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CI_TOKEN: &str = "ci-secret-token-77ab01";

/// An open legacy session: its stream and the URL its messages are POSTed to.
struct Legacy {
    stream: SseStream,
    messages_url: String,
    token: Option<String>,
}

impl Legacy {
    async fn open(server: &Server, token: Option<&str>) -> Self {
        let mut request = http()
            .get(server.url("/sse"))
            .header("Accept", "text/event-stream");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut stream = SseStream::new(response);
        let endpoint = stream.expect_event().await;
        assert_eq!(endpoint.event.as_deref(), Some("endpoint"));
        let session = endpoint
            .data
            .strip_prefix("/messages?sessionId=")
            .unwrap_or_else(|| panic!("endpoint event data {:?}", endpoint.data));
        assert!(
            session.len() >= 16 && session.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{session:?}"
        );
        Self {
            stream,
            messages_url: server.url(&endpoint.data),
            token: token.map(str::to_owned),
        }
    }

    fn post(&self, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = http()
            .post(&self.messages_url)
            .header("Content-Type", "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// POSTs a message as the session's owner; asserts 202.
    async fn send(&self, message: Value) {
        let response = self
            .post(self.token.as_deref())
            .json(&message)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{message}");
    }

    /// A request whose answer arrives on the stream.
    async fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await;
        let response = self.stream.expect_response(id).await;
        assert!(response.get("error").is_none(), "{method}: {response}");
        response["result"].clone()
    }

    async fn initialize(&mut self) -> Value {
        let result = self
            .request(1, "initialize", initialize_params(LEGACY_VERSION))
            .await;
        self.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        result
    }
}

fn two_principals() -> Server {
    Server::builder()
        .with_token()
        .config_file(&format!(
            "[[tokens]]\nname = \"ci\"\ntoken = \"{CI_TOKEN}\"\nscopes = [\"mcp:tools:read\"]\n"
        ))
        .start()
}

#[tokio::test]
async fn endpoint_event_then_replies_on_the_stream() {
    let server = Server::builder().with_token().start();
    let mut legacy = Legacy::open(&server, Some(TOKEN)).await;
    let init = legacy.initialize().await;
    assert_eq!(init["protocolVersion"], LEGACY_VERSION);
    assert_eq!(init["serverInfo"]["name"], "mcpgate");

    let tools = legacy.request(2, "tools/list", json!({})).await;
    assert_eq!(tools["tools"].as_array().unwrap().len(), 6);

    let me = legacy
        .request(
            3,
            "tools/call",
            json!({ "name": "whoami", "arguments": {} }),
        )
        .await;
    let me = structured(&me);
    assert_eq!(me["principal"], "default");
    assert_eq!(me["transport"], "sse");
    assert_eq!(me["protocol_version"], LEGACY_VERSION);
}

#[tokio::test]
async fn notes_written_over_sse_are_seen_over_streamable_http() {
    let server = Server::builder().with_token().start();
    let mut legacy = Legacy::open(&server, Some(TOKEN)).await;
    legacy.initialize().await;
    let put = legacy
        .request(
            2,
            "tools/call",
            json!({ "name": "notes_put", "arguments": { "id": "shared", "content": "via sse" } }),
        )
        .await;
    assert_eq!(structured(&put)["id"], "shared");

    let mut mcp = server.mcp(Some(TOKEN));
    mcp.initialize().await;
    let got = mcp.call_tool("notes_get", json!({ "id": "shared" })).await;
    assert_eq!(got["content"][0]["text"], "via sse");
}

#[tokio::test]
async fn another_principal_cannot_post_to_the_session() {
    let server = two_principals();
    let mut legacy = Legacy::open(&server, Some(TOKEN)).await;
    legacy.initialize().await;

    let stolen = legacy
        .post(Some(CI_TOKEN))
        .json(&json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": { "name": "whoami", "arguments": {} } }))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), StatusCode::NOT_FOUND);

    // Without a token the request never reaches the session.
    let anonymous = legacy
        .post(None)
        .json(&json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // The owner's session still works, and nothing was answered for the thief's request.
    let me = legacy
        .request(
            10,
            "tools/call",
            json!({ "name": "whoami", "arguments": {} }),
        )
        .await;
    assert_eq!(structured(&me)["principal"], "default");
}

#[tokio::test]
async fn session_ids_are_checked() {
    let server = Server::builder().with_token().start();
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" });

    let missing = http()
        .post(server.url("/messages"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    let empty = http()
        .post(server.url("/messages?sessionId="))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);

    let unknown = http()
        .post(server.url("/messages?sessionId=0123456789abcdef0123456789abcdef"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_posts_get_json_rpc_errors() {
    let server = Server::builder().with_token().start();
    let mut legacy = Legacy::open(&server, Some(TOKEN)).await;
    legacy.initialize().await;

    for (body, code) in [
        ("{\"jsonrpc\": \"2.0\", \"id\": 1, ", -32700),
        ("{\"hello\": \"world\"}", -32600),
    ] {
        let response = legacy.post(Some(TOKEN)).body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let json = json_body(response).await;
        assert_eq!(json["error"]["code"], code, "{body}: {json}");
    }

    let wrong_type = http()
        .post(&legacy.messages_url)
        .bearer_auth(TOKEN)
        .header("Content-Type", "text/plain")
        .body(json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/list" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The session survives bad input.
    let tools = legacy.request(6, "tools/list", json!({})).await;
    assert_eq!(tools["tools"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn oversized_posts_are_refused_with_413() {
    let server = Server::builder()
        .with_token()
        .env("MCP_MAX_BODY_BYTES", "2048")
        .start();
    let mut legacy = Legacy::open(&server, Some(TOKEN)).await;
    legacy.initialize().await;
    let big = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "notes_put", "arguments": { "id": "big", "content": "z".repeat(4096) } },
    });
    let response = legacy.post(Some(TOKEN)).json(&big).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A body of unknown length (chunked) is cut off at the limit too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .to_string()
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = legacy
        .post(Some(TOKEN))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // The session is still usable.
    let tools = legacy.request(3, "tools/list", json!({})).await;
    assert_eq!(tools["tools"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn closing_the_stream_ends_the_session() {
    let server = Server::builder().with_token().start();
    let mut legacy = Legacy::open(&server, Some(TOKEN)).await;
    legacy.initialize().await;
    let url = legacy.messages_url.clone();
    drop(legacy);

    // The server notices the disconnect; after that the session id is unknown.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let status = loop {
        let status = http()
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list" }))
            .send()
            .await
            .unwrap()
            .status();
        if status != StatusCode::ACCEPTED || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sse_only_transport_serves_no_streamable_http() {
    let server = Server::builder()
        .with_token()
        .env("MCP_TRANSPORT", "sse")
        .start();
    let banner = server.url("/sse");
    assert!(
        server.stdout.wait_for(|out| out.contains(&banner)),
        "{}",
        server.stdout.text()
    );
    assert!(
        !server.stdout.text().contains(&server.url("/mcp")),
        "{}",
        server.stdout.text()
    );
    let mut legacy = Legacy::open(&server, Some(TOKEN)).await;
    legacy.initialize().await;
    let me = legacy
        .request(
            2,
            "tools/call",
            json!({ "name": "whoami", "arguments": {} }),
        )
        .await;
    assert_eq!(structured(&me)["transport"], "sse");

    let mcp = server.mcp(Some(TOKEN));
    let response = mcp
        .post()
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(STATEFUL_VERSION) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn legacy_sse_can_be_switched_off() {
    let server = Server::builder()
        .with_token()
        .env("MCP_LEGACY_SSE", "false")
        .start();
    let sse = http()
        .get(server.url("/sse"))
        .bearer_auth(TOKEN)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::NOT_FOUND);
    let messages = http()
        .post(server.url("/messages?sessionId=abc"))
        .bearer_auth(TOKEN)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(messages.status(), StatusCode::NOT_FOUND);
    // /mcp is unaffected.
    let mut mcp = server.mcp(Some(TOKEN));
    mcp.initialize().await;
}
