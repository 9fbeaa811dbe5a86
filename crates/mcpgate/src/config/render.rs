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
