//! (being written)

use std::sync::Arc;

use axum::Router;

use super::AuthServer;

pub fn router() -> Router<Arc<AuthServer>> {
    Router::new()
}
