//! `/health` (alive: status, version, uptime) and `/ready` (the store and upstream answer).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::backend::Backend;

#[derive(Clone)]
pub struct HealthState {
    pub started: Instant,
    pub backend: Arc<dyn Backend>,
    /// The built-in authorization server's store, when there is one.
    pub oauth_store: Option<Arc<dyn mcpgate_auth::store::Store>>,
}

pub async fn health(State(state): State<HealthState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

pub async fn ready(State(state): State<HealthState>) -> Response {
    let store = match &state.oauth_store {
        Some(store) => store
            .ping()
            .await
            .map_err(|e| format!("the OAuth store is unavailable: {e}")),
        None => Ok(()),
    };
    let readiness = match store {
        Ok(()) => state.backend.readiness().await,
        Err(e) => Err(e),
    };
    match readiness {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            // Load balancers and clients retrying on their own get a hint when to come back.
            [(http::header::RETRY_AFTER, "5")],
            Json(serde_json::json!({ "status": "not_ready", "reason": reason })),
        )
            .into_response(),
    }
}
