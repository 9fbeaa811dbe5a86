//! The command line: `config check`, the stdio transport and graceful shutdown, against the real
//! `mcpgate` binary.

mod common;

use common::{
    LEGACY_VERSION, STATEFUL_VERSION, Server, ServerBuilder, SseStream, StreamEnd, TOKEN, http,
    initialize_params,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `mcpgate config check` with no transport defaults set by the test harness.
fn config_check() -> ServerBuilder {
    ServerBuilder::new()
        .without_env("MCP_TRANSPORT")
        .without_env("MCP_HOST")
        .without_env("MCP_PORT")
        .without_env("MCP_NOTES_DB")
        .without_env("MCP_LOG_LEVEL")
        .arg("config")
        .arg("check")
}

fn parse_toml(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("config check printed no TOML ({e}):\n{text}"))
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_redacted() {
    let output = config_check()
        .env("MCP_AUTH_TOKEN", TOKEN)
        .env("CI_TOKEN_VAR", "ci-secret-from-env-4471")
        .config_file(
            r#"
transport = "streamable-http"
port = 9123
[[tokens]]
name = "ci"
token = "inline-ci-secret-0042"
scopes = ["mcp:tools:read"]
[[tokens]]
name = "bot"
token_env = "CI_TOKEN_VAR"
"#,
        )
        .run();
    assert!(output.status.success(), "{output:?}");
    for secret in [TOKEN, "inline-ci-secret-0042", "ci-secret-from-env-4471"] {
        assert!(
            !output.stdout.contains(secret) && !output.stderr.contains(secret),
            "{secret} printed: {output:?}"
        );
    }
    let config = parse_toml(&output.stdout);
    assert_eq!(config["transport"].as_str(), Some("streamable-http"));
    assert_eq!(config["port"].as_integer(), Some(9123));
    assert_eq!(config["host"].as_str(), Some("127.0.0.1"));
    assert_eq!(config["rate_limit_rpm"].as_integer(), Some(120));
    let tokens = config["tokens"].as_array().unwrap();
    let names: Vec<&str> = tokens.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "ci", "bot"]);
    for token in tokens {
        assert_eq!(token["token"].as_str(), Some("<redacted>"), "{token}");
    }
    assert_eq!(
        tokens[1]["scopes"].as_array().unwrap(),
        &vec![toml::Value::from("mcp:tools:read")]
    );
}

#[test]
fn config_check_redacts_credentials_in_the_upstream_url() {
    let output = config_check()
        .env(
            "MCP_UPSTREAM_URL",
            "https://user:upstream-password-77@upstream.example.com/mcp",
        )
        .run();
    assert!(output.status.success(), "{output:?}");
    assert!(
        !output.stdout.contains("upstream-password-77"),
        "{}",
        output.stdout
    );
    let config = parse_toml(&output.stdout);
    let url = config["upstream_url"].as_str().unwrap();
    assert!(url.contains("upstream.example.com/mcp"), "{url}");
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let output = config_check()
        .env("MCP_PORT", "2222")
        .env("MCP_RATE_LIMIT_RPM", "7")
        .config_file(
            r#"
port = 1111
rate_limit_rpm = 5
log_level = "warn"
allowed_hosts = ["file.example.com"]
"#,
        )
        .arg("--port")
        .arg("3333")
        .run();
    assert!(output.status.success(), "{output:?}");
    let config = parse_toml(&output.stdout);
    assert_eq!(config["port"].as_integer(), Some(3333), "flag beats env");
    assert_eq!(
        config["rate_limit_rpm"].as_integer(),
        Some(7),
        "env beats file"
    );
    assert_eq!(
        config["log_level"].as_str(),
        Some("warn"),
        "file beats default"
    );
    assert_eq!(
        config["allowed_hosts"].as_array().unwrap(),
        &vec![toml::Value::from("file.example.com")]
    );
    assert_eq!(
        config["max_body_bytes"].as_integer(),
        Some(4 * 1024 * 1024),
        "default"
    );
    assert_eq!(config["transport"].as_str(), Some("stdio"), "default");
}

#[test]
fn the_config_flag_names_the_file() {
    let builder = config_check();
    let path = common::write_file(builder.dir(), "other.toml", "port = 4444\n");
    let output = builder.arg("--config").arg(path.to_str().unwrap()).run();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(parse_toml(&output.stdout)["port"].as_integer(), Some(4444));
}

/// The `config error:` lines of stderr; asserts there is nothing else there.
fn error_lines(stderr: &str) -> Vec<&str> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &lines {
        assert!(
            line.starts_with("config error: "),
            "not a config error line: {line:?}\n{stderr}"
        );
    }
    lines
}

#[test]
fn an_unknown_key_in_the_file_is_an_error() {
    let output = config_check()
        .config_file("port = 9000\nmax_body_size = 10\n")
        .run();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(output.stdout, "");
    let lines = error_lines(&output.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("max_body_size"), "{}", lines[0]);
}

#[test]
fn an_unknown_key_in_a_token_is_an_error() {
    let output = config_check()
        .config_file("[[tokens]]\nname = \"ci\"\ntoken = \"t0k3n-value-1\"\nscope = [\"x\"]\n")
        .run();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = error_lines(&output.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("scope"), "{}", lines[0]);
    assert!(
        !output.stderr.contains("t0k3n-value-1"),
        "{}",
        output.stderr
    );
}

#[test]
fn a_bad_value_in_the_file_is_an_error() {
    let output = config_check()
        .config_file("transport = \"carrier-pigeon\"\n")
        .run();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = error_lines(&output.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("carrier-pigeon"), "{}", lines[0]);
}

#[test]
fn every_invalid_setting_gets_its_own_line() {
    let output = config_check()
        .env("MCP_MAX_BODY_BYTES", "10")
        .env("MCP_REQUEST_TIMEOUT_SECS", "0")
        .env("MCP_CORS_ALLOWED_ORIGINS", "not an origin")
        .run();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(output.stdout, "");
    let lines = error_lines(&output.stderr);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("max_body_bytes")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("request_timeout_secs")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("cors_allowed_origins")),
        "{lines:?}"
    );
}

#[test]
fn a_bad_value_in_the_environment_is_a_config_error() {
    let output = config_check().env("MCP_PORT", "not-a-port").run();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(output.stdout, "");
    let lines = error_lines(&output.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("not-a-port"), "{}", lines[0]);
}

#[test]
fn serve_refuses_an_invalid_config_with_exit_2() {
    let output = ServerBuilder::new().env("MCP_MAX_BODY_BYTES", "10").run();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = error_lines(&output.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("max_body_bytes"), "{}", lines[0]);
}

/// Parses a stdout line of the stdio transport, which must be one JSON-RPC message.
fn jsonrpc_line(line: &str) -> Value {
    let message: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stdout carried a non-JSON line ({e}): {line:?}"));
    assert_eq!(message["jsonrpc"], "2.0", "{line}");
    message
}

#[test]
fn stdio_is_the_default_transport_and_needs_no_token() {
    let mut server = ServerBuilder::new()
        .without_env("MCP_TRANSPORT")
        .env("MCP_AUTH_TOKEN", TOKEN)
        .env("MCP_LOG_LEVEL", "debug")
        .spawn_stdio();
    server.send(&json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": initialize_params(STATEFUL_VERSION),
    }));
    let init = jsonrpc_line(&server.next_line().expect("initialize answer"));
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], STATEFUL_VERSION);
    assert_eq!(init["result"]["serverInfo"]["name"], "mcpgate");

    server.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    server.send(&json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "whoami", "arguments": {} },
    }));
    let me = jsonrpc_line(&server.next_line().expect("whoami answer"));
    assert_eq!(me["id"], 2);
    let me = &me["result"]["structuredContent"];
    assert_eq!(me["transport"], "stdio");
    assert_eq!(me["principal"], "anonymous");
    assert_eq!(me["protocol_version"], STATEFUL_VERSION);

    server.send(&json!({
        "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": { "name": "notes_put", "arguments": { "id": "n1", "content": "from stdio" } },
    }));
    let put = jsonrpc_line(&server.next_line().expect("notes_put answer"));
    assert_eq!(put["id"], 3);
    assert_eq!(put["result"]["structuredContent"]["id"], "n1");

    // End of input ends the session and the process, cleanly.
    server.close_stdin();
    let status = server
        .wait_exit()
        .expect("mcpgate did not exit after stdin closed");
    assert!(status.success(), "{status}");
    // Nothing but JSON-RPC ever went to stdout; the logs went to stderr.
    for line in server.stdout.text().lines() {
        jsonrpc_line(line);
    }
    assert!(
        !server.stderr.text().is_empty(),
        "debug logging wrote nothing to stderr"
    );
    assert!(!server.stdout.text().contains("listening"));
}

#[test]
fn stdio_answers_an_unknown_tool_with_an_error() {
    let mut server = ServerBuilder::new()
        .without_env("MCP_TRANSPORT")
        .spawn_stdio();
    server.send(&json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": initialize_params(STATEFUL_VERSION),
    }));
    let init = jsonrpc_line(&server.next_line().expect("initialize answer"));
    assert_eq!(init["id"], 1);
    server.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    server.send(&json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "no_such_tool", "arguments": {} },
    }));
    let unknown = jsonrpc_line(&server.next_line().expect("unknown tool answer"));
    assert_eq!(unknown["id"], 2);
    assert!(unknown["error"].is_object(), "{unknown}");
    server.close_stdin();
    let status = server.wait_exit().expect("mcpgate did not exit");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn sigterm_closes_streams_and_exits_cleanly() {
    let mut server = Server::builder()
        .with_token()
        .env("MCP_SHUTDOWN_GRACE_SECS", "10")
        .start();
    // An open legacy stream with an initialized session…
    let response = http()
        .get(server.url("/sse"))
        .bearer_auth(TOKEN)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut sse = SseStream::new(response);
    let endpoint = sse.expect_event().await;
    assert_eq!(endpoint.event.as_deref(), Some("endpoint"));
    let init = http()
        .post(server.url(&endpoint.data))
        .bearer_auth(TOKEN)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize_params(LEGACY_VERSION) }))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), StatusCode::ACCEPTED);
    sse.expect_response(1).await;
    // …and an open Streamable HTTP session stream.
    let mut mcp = server.mcp(Some(TOKEN));
    mcp.initialize().await;
    let get = http()
        .get(server.url("/mcp"))
        .bearer_auth(TOKEN)
        .header("Accept", "text/event-stream")
        .header("Mcp-Session-Id", mcp.session.clone().unwrap())
        .header("MCP-Protocol-Version", STATEFUL_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let mut standalone = SseStream::new(get);

    server.terminate();

    assert_eq!(sse.drain().await, StreamEnd::Closed, "legacy SSE stream");
    assert_eq!(
        standalone.drain().await,
        StreamEnd::Closed,
        "Streamable HTTP stream"
    );
    let status = server.wait_exit().unwrap_or_else(|| {
        panic!(
            "mcpgate did not exit after SIGTERM:\n{}",
            server.stderr.text()
        )
    });
    assert!(status.success(), "{status}\n{}", server.stderr.text());
}

#[tokio::test]
async fn sigterm_with_no_clients_exits_cleanly() {
    let mut server = Server::builder().with_token().start();
    let health = http().get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.terminate();
    let status = server
        .wait_exit()
        .unwrap_or_else(|| panic!("mcpgate did not exit after SIGTERM"));
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_banner_says_how_to_connect_without_the_secret() {
    let server = Server::builder().with_token().start();
    assert!(
        server
            .stdout
            .wait_for(|out| out.contains("Connect:") && out.contains("claude mcp add")),
        "{}",
        server.stdout.text()
    );
    let out = server.stdout.text();
    assert!(out.contains(&server.url("/mcp")), "{out}");
    assert!(out.contains(&server.url("/sse")), "{out}");
    assert!(!out.contains(TOKEN), "{out}");
}

#[tokio::test]
async fn generate_token_prints_a_working_token_once() {
    let server = Server::builder()
        .arg("serve")
        .arg("--generate-token")
        .start();
    assert!(
        server.stdout.wait_for(|out| out.contains("Token ")),
        "{}",
        server.stdout.text()
    );
    let out = server.stdout.text();
    let token = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Token"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token in the banner:\n{out}"))
        .to_owned();
    let mut mcp = server.mcp(Some(&token));
    mcp.initialize().await;
    let refused = server.mcp(None);
    let exchange = refused
        .send("initialize", initialize_params(STATEFUL_VERSION))
        .await;
    assert_eq!(exchange.status, StatusCode::UNAUTHORIZED);
    assert!(
        !server.stderr.text().contains(&token),
        "the generated token reached the logs"
    );
}
