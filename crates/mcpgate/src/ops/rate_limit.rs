//! Requests per minute per client IP (before authentication) and per principal (after).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, StatusCode, header};
use mcpgate_auth::periodic::spawn_every;
use mcpgate_auth::{Principal, PrincipalKey};
use tokio_util::sync::CancellationToken;

pub struct RateLimits {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_principal: DefaultKeyedRateLimiter<PrincipalKey>,
}

impl RateLimits {
    /// `None` when `rpm` is 0 (rate limiting disabled).
    pub fn new(rpm: u32) -> Option<Arc<Self>> {
        let quota = Quota::per_minute(NonZeroU32::new(rpm)?);
        Some(Arc::new(Self {
            by_ip: RateLimiter::keyed(quota),
            by_principal: RateLimiter::keyed(quota),
        }))
    }

    /// Whether the TCP peer's address is over its quota (checked before authentication).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), RateLimited> {
        check(&self.by_ip, &ip).map_err(RateLimited)
    }

    /// Whether the authenticated principal is over its quota.
    pub fn check_principal(&self, principal: &Principal) -> Result<(), RateLimited> {
        check(&self.by_principal, &principal.key()).map_err(RateLimited)
    }

    /// Forgets idle keys now and then, so the maps stay as small as the set of active callers.
    pub fn spawn_housekeeping(self: &Arc<Self>, shutdown: CancellationToken) {
        spawn_every(
            self,
            Duration::from_secs(60),
            shutdown,
            |limits: Arc<Self>| async move {
                limits.by_ip.retain_recent();
                limits.by_principal.retain_recent();
                limits.by_ip.shrink_to_fit();
                limits.by_principal.shrink_to_fit();
            },
        );
    }
}

/// `Err(wait)` when the key is over its quota.
fn check<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), Duration> {
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// Over the quota: answered 429 with the wait in `Retry-After`.
#[derive(Debug)]
pub struct RateLimited(Duration);

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        too_many_requests(self.0)
    }
}

fn too_many_requests(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    metrics::counter!("mcpgate_rate_limited_total").increment(1);
    let body = serde_json::json!({
        "error": "rate_limited",
        "error_description": format!("too many requests; retry in {seconds} s"),
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_quota_with_a_retry_after() {
        let limits = RateLimits::new(2).unwrap();
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(check(&limits.by_ip, &ip).is_ok());
        assert!(check(&limits.by_ip, &ip).is_ok());
        let refused = too_many_requests(check(&limits.by_ip, &ip).unwrap_err());
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry), "{retry}");
        let other: IpAddr = [127, 0, 0, 2].into();
        assert!(check(&limits.by_ip, &other).is_ok(), "keys are independent");
    }

    #[test]
    fn zero_disables() {
        assert!(RateLimits::new(0).is_none());
    }
}
