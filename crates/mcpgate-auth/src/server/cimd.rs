//! Client ID metadata documents (being written).

use super::AuthServer;
use super::error::OAuthError;

/// Fetches and validates the metadata document at `url` (an `https` client id).
pub async fn fetch_document(
    _server: &AuthServer,
    url: &str,
) -> Result<serde_json::Value, OAuthError> {
    Err(OAuthError::invalid_client(format!(
        "client metadata documents are not supported yet ({url})"
    )))
}
