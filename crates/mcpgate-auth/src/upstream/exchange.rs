//! Calls to the upstream's token endpoint: code exchange (with the PKCE verifier) and refresh.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::UpstreamError;
use super::provider::{ClientAuth, Endpoints};

/// Largest token-endpoint or user-API response accepted.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A token response (RFC 6749 §5.1; GitHub answers errors with 200 and an `error` member).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TokenResponse {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    pub expires_in: Option<i64>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The upstream client's credentials.
pub struct ClientCredentials<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
}

/// Reads a body up to `max` bytes; a longer body is an error, not a truncation.
pub async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("the response is larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("the response is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// RFC 6749 §2.3.1: the credentials are form-urlencoded before they are put in Basic.
fn basic_credentials(client: &ClientCredentials<'_>) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!(
        "{}:{}",
        encode(client.client_id),
        encode(client.client_secret)
    );
    format!("Basic {}", STANDARD.encode(pair))
}

/// POSTs a grant to the token endpoint and returns the tokens, or why there are none.
pub async fn token_request(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    client: &ClientCredentials<'_>,
    grant: &[(&str, &str)],
    extra: &[(String, String)],
) -> Result<TokenResponse, UpstreamError> {
    let mut form: Vec<(&str, &str)> = grant.to_vec();
    form.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut request = http
        .post(&endpoints.token_endpoint)
        .header(reqwest::header::ACCEPT, "application/json");
    match endpoints.client_auth {
        ClientAuth::Basic => {
            request = request.header(reqwest::header::AUTHORIZATION, basic_credentials(client));
        }
        ClientAuth::Post => {
            form.push(("client_id", client.client_id));
            form.push(("client_secret", client.client_secret));
        }
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = request
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| UpstreamError::Unavailable(format!("token endpoint: {}", e.without_url())))?;
    let status = response.status();
    let bytes = read_capped(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|m| UpstreamError::Unavailable(format!("token endpoint: {m}")))?;
    let parsed: Result<TokenResponse, _> = serde_json::from_slice(&bytes);
    match parsed {
        Ok(tokens) if tokens.error.is_some() || !status.is_success() => {
            Err(UpstreamError::Refused(format!(
                "{}{}",
                tokens.error.as_deref().unwrap_or("error"),
                tokens
                    .error_description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )))
        }
        Ok(tokens) if tokens.access_token.as_deref().is_none_or(str::is_empty) => Err(
            UpstreamError::Refused("the token response has no access_token".into()),
        ),
        Ok(tokens) => Ok(tokens),
        Err(_) if status.is_server_error() => Err(UpstreamError::Unavailable(format!(
            "token endpoint: HTTP {status}"
        ))),
        Err(_) => Err(UpstreamError::Refused(format!(
            "token endpoint: HTTP {status} without a JSON token response"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        let header = basic_credentials(&ClientCredentials {
            client_id: "a:b",
            client_secret: "p@ss word",
        });
        let decoded = STANDARD
            .decode(header.trim_start_matches("Basic "))
            .expect("base64");
        assert_eq!(decoded, b"a%3Ab:p%40ss+word");
    }
}
