//! Space-separated OAuth scope sets (RFC 6749 §3.3).

use std::collections::BTreeSet;
use std::fmt;

/// An ordered, de-duplicated set of scope tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<String>);

impl ScopeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the `scope` wire form: tokens separated by one or more spaces.
    pub fn parse(value: &str) -> Self {
        value
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn insert(&mut self, scope: impl Into<String>) {
        self.0.insert(scope.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn is_superset_of(&self, other: &ScopeSet) -> bool {
        self.0.is_superset(&other.0)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
            first = false;
        }
        Ok(())
    }
}

impl<S: Into<String>> FromIterator<S> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_wire_form() {
        let set = ScopeSet::parse("  b a  a c ");
        assert_eq!(set.len(), 3);
        assert_eq!(set.to_string(), "a b c");
        assert!(set.contains("b"));
        assert!(!set.contains(""));
    }

    #[test]
    fn superset_is_set_inclusion() {
        let wide = ScopeSet::parse("a b c");
        let narrow = ScopeSet::parse("a c");
        assert!(wide.is_superset_of(&narrow));
        assert!(!narrow.is_superset_of(&wide));
    }
}
