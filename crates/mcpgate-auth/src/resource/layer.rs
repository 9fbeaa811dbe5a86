//! The axum middleware that authenticates every request to a protected route.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::bearer::{self, BearerError};
use super::challenge::{Challenge, ChallengeError};
use super::token_cache::token_key;
use super::verifier::{VerifierChain, VerifyError};
use crate::Principal;

/// What happened to one request's credentials. Carries no secret.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    Accepted(Arc<Principal>),
    Missing,
    Malformed(BearerError),
    Rejected(String),
    Unavailable(String),
}

impl AuthOutcome {
    /// A stable label for metrics and audit records.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Accepted(_) => "accepted",
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::Rejected(_) => "rejected",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// One authentication decision, as reported to an [`AuthObserver`].
#[derive(Debug, Clone)]
pub struct AuthEvent<'a> {
    pub outcome: &'a AuthOutcome,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub peer: Option<SocketAddr>,
}

/// Receives every authentication decision (for audit logs and metrics).
pub trait AuthObserver: Send + Sync {
    fn on_auth(&self, event: &AuthEvent<'_>);
}

/// Everything the middleware needs: the verifier chain and how to word challenges.
pub struct Authenticator {
    chain: VerifierChain,
    realm: Option<String>,
    /// `(path prefix, metadata URL)`: the protected-resource metadata each endpoint points at.
    resource_metadata: Vec<(String, String)>,
    /// The scopes a client should ask for when it has no (valid) token.
    scope: Option<String>,
    observer: Option<Arc<dyn AuthObserver>>,
}

impl Authenticator {
    pub fn new(chain: VerifierChain) -> Self {
        Self {
            chain,
            realm: None,
            resource_metadata: Vec::new(),
            scope: None,
            observer: None,
        }
    }

    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// Challenges for requests under `path_prefix` carry `resource_metadata="<url>"`.
    pub fn with_resource_metadata(
        mut self,
        path_prefix: impl Into<String>,
        url: impl Into<String>,
    ) -> Self {
        self.resource_metadata
            .push((path_prefix.into(), url.into()));
        self
    }

    /// 401 challenges carry `scope="<scope>"`, the scopes needed for basic use.
    pub fn with_challenge_scope(mut self, scope: impl Into<String>) -> Self {
        let scope = scope.into();
        self.scope = (!scope.is_empty()).then_some(scope);
        self
    }

    pub fn with_observer(mut self, observer: Arc<dyn AuthObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Authenticates the request's credentials without touching the body.
    pub async fn authenticate(&self, parts: &http::request::Parts) -> AuthOutcome {
        let presented = match bearer::extract_unchecked(&parts.headers, parts.uri.query()) {
            Ok(presented) => presented,
            Err(BearerError::Missing) => return AuthOutcome::Missing,
            Err(e) => return AuthOutcome::Malformed(e),
        };
        // A token seen before is recognised by its digest alone: its syntax was checked when it
        // was verified, and scanning a kilobyte of JWT again on every request cost more than the
        // rest of a cache hit. (Only verified tokens are remembered, so a token that does not
        // parse can never be recalled: it goes on to be refused below.)
        if self.chain.recalls()
            && let Some(recalled) = self.chain.recall(&token_key(presented))
        {
            return outcome_of(recalled);
        }
        match bearer::validate(presented) {
            Ok(token) => outcome_of(self.chain.verify(token).await),
            Err(e) => AuthOutcome::Malformed(e),
        }
    }

    /// The challenge for a request to `path`, before any error is filled in.
    pub fn challenge_for(&self, path: &str) -> Challenge {
        Challenge {
            realm: self.realm.clone(),
            resource_metadata: self
                .resource_metadata
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, url)| url.clone()),
            scope: self.scope.clone(),
            ..Default::default()
        }
    }

    /// The response refusing a request that was not accepted.
    pub fn refusal(&self, path: &str, outcome: &AuthOutcome) -> Response {
        let mut challenge = self.challenge_for(path);
        match outcome {
            AuthOutcome::Accepted(_) => {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            AuthOutcome::Missing => {
                challenge.description =
                    Some("no bearer token: send Authorization: Bearer <token>".into());
            }
            AuthOutcome::Malformed(BearerError::InQuery) => {
                challenge.error = Some(ChallengeError::InvalidRequest);
                challenge.description = Some(BearerError::InQuery.to_string());
            }
            AuthOutcome::Malformed(e) => {
                challenge.error = Some(ChallengeError::InvalidRequest);
                challenge.description = Some(e.to_string());
                return challenge.into_response_with(StatusCode::UNAUTHORIZED);
            }
            AuthOutcome::Rejected(reason) => {
                challenge.error = Some(ChallengeError::InvalidToken);
                challenge.description = Some(reason.clone());
            }
            AuthOutcome::Unavailable(reason) => {
                let body = serde_json::json!({
                    "error": "temporarily_unavailable",
                    "error_description": reason,
                });
                let mut response =
                    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return response;
            }
        }
        challenge.into_response()
    }

    /// Tells the observer (audit log, metrics) about an authentication decision.
    pub fn report(&self, outcome: &AuthOutcome, parts: &http::request::Parts) {
        if let Some(observer) = &self.observer {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            observer.on_auth(&AuthEvent {
                outcome,
                method: &parts.method,
                path: parts.uri.path(),
                peer,
            });
        }
    }
}

fn outcome_of(verified: Result<Arc<Principal>, VerifyError>) -> AuthOutcome {
    match verified {
        Ok(principal) => AuthOutcome::Accepted(principal),
        Err(VerifyError::Invalid(reason)) => AuthOutcome::Rejected(reason),
        Err(VerifyError::Unavailable(reason)) => AuthOutcome::Unavailable(reason),
    }
}

/// Middleware: refuses unauthenticated requests with a challenge, or inserts `Arc<Principal>`
/// into the request extensions for the handlers below.
pub async fn require_bearer(
    State(auth): State<Arc<Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let outcome = auth.authenticate(&parts).await;
    auth.report(&outcome, &parts);
    match outcome {
        AuthOutcome::Accepted(principal) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, body)).await
        }
        other => {
            let response = auth.refusal(parts.uri.path(), &other);
            refuse_unread(body, response).await
        }
    }
}

/// Largest unread request body drained so a refused client can reuse its connection.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends a refusal for a request whose body was not read. hyper closes a keep-alive connection
/// whose request body is left unread, silently, and clients that reuse it (httpx) then fail: so
/// small bodies are read and dropped first, and `Connection: close` announces the close otherwise.
pub async fn refuse_unread(body: axum::body::Body, mut response: Response) -> Response {
    let drained =
        tokio::time::timeout(DRAIN_TIMEOUT, axum::body::to_bytes(body, DRAIN_LIMIT)).await;
    if !matches!(drained, Ok(Ok(_))) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
