//! Operations: health and readiness, metrics, the audit log and rate limits.

pub mod audit;
pub mod health;
pub mod metrics;
pub mod rate_limit;
