//! GitHub (plain OAuth 2.0): the identity comes from its REST API, not from an ID token.
//!
//! `GET /user` gives the numeric id (the subject: logins can be renamed) and the login;
//! `GET /user/emails` the primary address and whether GitHub verified it; `GET /user/orgs` the
//! organisations, used as groups (needs the `read:org` scope).

use serde::Deserialize;

use super::exchange::{MAX_RESPONSE_BYTES, read_capped};
use super::{Identity, UpstreamError};

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

async fn get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<T, UpstreamError> {
    let response = http
        .get(url)
        .bearer_auth(token)
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .send()
        .await
        .map_err(|e| UpstreamError::Unavailable(format!("GitHub API: {}", e.without_url())))?;
    let status = response.status();
    if status.is_server_error() {
        return Err(UpstreamError::Unavailable(format!(
            "GitHub API: HTTP {status}"
        )));
    }
    if !status.is_success() {
        return Err(UpstreamError::InvalidIdentity(format!(
            "GitHub API refused the token: HTTP {status}"
        )));
    }
    let body = read_capped(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|m| UpstreamError::Unavailable(format!("GitHub API: {m}")))?;
    serde_json::from_slice(&body)
        .map_err(|e| UpstreamError::InvalidIdentity(format!("GitHub API: unexpected answer: {e}")))
}

/// The signed-in GitHub user. `issuer` is the GitHub web base (`https://github.com`).
pub async fn identity(
    http: &reqwest::Client,
    issuer: &str,
    api: &str,
    token: &str,
    with_orgs: bool,
) -> Result<Identity, UpstreamError> {
    let user: User = get(http, &format!("{api}/user"), token).await?;
    let emails: Vec<Email> = get(http, &format!("{api}/user/emails"), token).await?;
    let primary = emails.into_iter().find(|e| e.primary);
    let groups = if with_orgs {
        let orgs: Vec<Org> = get(http, &format!("{api}/user/orgs?per_page=100"), token).await?;
        orgs.into_iter().map(|o| o.login).collect()
    } else {
        Vec::new()
    };
    Ok(Identity {
        issuer: issuer.to_owned(),
        subject: user.id.to_string(),
        email_verified: primary.as_ref().is_some_and(|e| e.verified),
        email: primary.map(|e| e.email),
        username: Some(user.login),
        name: user.name,
        groups,
    })
}
