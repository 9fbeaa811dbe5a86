//! Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3,
//! RFC 7523 §2.2 / OIDC Core §9 `private_key_jwt`), and the form bodies those endpoints read.
//!
//! A client authenticates with exactly the method it registered:
//! - `none`: a public client names itself with `client_id` in the body;
//! - `client_secret_basic`: `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`;
//! - `client_secret_post`: `client_id` and `client_secret` in the body;
//! - `private_key_jwt`: `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//!   and a `client_assertion` signed by a key of the client's `jwks_uri`.
//!
//! Every failure is `invalid_client` (401, with a `Basic` challenge when the client used the
//! Authorization header); presenting several methods at once is `invalid_request`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::AuthServer;
use super::cimd::{FetchGuard, check_addresses};
use super::clients::{AuthMethod, ClientKind, ResolvedClient, resolve};
use super::error::OAuthError;
use super::secrets;
use crate::resource::claims::now_secs;
use crate::resource::jwks::{JwksCache, JwksSettings};
use crate::store::ClientSource;

/// The only `client_assertion_type` accepted (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Largest form body the OAuth endpoints read.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// A parsed `application/x-www-form-urlencoded` body.
///
/// Parameters sent without a value count as omitted (RFC 6749 §3.1); a parameter may appear only
/// once, except `resource` (RFC 8707 allows several; callers decide what to do with them).
#[derive(Debug, Clone, Default)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Checks the content type and parses the body; `invalid_request` on anything else.
    pub fn from_request(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the request body must be application/x-www-form-urlencoded",
            ));
        }
        if body.len() > MAX_FORM_BYTES {
            return Err(OAuthError::invalid_request("the request body is too large"));
        }
        if std::str::from_utf8(body).is_err() {
            return Err(OAuthError::invalid_request("the request body is not UTF-8"));
        }
        Self::parse(body)
    }

    /// Parses a form body (no content-type check).
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &pairs {
            if name != "resource" && !seen.insert(name.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "the parameter {name} is repeated"
                )));
            }
        }
        Ok(Self { pairs })
    }

    /// The value of a (non-repeatable) parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The one `resource` parameter, if any; several are `invalid_target` (one audience per token).
    pub fn resource(&self) -> Result<Option<&str>, OAuthError> {
        let mut values = self
            .pairs
            .iter()
            .filter(|(k, _)| k == "resource")
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(OAuthError::invalid_target(
                "only one resource may be requested per token",
            ));
        }
        Ok(first)
    }
}

/// Credentials found in the request, before looking the client up.
enum Presented {
    None {
        client_id: String,
    },
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: String,
        secret: String,
    },
    Assertion {
        client_id: Option<String>,
        assertion: String,
    },
}

/// Authenticates the client of a token, revocation or introspection request.
pub async fn authenticate_client(
    server: &AuthServer,
    headers: &HeaderMap,
    form: &Form,
) -> Result<ResolvedClient, OAuthError> {
    let used_header = basic_header(headers).is_some();
    let challenge = |e: OAuthError| {
        if used_header && e.code == super::error::ErrorCode::InvalidClient {
            e.with_basic_challenge()
        } else {
            e
        }
    };
    let presented = presented(headers, form).map_err(challenge)?;
    authenticate(server, presented).await.map_err(challenge)
}

fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    let basic = match basic_header(headers) {
        Some(encoded) => Some(decode_basic(encoded)?),
        None => None,
    };
    let body_id = form.get("client_id");
    let post_secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    let methods = usize::from(basic.is_some())
        + usize::from(post_secret.is_some())
        + usize::from(assertion.is_some() || assertion_type.is_some());
    if methods > 1 {
        return Err(OAuthError::invalid_request(
            "the client used more than one authentication method",
        ));
    }
    if let Some((client_id, secret)) = basic {
        if body_id.is_some_and(|id| id != client_id) {
            return Err(OAuthError::invalid_request(
                "client_id in the body differs from the one in the Authorization header",
            ));
        }
        return Ok(Presented::Basic { client_id, secret });
    }
    if let Some(secret) = post_secret {
        let client_id = body_id.ok_or_else(|| {
            OAuthError::invalid_client("client_secret was sent without client_id")
        })?;
        return Ok(Presented::Post {
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
        });
    }
    if assertion.is_some() || assertion_type.is_some() {
        let (Some(assertion), Some(kind)) = (assertion, assertion_type) else {
            return Err(OAuthError::invalid_request(
                "client_assertion and client_assertion_type go together",
            ));
        };
        if kind != JWT_BEARER_ASSERTION {
            return Err(OAuthError::invalid_client(
                "unsupported client_assertion_type",
            ));
        }
        return Ok(Presented::Assertion {
            client_id: body_id.map(str::to_owned),
            assertion: assertion.to_owned(),
        });
    }
    match body_id {
        Some(client_id) => Ok(Presented::None {
            client_id: client_id.to_owned(),
        }),
        None => Err(OAuthError::invalid_client(
            "client authentication is required",
        )),
    }
}

/// The credentials of an `Authorization: Basic` header, if that is the scheme used.
fn basic_header(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
}

/// RFC 6749 §2.3.1: base64 of `urlencode(client_id) ":" urlencode(secret)`.
fn decode_basic(encoded: &str) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed Basic credentials");
    let raw = STANDARD.decode(encoded).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let id = form_decode(id);
    let secret = form_decode(secret);
    if id.is_empty() || secret.is_empty() {
        return Err(bad());
    }
    Ok((id, secret))
}

/// `application/x-www-form-urlencoded` decoding of one component; the raw text when it is not
/// validly encoded (clients that skip the encoding step, with ids that need none).
fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    // `from_str_radix` alone would take `%+f` for `%0f`.
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => return value.to_owned(),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

async fn authenticate(
    server: &AuthServer,
    presented: Presented,
) -> Result<ResolvedClient, OAuthError> {
    let (client_id, method) = match &presented {
        Presented::None { client_id } => (client_id.clone(), AuthMethod::None),
        Presented::Basic { client_id, .. } => (client_id.clone(), AuthMethod::ClientSecretBasic),
        Presented::Post { client_id, .. } => (client_id.clone(), AuthMethod::ClientSecretPost),
        Presented::Assertion {
            client_id,
            assertion,
        } => {
            let from_token = unverified_subject(assertion)?;
            if client_id.as_ref().is_some_and(|id| *id != from_token) {
                return Err(OAuthError::invalid_client(
                    "the client assertion is not about this client_id",
                ));
            }
            (from_token, AuthMethod::PrivateKeyJwt)
        }
    };
    let client = resolve(server, &client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    if client.auth_method != method {
        return Err(OAuthError::invalid_client(format!(
            "this client must authenticate with {}",
            client.auth_method.as_str()
        )));
    }
    match presented {
        Presented::None { .. } => Ok(client),
        Presented::Basic { secret, .. } | Presented::Post { secret, .. } => {
            let matches = client
                .secret_hash
                .as_deref()
                .is_some_and(|stored| secrets::equal(&secrets::hash(&secret), stored));
            if matches {
                Ok(client)
            } else {
                Err(OAuthError::invalid_client("client authentication failed"))
            }
        }
        Presented::Assertion { assertion, .. } => {
            verify_assertion(server, &client, &assertion).await?;
            Ok(client)
        }
    }
}

// ---- private_key_jwt ----

/// Longest lifetime accepted for a client assertion (its `exp` from now).
const MAX_ASSERTION_LIFETIME_SECS: i64 = 5 * 60;
const ASSERTION_LEEWAY_SECS: u64 = 30;
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CACHED_JWKS: usize = 1024;
const MAX_REMEMBERED_JTIS: usize = 100_000;

static ALLOW_LOOPBACK_JWKS: AtomicBool = AtomicBool::new(false);

/// Accept `http://` `jwks_uri`s on loopback hosts (integration tests only: they cannot get a
/// publicly trusted certificate). Off by default; no configuration reaches it.
pub fn allow_loopback_jwks_uri(allow: bool) {
    ALLOW_LOOPBACK_JWKS.store(allow, Ordering::Relaxed);
}

/// Client key sets by `jwks_uri`, and the assertion ids already used (single use, RFC 7523 §3).
#[derive(Default)]
struct AssertionState {
    jwks: Mutex<HashMap<String, Arc<JwksCache>>>,
    /// `client_id \0 jti` → the assertion's `exp`.
    seen: Mutex<HashMap<String, i64>>,
}

fn state() -> &'static AssertionState {
    static STATE: OnceLock<AssertionState> = OnceLock::new();
    STATE.get_or_init(AssertionState::default)
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    sub: Option<String>,
    iss: Option<String>,
    exp: i64,
    iat: Option<i64>,
    jti: Option<String>,
}

/// The `sub` (or `iss`) of an assertion, read before verification to find the client.
fn unverified_subject(assertion: &str) -> Result<String, OAuthError> {
    #[derive(Deserialize)]
    struct Names {
        sub: Option<String>,
        iss: Option<String>,
    }
    let names: Names = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| OAuthError::invalid_client("the client assertion is malformed"))?;
    names
        .sub
        .or(names.iss)
        .ok_or_else(|| OAuthError::invalid_client("the client assertion names no client"))
}

/// A key-set cache for `uri`, whose HTTP client may reach only the addresses checked here.
///
/// A `jwks_uri` is chosen by the client (in its registration or metadata document), so fetching
/// it is fenced like a metadata-document fetch: `https` only, every resolved address public
/// (unless an administrator registered the client), the connection pinned to those addresses, no
/// redirects, no proxy, short timeouts.
async fn jwks_for(client: &ResolvedClient, uri: &str) -> Result<Arc<JwksCache>, OAuthError> {
    let refuse = |why: &str| {
        tracing::warn!(client_id = %client.client_id, jwks_uri = %uri, reason = why, "client jwks_uri refused");
        OAuthError::invalid_client("the client's jwks_uri cannot be used")
    };
    let trusted = client.kind == ClientKind::Registered(ClientSource::Admin);
    let loopback = ALLOW_LOOPBACK_JWKS.load(Ordering::Relaxed);
    let key = format!("{}{}{uri}", u8::from(trusted), u8::from(loopback));
    if let Some(cache) = state()
        .jwks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return Ok(cache.clone());
    }

    let url = url::Url::parse(uri).map_err(|_| refuse("not a URL"))?;
    let plain_http_ok = loopback && super::clients::is_loopback_redirect(&url);
    if !(url.scheme() == "https" || plain_http_ok)
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(refuse("not an https URL"));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let host = url.host_str().ok_or_else(|| refuse("no host"))?.to_owned();
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        _ => tokio::time::timeout(
            JWKS_FETCH_TIMEOUT,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| refuse("resolving timed out"))?
        .map_err(|_| refuse("the host does not resolve"))?
        .collect(),
    };
    if addrs.is_empty() {
        return Err(refuse("the host does not resolve"));
    }
    if !trusted {
        let guard = FetchGuard {
            allow_loopback: plain_http_ok,
        };
        let ips: Vec<_> = addrs.iter().map(SocketAddr::ip).collect();
        check_addresses(&ips, guard).map_err(|why| refuse(&why))?;
    }
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(!plain_http_ok)
        .connect_timeout(JWKS_FETCH_TIMEOUT)
        .timeout(JWKS_FETCH_TIMEOUT)
        .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")));
    if let Some(url::Host::Domain(domain)) = url.host() {
        builder = builder.resolve_to_addrs(domain, &addrs);
    }
    let http = builder
        .build()
        .map_err(|_| refuse("cannot build an HTTP client"))?;
    let settings = JwksSettings {
        min_refresh_interval: Duration::from_secs(30),
        refresh_after: Duration::from_secs(5 * 60),
        max_age: Duration::from_secs(3600),
        ..JwksSettings::default()
    };
    let cache = Arc::new(JwksCache::new(uri, http, settings));
    let mut caches = state()
        .jwks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if caches.len() >= MAX_CACHED_JWKS {
        caches.clear();
    }
    Ok(caches.entry(key).or_insert(cache).clone())
}

async fn verify_assertion(
    server: &AuthServer,
    client: &ResolvedClient,
    assertion: &str,
) -> Result<(), OAuthError> {
    let failed = || OAuthError::invalid_client("the client assertion could not be verified");
    let uri = client
        .jwks_uri
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_client("the client has no jwks_uri"))?;
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| failed())?;
    if matches!(
        header.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(failed());
    }
    let cache = jwks_for(client, uri).await?;
    let keys = tokio::time::timeout(JWKS_FETCH_TIMEOUT, cache.keys_for(header.kid.as_deref()))
        .await
        .map_err(|_| OAuthError::invalid_client("the client's JWKS could not be fetched"))?
        .map_err(|e| {
            tracing::debug!(client_id = %client.client_id, error = %e, "client JWKS unusable");
            failed()
        })?;
    let audiences = [
        server.config.issuer.clone(),
        server.config.endpoint("/token"),
        server.config.endpoint("/revoke"),
        server.config.endpoint("/introspect"),
    ];
    let mut claims = None;
    for key in keys.iter().filter(|k| k.algorithms.contains(&header.alg)) {
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        validation.leeway = ASSERTION_LEEWAY_SECS;
        validation.set_audience(&audiences);
        validation.set_issuer(&[&client.client_id]);
        validation.sub = Some(client.client_id.clone());
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.validate_nbf = true;
        if let Ok(data) = jsonwebtoken::decode::<AssertionClaims>(assertion, &key.key, &validation)
        {
            claims = Some(data.claims);
            break;
        }
    }
    let claims = claims.ok_or_else(failed)?;
    let now = now_secs();
    let leeway = ASSERTION_LEEWAY_SECS as i64;
    if claims.iss.as_deref() != Some(client.client_id.as_str())
        || claims.sub.as_deref() != Some(client.client_id.as_str())
    {
        return Err(failed());
    }
    if claims.exp > now + MAX_ASSERTION_LIFETIME_SECS + leeway {
        return Err(OAuthError::invalid_client(
            "the client assertion lives too long",
        ));
    }
    if claims.iat.is_some_and(|iat| iat > now + leeway) {
        return Err(failed());
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| OAuthError::invalid_client("the client assertion has no jti"))?;
    remember_jti(&client.client_id, &jti, claims.exp + leeway, now)
}

/// Records an assertion id; a second use before it expires is refused.
fn remember_jti(client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<(), OAuthError> {
    let mut seen = state()
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = format!("{client_id}\0{jti}");
    if seen.get(&key).is_some_and(|&exp| exp > now) {
        return Err(OAuthError::invalid_client(
            "the client assertion was already used",
        ));
    }
    if seen.len() >= MAX_REMEMBERED_JTIS {
        seen.retain(|_, &mut exp| exp > now);
        if seen.len() >= MAX_REMEMBERED_JTIS {
            return Err(OAuthError::unavailable(
                "too many client assertions in flight",
            ));
        }
    }
    seen.insert(key, expires_at);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let encoded = STANDARD.encode("my%20client:s%3Acret+x");
        assert_eq!(
            decode_basic(&encoded).unwrap(),
            ("my client".to_owned(), "s:cret x".to_owned())
        );
        // Not validly encoded: taken as is.
        let encoded = STANDARD.encode("id:100%");
        assert_eq!(
            decode_basic(&encoded).unwrap(),
            ("id".to_owned(), "100%".to_owned())
        );
        // Only two hex digits make an escape: `u8::from_str_radix` also takes a sign (`%+5`).
        let encoded = STANDARD.encode("id:50%+5");
        assert_eq!(
            decode_basic(&encoded).unwrap(),
            ("id".to_owned(), "50%+5".to_owned())
        );
        assert!(decode_basic("!!!").is_err());
        assert!(decode_basic(&STANDARD.encode("no-colon")).is_err());
        assert!(decode_basic(&STANDARD.encode(":secret")).is_err());
    }

    #[test]
    fn forms_refuse_repeats_except_resource() {
        let form = Form::parse(b"a=1&b=&resource=x&resource=y").unwrap();
        assert_eq!(form.get("a"), Some("1"));
        assert_eq!(form.get("b"), None);
        assert!(form.resource().is_err());
        assert!(Form::parse(b"a=1&a=2").is_err());
        assert!(Form::parse(b"a=1&a=").is_ok());
    }

    #[test]
    fn content_type_must_be_a_form() {
        let mut headers = HeaderMap::new();
        assert!(Form::from_request(&headers, b"a=1").is_err());
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(Form::from_request(&headers, b"a=1").is_err());
        headers.insert(
            header::CONTENT_TYPE,
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        assert!(Form::from_request(&headers, b"a=1").is_ok());
    }

    fn client(kind: ClientKind, jwks_uri: &str) -> ResolvedClient {
        ResolvedClient::from_metadata(
            "c",
            &serde_json::json!({
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": jwks_uri,
            }),
            None,
            kind,
        )
    }

    #[tokio::test]
    async fn jwks_uris_of_untrusted_clients_must_be_public_https() {
        let dynamic = ClientKind::Registered(ClientSource::Dynamic);
        for uri in [
            "https://127.0.0.1/jwks",
            "https://[::1]/jwks",
            "https://10.1.2.3/jwks",
            "https://169.254.169.254/jwks",
            "http://8.8.8.8/jwks",
            "https://user:pw@8.8.8.8/jwks",
            "file:///etc/passwd",
        ] {
            assert!(jwks_for(&client(dynamic, uri), uri).await.is_err(), "{uri}");
            let cimd = client(ClientKind::MetadataDocument, uri);
            assert!(jwks_for(&cimd, uri).await.is_err(), "{uri}");
        }
        // Building the cache fetches nothing; a public address is accepted.
        let uri = "https://8.8.8.8/jwks";
        assert!(jwks_for(&client(dynamic, uri), uri).await.is_ok());
        // An administrator may point at an internal key server (still https).
        let admin = ClientKind::Registered(ClientSource::Admin);
        let uri = "https://10.1.2.3/jwks";
        assert!(jwks_for(&client(admin, uri), uri).await.is_ok());
        let uri = "http://10.1.2.3/jwks";
        assert!(jwks_for(&client(admin, uri), uri).await.is_err());
    }

    #[test]
    fn jti_single_use() {
        let now = 1_000;
        remember_jti("c-test", "j1", now + 60, now).unwrap();
        assert!(remember_jti("c-test", "j1", now + 60, now).is_err());
        assert!(remember_jti("c-other", "j1", now + 60, now).is_ok());
        // Expired entries no longer block.
        assert!(remember_jti("c-test", "j1", now + 200, now + 100).is_ok());
    }
}
