//! Streamable HTTP at `/mcp` against the real `mcpgate` binary: the stateful 2025-11-25 era with
//! sessions bound to principals, the stateless 2026-07-28 era, the built-in tools, resources and
//! prompts, and the transport's defences (Host/Origin, framing, media types, limits, rate limits).

mod common;

use common::{
    Mcp, STATEFUL_VERSION, STATELESS_VERSION, Server, SseStream, TOKEN, http, initialize_params,
    json_body, stateless_meta, structured,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALICE_TOKEN: &str = "alice-secret-token-77ab01";

/// `MCP_AUTH_TOKEN` (principal `default`) and a named token `alice`, both allowed everything the
/// built-in tools offer.
fn two_principals() -> Server {
    Server::builder()
        .with_token()
        .config_file(&format!(
            r#"
[[tokens]]
name = "alice"
token = "{ALICE_TOKEN}"
scopes = ["mcp:tools:write", "mcp:resources:read", "mcp:prompts:read"]
"#
        ))
        .start()
}

fn tool<'a>(tools: &'a [Value], name: &str) -> &'a Value {
    tools
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tool {name} in {tools:?}"))
}

#[tokio::test]
async fn initialize_mints_a_session_and_announces_capabilities() {
    let server = Server::builder().with_token().start();
    let mut mcp = server.mcp(Some(TOKEN));
    let init = mcp.initialize().await;
    assert_eq!(init["protocolVersion"], STATEFUL_VERSION);
    assert_eq!(init["serverInfo"]["name"], "mcpgate");
    assert_eq!(init["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    for capability in ["tools", "resources", "prompts", "completions"] {
        assert!(
            init["capabilities"][capability].is_object(),
            "{capability}: {init}"
        );
    }
    let session = mcp.session.clone().unwrap();
    assert!(
        session.len() >= 16 && session.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "{session:?}"
    );
}

#[tokio::test]
async fn tools_list_has_the_annotated_built_ins() {
    let server = Server::builder().with_token().start();
    let mut mcp = server.mcp(Some(TOKEN));
    mcp.initialize().await;
    let result = mcp.request("tools/list", json!({})).await;
    let tools = result["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "echo",
            "notes_delete",
            "notes_get",
            "notes_list",
            "notes_put",
            "whoami"
        ]
    );
    for (name, read_only) in [
        ("whoami", true),
        ("echo", true),
        ("notes_list", true),
        ("notes_get", true),
        ("notes_put", false),
        ("notes_delete", false),
    ] {
        let annotations = &tool(tools, name)["annotations"];
        assert_eq!(annotations["readOnlyHint"], json!(read_only), "{name}");
        assert_eq!(annotations["destructiveHint"], json!(!read_only), "{name}");
        assert_eq!(tool(tools, name)["inputSchema"]["type"], "object", "{name}");
    }
}

#[tokio::test]
async fn echo_answers_with_its_text_and_refuses_other_arguments() {
    let server = Server::builder().with_token().start();
    let mut mcp = server.mcp(Some(TOKEN));
    mcp.initialize().await;
    let echoed = mcp.call_tool("echo", json!({ "text": "héllo" })).await;
    assert_eq!(echoed["content"][0]["text"], "héllo", "{echoed}");
    assert_ne!(echoed["isError"], json!(true), "{echoed}");
    let refused = mcp
        .send(
            "tools/call",
            json!({ "name": "echo", "arguments": { "text": 1 } }),
        )
        .await;
    assert_eq!(refused.message["error"]["code"], -32602, "{:?}", refused);
}

#[tokio::test]
async fn whoami_reports_principal_transport_and_protocol() {
    let server = Server::builder().with_token().start();
    let mut mcp = server.mcp(Some(TOKEN));
    mcp.initialize().await;
    let result = mcp.call_tool("whoami", json!({})).await;
    let me = structured(&result);
    assert_eq!(me["principal"], "default");
    assert_eq!(me["transport"], "streamable-http");
    assert_eq!(me["protocol_version"], STATEFUL_VERSION);
    // MCP_AUTH_TOKEN keeps its old meaning: full access.
    assert_eq!(me["scopes"], json!(["mcp:admin"]));
    // The text content carries the same JSON for clients that ignore structured content.
    let text = result["content"][0]["text"].as_str().unwrap();
    assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), me);
}

#[tokio::test]
async fn notes_tools_resources_prompts_and_completions() {
    let server = Server::builder().with_token().start();
    let mut mcp = server.mcp(Some(TOKEN));
    mcp.initialize().await;

    let empty = mcp.call_tool("notes_list", json!({})).await;
    assert_eq!(structured(&empty)["notes"], json!([]));

    let put = mcp
        .call_tool("notes_put", json!({ "id": "todo", "content": "buy milk" }))
        .await;
    assert_eq!(structured(&put)["id"], "todo");
    assert!(structured(&put)["updated_at"].is_i64(), "{put}");
    mcp.call_tool(
        "notes_put",
        json!({ "id": "todo", "content": "buy oat milk" }),
    )
    .await;
    mcp.call_tool(
        "notes_put",
        json!({ "id": "ideas", "content": "write tests" }),
    )
    .await;

    let got = mcp.call_tool("notes_get", json!({ "id": "todo" })).await;
    assert_ne!(got["isError"], json!(true), "{got}");
    assert_eq!(got["content"][0]["text"], "buy oat milk");

    let listed = mcp.call_tool("notes_list", json!({})).await;
    let mut ids: Vec<&str> = structured(&listed)["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["ideas", "todo"]);

    // Bad input is a tool error, not a protocol error.
    let bad = mcp
        .call_tool("notes_put", json!({ "id": "../etc", "content": "x" }))
        .await;
    assert_eq!(bad["isError"], json!(true), "{bad}");

    // Resources: one per note, readable by URI; and the template.
    let resources = mcp.request("resources/list", json!({})).await;
    let mut uris: Vec<&str> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    uris.sort_unstable();
    assert_eq!(uris, ["notes://ideas", "notes://todo"]);
    let read = mcp
        .request("resources/read", json!({ "uri": "notes://todo" }))
        .await;
    assert_eq!(
        read["contents"],
        json!([{ "uri": "notes://todo", "mimeType": "text/plain", "text": "buy oat milk" }])
    );
    let missing = mcp
        .send("resources/read", json!({ "uri": "notes://nope" }))
        .await;
    assert_eq!(missing.message["error"]["code"], -32002, "{:?}", missing);
    let templates = mcp.request("resources/templates/list", json!({})).await;
    assert_eq!(
        templates["resourceTemplates"][0]["uriTemplate"],
        "notes://{id}"
    );

    // The prompt sees the caller's notes.
    let prompts = mcp.request("prompts/list", json!({})).await;
    assert_eq!(prompts["prompts"][0]["name"], "review_notes");
    let prompt = mcp
        .request(
            "prompts/get",
            json!({ "name": "review_notes", "arguments": { "focus": "groceries" } }),
        )
        .await;
    let text = prompt["messages"][0]["content"]["text"].as_str().unwrap();
    assert!(text.contains("groceries"), "{text}");
    assert!(text.contains("buy oat milk"), "{text}");
    assert_eq!(prompt["messages"][0]["role"], "user");

    // Completion of the template's id argument.
    let completion = mcp
        .request(
            "completion/complete",
            json!({
                "ref": { "type": "ref/resource", "uri": "notes://{id}" },
                "argument": { "name": "id", "value": "to" },
            }),
        )
        .await;
    assert_eq!(completion["completion"]["values"], json!(["todo"]));

    let deleted = mcp.call_tool("notes_delete", json!({ "id": "todo" })).await;
    assert_eq!(structured(&deleted)["deleted"], "todo");
    let gone = mcp.call_tool("notes_get", json!({ "id": "todo" })).await;
    assert_eq!(gone["isError"], json!(true), "{gone}");
    let again = mcp.call_tool("notes_delete", json!({ "id": "todo" })).await;
    assert_eq!(again["isError"], json!(true), "{again}");
}

#[tokio::test]
async fn principals_never_see_each_others_notes() {
    let server = two_principals();
    let mut default = server.mcp(Some(TOKEN));
    default.initialize().await;
    let mut alice = server.mcp(Some(ALICE_TOKEN));
    alice.initialize().await;

    default
        .call_tool(
            "notes_put",
            json!({ "id": "secret", "content": "default's" }),
        )
        .await;

    let listed = alice.call_tool("notes_list", json!({})).await;
    assert_eq!(structured(&listed)["notes"], json!([]));
    let got = alice
        .call_tool("notes_get", json!({ "id": "secret" }))
        .await;
    assert_eq!(got["isError"], json!(true), "{got}");
    let resources = alice.request("resources/list", json!({})).await;
    assert_eq!(resources["resources"], json!([]));
    let read = alice
        .send("resources/read", json!({ "uri": "notes://secret" }))
        .await;
    assert_eq!(read.message["error"]["code"], -32002, "{:?}", read);
    let deleted = alice
        .call_tool("notes_delete", json!({ "id": "secret" }))
        .await;
    assert_eq!(deleted["isError"], json!(true), "{deleted}");

    // alice's own note with the same id does not clobber default's.
    alice
        .call_tool("notes_put", json!({ "id": "secret", "content": "alice's" }))
        .await;
    let mine = default
        .call_tool("notes_get", json!({ "id": "secret" }))
        .await;
    assert_eq!(mine["content"][0]["text"], "default's");
    let theirs = alice
        .call_tool("notes_get", json!({ "id": "secret" }))
        .await;
    assert_eq!(theirs["content"][0]["text"], "alice's");
}

#[tokio::test]
async fn a_session_belongs_to_the_principal_that_opened_it() {
    let server = two_principals();
    let mut default = server.mcp(Some(TOKEN));
    default.initialize().await;

    // alice presents default's session id: as if it did not exist.
    let mut thief = server.mcp(Some(ALICE_TOKEN));
    thief.session = default.session.clone();
    thief.protocol = Some(STATEFUL_VERSION.into());
    let stolen = thief.send("tools/list", json!({})).await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND, "{:?}", stolen);
    let stolen_get = http()
        .get(server.url("/mcp"))
        .bearer_auth(ALICE_TOKEN)
        .header("Accept", "text/event-stream")
        .header("Mcp-Session-Id", default.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stolen_get.status(), StatusCode::NOT_FOUND);
    let stolen_delete = http()
        .delete(server.url("/mcp"))
        .bearer_auth(ALICE_TOKEN)
        .header("Mcp-Session-Id", default.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stolen_delete.status(), StatusCode::NOT_FOUND);

    // The owner's session is untouched by those attempts.
    let me = default.call_tool("whoami", json!({})).await;
    assert_eq!(structured(&me)["principal"], "default");
}

#[tokio::test]
async fn unknown_and_missing_sessions() {
    let server = Server::builder().with_token().start();
    let mut unknown = server.mcp(Some(TOKEN));
    unknown.session = Some("0123456789abcdef0123456789abcdef".into());
    unknown.protocol = Some(STATEFUL_VERSION.into());
    let exchange = unknown.send("tools/list", json!({})).await;
    assert_eq!(exchange.status, StatusCode::NOT_FOUND);

    let mut missing = server.mcp(Some(TOKEN));
    missing.protocol = Some(STATEFUL_VERSION.into());
    let exchange = missing.send("tools/list", json!({})).await;
    assert_eq!(exchange.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn get_opens_the_session_stream_and_delete_ends_the_session() {
    let server = Server::builder().with_token().start();
    let mut mcp = server.mcp(Some(TOKEN));
    mcp.initialize().await;
    let session = mcp.session.clone().unwrap();

    let stream = http()
        .get(server.url("/mcp"))
        .bearer_auth(TOKEN)
        .header("Accept", "text/event-stream")
        .header("Mcp-Session-Id", &session)
        .header("MCP-Protocol-Version", STATEFUL_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let _stream = SseStream::new(stream);

    let deleted = http()
        .delete(server.url("/mcp"))
        .bearer_auth(TOKEN)
        .header("Mcp-Session-Id", &session)
        .header("MCP-Protocol-Version", STATEFUL_VERSION)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());

    let after = mcp.send("tools/list", json!({})).await;
    assert_eq!(after.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stateless_discover_and_call_mint_no_session() {
    let server = Server::builder().with_token().start();
    let mcp = server.mcp(Some(TOKEN));

    let discover = mcp
        .exchange(
            mcp.post()
                .header("MCP-Protocol-Version", STATELESS_VERSION)
                .header("Mcp-Method", "server/discover")
                .json(&json!({
                    "jsonrpc": "2.0", "id": 1, "method": "server/discover",
                    "params": { "_meta": stateless_meta() },
                })),
            1,
        )
        .await;
    assert_eq!(discover.status, StatusCode::OK, "{:?}", discover);
    assert!(!discover.headers.contains_key("mcp-session-id"));
    let result = discover.result();
    assert!(
        result["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(STATELESS_VERSION)),
        "{result}"
    );
    assert!(result["capabilities"]["tools"].is_object(), "{result}");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcpgate"
    );

    let call = mcp
        .exchange(
            mcp.post()
                .header("MCP-Protocol-Version", STATELESS_VERSION)
                .header("Mcp-Method", "tools/call")
                .header("Mcp-Name", "whoami")
                .json(&json!({
                    "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": { "name": "whoami", "arguments": {}, "_meta": stateless_meta() },
                })),
            2,
        )
        .await;
    assert_eq!(call.status, StatusCode::OK, "{:?}", call);
    assert!(!call.headers.contains_key("mcp-session-id"));
    let me = structured(call.result());
    assert_eq!(me["principal"], "default");
    assert_eq!(me["transport"], "streamable-http");
    assert_eq!(me["protocol_version"], STATELESS_VERSION);

    let list = mcp
        .exchange(
            mcp.post()
                .header("MCP-Protocol-Version", STATELESS_VERSION)
                .header("Mcp-Method", "tools/list")
                .json(&json!({
                    "jsonrpc": "2.0", "id": 3, "method": "tools/list",
                    "params": { "_meta": stateless_meta() },
                })),
            3,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list);
    assert_eq!(list.result()["tools"].as_array().unwrap().len(), 6);

    // Stateless requests still need the token.
    let anonymous = Mcp::new(server.url("/mcp"), None);
    let refused = anonymous
        .post()
        .header("MCP-Protocol-Version", STATELESS_VERSION)
        .header("Mcp-Method", "server/discover")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "server/discover",
            "params": { "_meta": stateless_meta() },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn stateless_notes_are_the_principals_own() {
    let server = two_principals();
    let call = |token: &'static str, id: i64, name: &'static str, arguments: Value| {
        let mcp = Mcp::new(server.url("/mcp"), Some(token));
        async move {
            mcp.exchange(
                mcp.post()
                    .header("MCP-Protocol-Version", STATELESS_VERSION)
                    .header("Mcp-Method", "tools/call")
                    .header("Mcp-Name", name)
                    .json(&json!({
                        "jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": { "name": name, "arguments": arguments, "_meta": stateless_meta() },
                    })),
                id,
            )
            .await
        }
    };
    let put = call(
        TOKEN,
        1,
        "notes_put",
        json!({ "id": "s", "content": "stateless" }),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put);
    let mine = call(TOKEN, 2, "notes_get", json!({ "id": "s" })).await;
    assert_eq!(mine.result()["content"][0]["text"], "stateless");
    let theirs = call(ALICE_TOKEN, 3, "notes_get", json!({ "id": "s" })).await;
    assert_eq!(theirs.result()["isError"], json!(true));
}

#[tokio::test]
async fn foreign_host_and_origin_are_forbidden() {
    let server = Server::builder().with_token().start();
    let mcp = server.mcp(Some(TOKEN));
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(STATEFUL_VERSION) });

    let evil_host = mcp
        .post()
        .header("Host", "evil.example.com")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(evil_host.status(), StatusCode::FORBIDDEN);
    let body = json_body(evil_host).await;
    assert_eq!(body["error"]["code"], -32600, "{body}");

    let evil_origin = mcp
        .post()
        .header("Origin", "http://evil.example.com")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(evil_origin.status(), StatusCode::FORBIDDEN);

    // The legacy endpoints are guarded too.
    let evil_sse = http()
        .get(server.url("/sse"))
        .bearer_auth(TOKEN)
        .header("Origin", "http://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(evil_sse.status(), StatusCode::FORBIDDEN);

    // Same-origin requests pass.
    let same = mcp
        .post()
        .header("Origin", format!("http://{}", server.authority()))
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::OK);
    let localhost = mcp
        .post()
        .header("Host", format!("localhost:{}", server.addr.port()))
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(localhost.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_forbidden_check_comes_before_authentication() {
    let server = Server::builder().with_token().start();
    let response = http()
        .post(server.url("/mcp"))
        .header("Host", "evil.example.com")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn allowed_hosts_replace_the_loopback_default() {
    let server = Server::builder()
        .with_token()
        .env("MCP_ALLOWED_HOSTS", "mcp.example.com")
        .start();
    let mcp = server.mcp(Some(TOKEN));
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(STATEFUL_VERSION) });
    let allowed = mcp
        .post()
        .header("Host", "mcp.example.com")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    let loopback = mcp.post().json(&init).send().await.unwrap();
    assert_eq!(loopback.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn dns_rebinding_protection_can_be_switched_off() {
    let server = Server::builder()
        .with_token()
        .env("MCP_ENABLE_DNS_REBINDING_PROTECTION", "false")
        .start();
    let mcp = server.mcp(Some(TOKEN));
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(STATEFUL_VERSION) });
    let any_host = mcp
        .post()
        .header("Host", "anything.example.com")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(any_host.status(), StatusCode::OK);
    // The Origin is still checked.
    let evil_origin = mcp
        .post()
        .header("Host", "anything.example.com")
        .header("Origin", "http://evil.example.com")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(evil_origin.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn malformed_messages_get_json_rpc_errors() {
    let server = Server::builder().with_token().start();
    let mut mcp = server.mcp(Some(TOKEN));

    for (body, code) in [
        ("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ", -32700),
        ("not json at all", -32700),
        ("{\"hello\": \"world\"}", -32600),
        ("{\"jsonrpc\": \"2.0\", \"id\": 1}", -32600),
        ("42", -32600),
    ] {
        let response = mcp.post().body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let json = json_body(response).await;
        assert_eq!(json["jsonrpc"], "2.0", "{body}: {json}");
        assert_eq!(json["error"]["code"], code, "{body}: {json}");
        assert_eq!(json["id"], Value::Null, "{body}: {json}");
    }

    // Inside a session too.
    mcp.initialize().await;
    let response = mcp.post().body("{").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(response).await["error"]["code"], -32700);
}

#[tokio::test]
async fn wrong_media_types_get_the_statuses_the_spec_names() {
    let server = Server::builder().with_token().start();
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(STATEFUL_VERSION) }).to_string();

    let wrong_content_type = http()
        .post(server.url("/mcp"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "text/plain")
        .header("Accept", "application/json, text/event-stream")
        .body(init.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong_content_type.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    let wrong_accept = http()
        .post(server.url("/mcp"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .header("Accept", "text/html")
        .body(init.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_accept.status(), StatusCode::NOT_ACCEPTABLE);

    let json_only = http()
        .post(server.url("/mcp"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(init)
        .send()
        .await
        .unwrap();
    assert_eq!(json_only.status(), StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let server = Server::builder()
        .with_token()
        .env("MCP_MAX_BODY_BYTES", "2048")
        .start();
    let mut mcp = server.mcp(Some(TOKEN));
    let big = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": STATEFUL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "x".repeat(4096), "version": "0" },
        },
    });
    let response = mcp.post().json(&big).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A body of unknown length (chunked) is cut off at the limit too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .to_string()
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = mcp
        .post()
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Small requests still work, within a session as well.
    mcp.initialize().await;
    let put = mcp
        .send(
            "tools/call",
            json!({ "name": "notes_put", "arguments": { "id": "big", "content": "y".repeat(4096) } }),
        )
        .await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let server = Server::builder()
        .with_token()
        .env("MCP_RATE_LIMIT_RPM", "3")
        .start();
    let mcp = server.mcp(Some(TOKEN));
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(STATEFUL_VERSION) });
    for i in 0..3 {
        let response = mcp.post().json(&init).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
    }
    let limited = mcp.post().json(&init).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let body = json_body(limited).await;
    assert_eq!(body["error"], "rate_limited");

    // The limit is per IP before authentication, so anonymous floods are limited too…
    let anonymous = Mcp::new(server.url("/mcp"), None);
    let flood = anonymous.post().json(&init).send().await.unwrap();
    assert_eq!(flood.status(), StatusCode::TOO_MANY_REQUESTS);
    // …but /health stays reachable.
    let health = http().get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_rate_limit_can_be_disabled() {
    let server = Server::builder()
        .with_token()
        .env("MCP_RATE_LIMIT_RPM", "0")
        .start();
    let mcp = server.mcp(Some(TOKEN));
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(STATEFUL_VERSION) });
    for i in 0..20 {
        let response = mcp.post().json(&init).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = Server::builder().with_token().start();
    let response = http()
        .get(server.url("/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
