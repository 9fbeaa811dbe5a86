use std::ffi::OsString;

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ConfigArgs,
}

fn args(flags: &[&str]) -> ConfigArgs {
    let argv: Vec<OsString> = std::iter::once("mcpgate")
        .chain(flags.iter().copied())
        .map(Into::into)
        .collect();
    Cli::try_parse_from(argv).expect("flags parse").args
}

#[test]
fn defaults_match_the_old_server() {
    let config = Config::resolve(&ConfigArgs::default(), FileConfig::default()).unwrap();
    assert_eq!(config.transport, Transport::Stdio);
    assert_eq!(config.host.to_string(), "127.0.0.1");
    assert_eq!(config.port, 8080);
    assert_eq!(config.rate_limit_rpm, 120);
    assert!(config.legacy_sse);
    assert!(config.dns_rebinding_protection);
    assert!(!config.auth_required());
}

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let file = FileConfig::parse("port = 9000\nhost = \"0.0.0.0\"\nrate_limit_rpm = 5\n").unwrap();
    let config = Config::resolve(&args(&["--port", "9100"]), file).unwrap();
    assert_eq!(config.port, 9100);
    assert_eq!(config.host.to_string(), "0.0.0.0");
    assert_eq!(config.rate_limit_rpm, 5);
}

#[test]
fn unknown_keys_are_errors_with_a_line_number() {
    let err = FileConfig::parse("port = 1\nprot = 2\n").unwrap_err();
    assert_eq!(err.key, "line 2");
    assert!(
        err.message.contains("unknown field `prot`"),
        "{}",
        err.message
    );
}

#[test]
fn named_tokens_carry_scopes_and_never_print_their_secret() {
    let file = FileConfig::parse(
        "auth_token = \"main-secret\"\n[[tokens]]\nname = \"ci\"\ntoken = \"ci-secret\"\nscopes = [\"mcp:tools:read\"]\n",
    )
    .unwrap();
    let config = Config::resolve(&ConfigArgs::default(), file).unwrap();
    let names: Vec<_> = config.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["default", "ci"]);
    assert_eq!(config.tokens[1].scopes, ["mcp:tools:read"]);
    let rendered = config.render_redacted();
    assert!(
        !rendered.contains("main-secret") && !rendered.contains("ci-secret"),
        "{rendered}"
    );
    assert!(rendered.contains("<redacted>"));
    assert!(!format!("{config:?}").contains("ci-secret"));
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let file = FileConfig::parse(
        "upstream_command = \"x\"\nupstream_url = \"ftp://y\"\nmax_body_bytes = 10\nlog_level = \"[[\"\n\
         [[tokens]]\nname = \"a\"\n",
    )
    .unwrap();
    let errors = Config::resolve(&ConfigArgs::default(), file).unwrap_err();
    let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"upstream_command"), "{keys:?}");
    assert!(keys.contains(&"max_body_bytes"), "{keys:?}");
    assert!(keys.contains(&"log_level"), "{keys:?}");
    assert!(keys.contains(&"tokens[0]"), "{keys:?}");
}

#[test]
fn lists_from_flags_are_comma_separated() {
    let config = Config::resolve(
        &args(&[
            "--allowed-hosts",
            "mcp.example.com,localhost",
            "--cors-allowed-origins",
            "https://a.example",
        ]),
        FileConfig::default(),
    )
    .unwrap();
    assert_eq!(config.allowed_hosts, ["mcp.example.com", "localhost"]);
    assert_eq!(config.cors_allowed_origins, ["https://a.example"]);
}

#[test]
fn malformed_origins_are_refused() {
    let errors = Config::resolve(
        &args(&["--cors-allowed-origins", "not a url"]),
        FileConfig::default(),
    )
    .unwrap_err();
    assert_eq!(errors[0].key, "cors_allowed_origins");
}

#[test]
fn upstream_url_userinfo_is_redacted() {
    let config = Config::resolve(
        &args(&["--upstream-url", "https://u:p@up.example/mcp"]),
        FileConfig::default(),
    )
    .unwrap();
    let rendered = config.render_redacted();
    assert!(!rendered.contains("u:p@"), "{rendered}");
}

#[test]
fn oauth_settings_render_without_the_client_secret() {
    let file = FileConfig::parse(
        "[oauth]\nenabled = true\nissuer = \"https://as.example\"\npublic_url = \"https://mcp.example/\"\n\
         introspection_url = \"https://as.example/introspect\"\nintrospection_client_id = \"rs\"\n\
         introspection_client_secret = \"hunter2\"\n[[policy.tools]]\nmatch = \"notes_*\"\nscopes = [\"notes\"]\n",
    )
    .unwrap();
    let config = Config::resolve(&ConfigArgs::default(), file).unwrap();
    let oauth = config.oauth.as_ref().unwrap();
    assert_eq!(oauth.mcp_resource(), "https://mcp.example/mcp");
    assert_eq!(oauth.scopes_supported, ["mcp:tools:read"]);
    let rendered = config.render_redacted();
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(rendered.contains("notes_*"), "{rendered}");
    assert!(
        rendered.contains("https://as.example/introspect"),
        "{rendered}"
    );
}

#[test]
fn proxy_mode_needs_its_upstream_and_no_issuer_of_its_own() {
    let file = FileConfig::parse(
        "[oauth]\nenabled = true\nmode = \"proxy\"\nissuer = \"http://as.example\"\npublic_url = \"https://mcp.example\"\n",
    )
    .unwrap();
    let errors = Config::resolve(&ConfigArgs::default(), file).unwrap_err();
    let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"oauth.issuer"), "{keys:?}");
    assert!(keys.contains(&"oauth.upstream.provider"), "{keys:?}");
}

#[test]
fn builtin_mode_is_its_own_issuer_at_the_public_url() {
    let file = FileConfig::parse(
        "port = 9000\n[oauth]\nenabled = true\n\
         [[oauth.clients]]\nclient_id = \"ci-bot\"\nclient_secret = \"s3cret\"\n",
    )
    .unwrap();
    let config = Config::resolve(&ConfigArgs::default(), file).unwrap();
    let oauth = config.oauth.as_ref().unwrap();
    assert_eq!(oauth.mode, OAuthMode::Builtin);
    assert_eq!(oauth.public_url, "http://127.0.0.1:9000");
    assert_eq!(oauth.issuer, oauth.public_url);
    let builtin = oauth.builtin.as_ref().unwrap();
    assert_eq!(builtin.refresh_grace.as_secs(), 5);
    assert_eq!(builtin.access_token_ttl.as_secs(), 3600);
    assert_eq!(builtin.clients[0].client_id, "ci-bot");
    assert!(builtin.registration && builtin.client_metadata_documents);
    let rendered = config.render_redacted();
    assert!(
        rendered.contains("ci-bot") && !rendered.contains("s3cret"),
        "{rendered}"
    );
}

#[test]
fn a_postgres_store_password_is_redacted() {
    let file = FileConfig::parse(
        "[oauth]\nenabled = true\nstore = \"postgres://app:hunter2@db.internal/mcpgate\"\n",
    )
    .unwrap();
    let rendered = Config::resolve(&ConfigArgs::default(), file)
        .unwrap()
        .render_redacted();
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(rendered.contains("db.internal"), "{rendered}");
}

#[test]
fn builtin_mode_refuses_long_grace_and_needs_a_public_url_off_loopback() {
    let file =
        FileConfig::parse("host = \"0.0.0.0\"\n[oauth]\nenabled = true\nrefresh_grace_secs = 60\n")
            .unwrap();
    let errors = Config::resolve(&ConfigArgs::default(), file).unwrap_err();
    let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"oauth.refresh_grace_secs"), "{keys:?}");
    assert!(keys.contains(&"oauth.public_url"), "{keys:?}");
}

#[test]
fn require_shared_store_accepts_only_postgres() {
    let resolve = |oauth: &str| {
        let file = FileConfig::parse(&format!(
            "port = 9000\n[oauth]\nenabled = true\nrequire_shared_store = true\n{oauth}"
        ))
        .unwrap();
        Config::resolve(&ConfigArgs::default(), file)
    };
    let config = resolve("store = \"postgres://app@db.internal/mcpgate\"\n").unwrap();
    assert!(config.oauth.as_ref().unwrap().require_shared_store);
    assert!(
        config
            .render_redacted()
            .contains("require_shared_store = true")
    );
    for refused in [
        "",
        "store = \"sqlite://oauth.db\"\n",
        "issuer = \"https://as.example\"\npublic_url = \"https://mcp.example\"\n",
    ] {
        let errors = resolve(refused).unwrap_err();
        let keys: Vec<_> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["oauth.require_shared_store"], "{refused}");
    }
    let flag = args(&["--oauth-require-shared-store", "true"]);
    let file = FileConfig::parse("port = 9000\n[oauth]\nenabled = true\n").unwrap();
    assert!(Config::resolve(&flag, file).is_err());
}

#[test]
fn proxy_mode_resolves_an_authorization_server_with_an_upstream() {
    let file = FileConfig::parse(
        "[oauth]\nenabled = true\nmode = \"proxy\"\npublic_url = \"https://mcp.example\"\n\
         [oauth.upstream]\nprovider = \"keycloak\"\nissuer = \"https://kc.example/realms/acme\"\n\
         client_id = \"mcpgate\"\nclient_secret = \"kc-secret\"\nallowed_domains = [\"acme.example\"]\n",
    )
    .unwrap();
    let config = Config::resolve(&ConfigArgs::default(), file).unwrap();
    let oauth = config.oauth.as_ref().unwrap();
    assert_eq!(oauth.mode, OAuthMode::Proxy);
    assert_eq!(oauth.issuer, "https://mcp.example");
    let proxy = oauth.builtin.as_ref().unwrap().proxy.as_ref().unwrap();
    assert_eq!(proxy.settings.issuer, "https://kc.example/realms/acme");
    assert_eq!(
        proxy.settings.group_claims,
        ["groups", "realm_access.roles"]
    );
    assert_eq!(proxy.settings.access.allowed_domains, ["acme.example"]);
    let rendered = config.render_redacted();
    assert!(!rendered.contains("kc-secret"), "{rendered}");
    assert!(
        rendered.contains("https://kc.example/realms/acme"),
        "{rendered}"
    );
}

#[test]
fn an_upstream_outside_proxy_mode_is_refused() {
    let file = FileConfig::parse(
        "[oauth]\nenabled = true\npublic_url = \"http://127.0.0.1:8080\"\n[oauth.upstream]\nprovider = \"google\"\n",
    )
    .unwrap();
    let errors = Config::resolve(&ConfigArgs::default(), file).unwrap_err();
    assert!(
        errors.iter().any(|e| e.key == "oauth.upstream"),
        "{errors:?}"
    );
}
