//! Printing the effective configuration for `mcpgate config check`.

use toml::{Table, Value};

use super::{Config, LogFormat, Transport, Upstream};

const REDACTED: &str = "<redacted>";

pub fn redacted_toml(config: &Config) -> String {
    let mut t = Table::new();
    let transport = match config.transport {
        Transport::Stdio => "stdio",
        Transport::StreamableHttp => "streamable-http",
        Transport::Sse => "sse",
    };
    t.insert("transport".into(), transport.into());
    t.insert("host".into(), config.host.to_string().into());
    t.insert("port".into(), i64::from(config.port).into());
    t.insert("legacy_sse".into(), config.legacy_sse.into());
    t.insert("log_level".into(), config.log_level.clone().into());
    let format = match config.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    t.insert("log_format".into(), format.into());
    t.insert(
        "rate_limit_rpm".into(),
        i64::from(config.rate_limit_rpm).into(),
    );
    t.insert("allowed_hosts".into(), strings(&config.allowed_hosts));
    t.insert(
        "cors_allowed_origins".into(),
        strings(&config.cors_allowed_origins),
    );
    t.insert(
        "enable_dns_rebinding_protection".into(),
        config.dns_rebinding_protection.into(),
    );
    t.insert(
        "max_body_bytes".into(),
        (config.max_body_bytes as i64).into(),
    );
    t.insert(
        "request_timeout_secs".into(),
        (config.request_timeout.as_secs() as i64).into(),
    );
    t.insert(
        "tool_timeout_secs".into(),
        (config.tool_timeout.as_secs() as i64).into(),
    );
    t.insert(
        "shutdown_grace_secs".into(),
        (config.shutdown_grace.as_secs() as i64).into(),
    );
    t.insert(
        "session_idle_timeout_secs".into(),
        (config.session_idle_timeout.as_secs() as i64).into(),
    );
    t.insert(
        "notes_db".into(),
        config.notes_db.display().to_string().into(),
    );
    t.insert("metrics".into(), config.metrics_enabled.into());
    match &config.upstream {
        Some(Upstream::Command(cmd)) => {
            t.insert("upstream_command".into(), cmd.clone().into());
        }
        Some(Upstream::Url(url)) => {
            t.insert("upstream_url".into(), redact_userinfo(url).into());
        }
        None => {}
    }
    let tokens: Vec<Value> = config
        .tokens
        .iter()
        .map(|token| {
            let mut entry = Table::new();
            entry.insert("name".into(), token.name.clone().into());
            entry.insert("token".into(), REDACTED.into());
            entry.insert("scopes".into(), strings(&token.scopes));
            Value::Table(entry)
        })
        .collect();
    t.insert("tokens".into(), Value::Array(tokens));
    if let Some(oauth) = &config.oauth {
        t.insert("oauth".into(), Value::Table(oauth_table(oauth)));
    }
    t.insert("policy".into(), Value::Table(policy_table(&config.policy)));
    toml::to_string_pretty(&t).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

fn strings(values: &[String]) -> Value {
    Value::Array(values.iter().cloned().map(Value::from).collect())
}

// An upstream URL may carry credentials in its userinfo.
fn redact_userinfo(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username(REDACTED);
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

fn oauth_table(oauth: &super::OAuthConfig) -> Table {
    let mut t = Table::new();
    t.insert("enabled".into(), true.into());
    t.insert(
        "mode".into(),
        format!("{:?}", oauth.mode).to_lowercase().into(),
    );
    t.insert("issuer".into(), oauth.issuer.clone().into());
    t.insert("public_url".into(), oauth.public_url.clone().into());
    if let Some(uri) = &oauth.jwks_uri {
        t.insert("jwks_uri".into(), uri.clone().into());
    }
    t.insert("audiences".into(), strings(&oauth.audiences));
    if let Some(i) = &oauth.introspection {
        t.insert("introspection_url".into(), i.url.clone().into());
        t.insert("introspection_client_id".into(), i.client_id.clone().into());
        t.insert("introspection_client_secret".into(), REDACTED.into());
    }
    t.insert("required_scopes".into(), strings(&oauth.required_scopes));
    t.insert("scopes_supported".into(), strings(&oauth.scopes_supported));
    t.insert("leeway_secs".into(), (oauth.leeway.as_secs() as i64).into());
    t.insert("allow_plain_jwt".into(), oauth.allow_plain_jwt.into());
    t.insert(
        "allow_insecure_http".into(),
        oauth.allow_insecure_http.into(),
    );
    t.insert(
        "scope_errors".into(),
        format!("{:?}", oauth.scope_errors).to_lowercase().into(),
    );
    t.insert(
        "jwks_min_refresh_secs".into(),
        (oauth.jwks_min_refresh.as_secs() as i64).into(),
    );
    t.insert(
        "jwks_max_age_secs".into(),
        (oauth.jwks_max_age.as_secs() as i64).into(),
    );
    t.insert(
        "introspection_cache_secs".into(),
        (oauth.introspection_cache.as_secs() as i64).into(),
    );
    t.insert(
        "introspection_cache_max".into(),
        (oauth.introspection_cache_max as i64).into(),
    );
    t.insert("resource_name".into(), oauth.resource_name.clone().into());
    if let Some(doc) = &oauth.resource_documentation {
        t.insert("resource_documentation".into(), doc.clone().into());
    }
    t.insert("exposed_claims".into(), strings(&oauth.exposed_claims));
    t.insert(
        "require_shared_store".into(),
        oauth.require_shared_store.into(),
    );
    if let Some(b) = &oauth.builtin {
        // The store URL may carry a database password.
        t.insert("store".into(), redact_userinfo(b.store.expose()).into());
        t.insert(
            "access_token_ttl_secs".into(),
            (b.access_token_ttl.as_secs() as i64).into(),
        );
        t.insert(
            "refresh_token_ttl_secs".into(),
            (b.refresh_token_ttl.as_secs() as i64).into(),
        );
        t.insert("code_ttl_secs".into(), (b.code_ttl.as_secs() as i64).into());
        t.insert(
            "refresh_grace_secs".into(),
            (b.refresh_grace.as_secs() as i64).into(),
        );
        t.insert("registration".into(), b.registration.into());
        if b.registration_token.is_some() {
            t.insert("registration_token".into(), REDACTED.into());
        }
        t.insert(
            "redirect_uri_allowlist".into(),
            strings(&b.redirect_uri_allowlist),
        );
        t.insert(
            "client_metadata_documents".into(),
            b.client_metadata_documents.into(),
        );
        t.insert(
            "client_metadata_allow_hosts".into(),
            strings(&b.client_metadata_allow_hosts),
        );
        t.insert(
            "client_metadata_deny_hosts".into(),
            strings(&b.client_metadata_deny_hosts),
        );
        let clients: Vec<Value> = b
            .clients
            .iter()
            .map(|c| {
                let mut e = Table::new();
                e.insert("client_id".into(), c.client_id.clone().into());
                if c.client_secret.is_some() || c.client_secret_env.is_some() {
                    e.insert("client_secret".into(), REDACTED.into());
                }
                e.insert("redirect_uris".into(), strings(&c.redirect_uris));
                Value::Table(e)
            })
            .collect();
        t.insert("clients".into(), Value::Array(clients));
        if let Some(proxy) = &b.proxy {
            t.insert("upstream".into(), Value::Table(upstream_table(proxy)));
        }
    }
    t
}

fn upstream_table(proxy: &super::proxy::ProxyConfig) -> Table {
    let s = &proxy.settings;
    let pairs = |params: &[(String, String)]| {
        let mut t = Table::new();
        for (k, v) in params {
            t.insert(k.clone(), v.clone().into());
        }
        Value::Table(t)
    };
    let mut t = Table::new();
    t.insert("provider".into(), s.provider.name().into());
    t.insert("issuer".into(), s.issuer.clone().into());
    t.insert("client_id".into(), s.client_id.clone().into());
    t.insert("client_secret".into(), REDACTED.into());
    t.insert("scopes".into(), strings(&s.scopes));
    t.insert("authorize_params".into(), pairs(&s.authorize_params));
    t.insert("token_params".into(), pairs(&s.token_params));
    t.insert("callback_url".into(), s.callback_url.clone().into());
    t.insert("allowed_domains".into(), strings(&s.access.allowed_domains));
    t.insert("allowed_users".into(), strings(&s.access.allowed_users));
    t.insert("required_groups".into(), strings(&s.access.required_groups));
    t.insert("groups_claims".into(), strings(&s.group_claims));
    if proxy.token_key.is_some() {
        t.insert("token_key".into(), REDACTED.into());
    }
    t.insert(
        "pass_token_to_gateway".into(),
        proxy.pass_token_to_gateway.into(),
    );
    t
}

fn policy_table(policy: &crate::policy::PolicyConfig) -> Table {
    let rules = |rules: &[crate::policy::Rule]| {
        Value::Array(
            rules
                .iter()
                .map(|r| {
                    let mut e = Table::new();
                    e.insert("match".into(), r.pattern.clone().into());
                    e.insert("scopes".into(), strings(&r.scopes));
                    Value::Table(e)
                })
                .collect(),
        )
    };
    let mut t = Table::new();
    let mut hierarchy = Table::new();
    let mut keys: Vec<_> = policy.hierarchy.keys().collect();
    keys.sort();
    for key in keys {
        hierarchy.insert(key.clone(), strings(&policy.hierarchy[key]));
    }
    t.insert("hierarchy".into(), Value::Table(hierarchy));
    t.insert("tools".into(), rules(&policy.tools));
    t.insert("resources".into(), rules(&policy.resources));
    t.insert("prompts".into(), rules(&policy.prompts));
    t
}
