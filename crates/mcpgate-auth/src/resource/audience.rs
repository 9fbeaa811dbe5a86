//! Which `aud` values name this server: its canonical resource URLs (RFC 8707), compared after
//! normalisation, and configured identifiers for IdPs that cannot mint URL audiences.

/// The canonical form of a resource URL: lowercase scheme and host, no default port, no fragment,
/// no trailing slash (`https://Host:443/mcp/` → `https://host/mcp`). `None` if not an http(s) URL.
pub fn normalise_resource(value: &str) -> Option<String> {
    let mut url = url::Url::parse(value).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    let mut out = url.to_string();
    // `Url` always renders an empty path as "/": an origin-only resource has no trailing slash.
    if path.is_empty() && url.query().is_none() && out.ends_with('/') {
        out.pop();
    }
    Some(out)
}

/// The audiences a token may carry to be accepted here.
#[derive(Debug, Clone, Default)]
pub struct AudiencePolicy {
    /// Normalised canonical resource URLs (`…/mcp`, `…/sse`).
    resources: Vec<String>,
    /// Opaque identifiers compared byte for byte (`api://…`, GUIDs, Auth0 API identifiers).
    identifiers: Vec<String>,
}

impl AudiencePolicy {
    pub fn new(
        resources: impl IntoIterator<Item = String>,
        identifiers: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            resources: resources
                .into_iter()
                .filter_map(|r| normalise_resource(&r))
                .collect(),
            identifiers: identifiers.into_iter().collect(),
        }
    }

    pub fn accepts(&self, audience: &str) -> bool {
        if self.identifiers.iter().any(|id| id == audience) {
            return true;
        }
        normalise_resource(audience).is_some_and(|n| self.resources.contains(&n))
    }

    /// True when any of the token's audiences is ours.
    pub fn accepts_any<'a>(&self, audiences: impl IntoIterator<Item = &'a str>) -> bool {
        audiences.into_iter().any(|a| self.accepts(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_folds_case_default_port_and_trailing_slash() {
        assert_eq!(
            normalise_resource("HTTPS://MCP.Example.com:443/mcp/").as_deref(),
            Some("https://mcp.example.com/mcp")
        );
        assert_eq!(
            normalise_resource("http://127.0.0.1:80/mcp").as_deref(),
            Some("http://127.0.0.1/mcp")
        );
        assert_eq!(
            normalise_resource("http://127.0.0.1:8080/mcp#x").as_deref(),
            Some("http://127.0.0.1:8080/mcp")
        );
        assert_eq!(
            normalise_resource("https://h/").as_deref(),
            Some("https://h")
        );
        assert_eq!(
            normalise_resource("https://h").as_deref(),
            Some("https://h")
        );
        assert_eq!(normalise_resource("api://guid"), None);
        assert_eq!(normalise_resource("not a url"), None);
    }

    #[test]
    fn path_case_and_other_resources_still_differ() {
        let p = AudiencePolicy::new(["https://h/mcp".to_owned()], []);
        assert!(p.accepts("https://H/mcp/"));
        assert!(!p.accepts("https://h/MCP"));
        assert!(!p.accepts("https://h/other"));
        assert!(!p.accepts("https://h"));
        assert!(!p.accepts("https://h:8443/mcp"));
        assert!(!p.accepts("https://h.evil/mcp"));
    }

    #[test]
    fn identifiers_match_exactly() {
        let p = AudiencePolicy::new([], ["api://1234".to_owned()]);
        assert!(p.accepts("api://1234"));
        assert!(!p.accepts("API://1234"));
        assert!(p.accepts_any(["x", "api://1234"]));
        assert!(!p.accepts_any(Vec::<&str>::new()));
    }
}
